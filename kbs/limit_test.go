package kbs

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestPeerLimiter(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := NewPeerLimiter(2, 3) // 2/s, bursts of 3
	var got []bool
	for range 4 {
		got = append(got, l.Allow("10.0.0.1", t0))
	}
	got = append(got, l.Allow("10.0.0.2", t0))                           // another peer has its own bucket
	got = append(got, l.Allow("10.0.0.1", t0.Add(500*time.Millisecond))) // one token back
	got = append(got, l.Allow("10.0.0.1", t0.Add(500*time.Millisecond)))
	got = append(got, l.Allow("10.0.0.1", t0.Add(time.Hour))) // idle peers are forgotten and start full
	want := []bool{true, true, true, false, true, true, false, true}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Allow sequence (-want +got):\n%s", diff)
	}
	if n := len(l.peers); n != 1 {
		t.Errorf("%d peers remembered after an hour idle, want 1 (the one just seen)", n)
	}
}

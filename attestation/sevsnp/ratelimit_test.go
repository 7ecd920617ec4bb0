package sevsnp

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/greatjail/cvm/attestation"
)

// TestCacheUpstreamInterval: a flood of misses (reports naming unknown
// chips) reaches the upstream at most once per interval; the rest fail at
// once with ErrMissing instead of queueing behind KDS.
func TestCacheUpstreamInterval(t *testing.T) {
	var calls atomic.Int32
	up := fetchFunc(func(context.Context, string) ([]byte, error) {
		calls.Add(1)
		return nil, errors.New("404")
	})
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := &Cache{Dir: t.TempDir(), Upstream: up, Now: func() time.Time { return now }, UpstreamInterval: 10 * time.Second}
	url := func(i int) string {
		hw := make([]byte, 64)
		hw[0] = byte(i)
		return vcekURL("Milan", hw, 0x4405000000000002)
	}
	for i := range 20 {
		if _, err := c.Fetch(context.Background(), url(i)); !errors.Is(err, attestation.ErrMissing) {
			t.Fatalf("Fetch %d = %v, want ErrMissing", i, err)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("upstream asked %d times in one interval, want 1", n)
	}
	now = now.Add(11 * time.Second)
	c.Fetch(context.Background(), url(99))
	if n := calls.Load(); n != 2 {
		t.Errorf("upstream asked %d times after the interval, want 2", n)
	}
}

// TestCacheWaitRespectsContext: a caller waiting for the upstream slot
// gives up when its context ends.
func TestCacheWaitRespectsContext(t *testing.T) {
	block := make(chan struct{})
	up := fetchFunc(func(ctx context.Context, _ string) ([]byte, error) {
		<-block
		return nil, errors.New("late")
	})
	c := &Cache{Dir: t.TempDir(), Upstream: up}
	hw := make([]byte, 64)
	go c.Fetch(context.Background(), vcekURL("Milan", hw, 0x4405000000000002))
	time.Sleep(50 * time.Millisecond) // let the first fetch take the slot
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	hw[0] = 1
	_, err := c.Fetch(ctx, vcekURL("Milan", hw, 0x4405000000000002))
	close(block)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Fetch while the slot is held = %v, want DeadlineExceeded", err)
	}
}

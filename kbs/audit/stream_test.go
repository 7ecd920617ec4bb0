package audit

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/greatjail/cvm/kbs/store"
	"github.com/greatjail/cvm/kbs/store/storetest"
)

// recvTimeout bounds every wait for a subscription, so a bug fails the test
// instead of hanging it.
const recvTimeout = 10 * time.Second

// receive reads n records from ch.
func receive(t *testing.T, ch <-chan Record, n int) []Record {
	t.Helper()
	var out []Record
	timeout := time.After(recvTimeout)
	for len(out) < n {
		select {
		case r, ok := <-ch:
			if !ok {
				t.Fatalf("channel closed after %d of %d records", len(out), n)
			}
			out = append(out, r)
		case <-timeout:
			t.Fatalf("received %d of %d records in %v", len(out), n, recvTimeout)
		}
	}
	return out
}

// waitClosed fails t unless ch is closed (after any buffered records).
func waitClosed(t *testing.T, ch <-chan Record) {
	t.Helper()
	timeout := time.After(recvTimeout)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-timeout:
			t.Fatalf("channel not closed within %v", recvTimeout)
		}
	}
}

func seqsOf(recs []Record) []uint64 {
	var out []uint64
	for _, r := range recs {
		out = append(out, r.Seq)
	}
	return out
}

func seqRange(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

// TestSubscribeConcurrentAppends: existing records from fromSeq, then the
// records appended concurrently, each once, in order, equal to the stored
// ones; cancelling ctx closes the channel.
func TestSubscribeConcurrentAppends(t *testing.T) {
	const existing, workers, each = 10, 4, 50
	const total = existing + workers*each
	l, _ := newLog(t)
	fill(t, l, existing)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := l.Subscribe(ctx, 4)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				if _, err := l.Append(context.Background(), sample(w*each+i)); err != nil {
					t.Errorf("Append() = %v", err)
					return
				}
			}
		})
	}
	got := receive(t, ch, total-3)
	wg.Wait()

	if diff := cmp.Diff(seqRange(4, total), seqsOf(got)); diff != "" {
		t.Errorf("received seqs (-want +got):\n%s", diff)
	}
	var stored []Record
	for from := uint64(4); from <= total; from += MaxRange {
		page, err := l.Range(context.Background(), from, MaxRange)
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, page...)
	}
	if diff := cmp.Diff(stored, got); diff != "" {
		t.Errorf("received records differ from the stored ones (-stored +received):\n%s", diff)
	}

	cancel()
	waitClosed(t, ch)
}

// TestSubscribeSlowReader: a reader that does not read while many records
// are appended neither blocks Append nor loses records.
func TestSubscribeSlowReader(t *testing.T) {
	const n = 5*SubscribeBuffer + 3
	l, _ := newLog(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := l.Subscribe(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	fill(t, l, n) // returns although nobody reads ch
	got := receive(t, ch, n)
	if diff := cmp.Diff(seqRange(1, n), seqsOf(got)); diff != "" {
		t.Errorf("received seqs (-want +got):\n%s", diff)
	}
}

// TestSubscribeAhead: subscribing from a Seq not yet written waits for it
// and delivers nothing before it.
func TestSubscribeAhead(t *testing.T) {
	l, _ := newLog(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := l.Subscribe(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	fill(t, l, 5)
	if diff := cmp.Diff([]uint64{3, 4, 5}, seqsOf(receive(t, ch, 3))); diff != "" {
		t.Errorf("received seqs (-want +got):\n%s", diff)
	}
}

// TestSubscribeNotify: a record appended with AppendTx reaches a waiting
// subscriber once the caller calls Notify.
func TestSubscribeNotify(t *testing.T) {
	l, s := newLog(t)
	fill(t, l, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := l.Subscribe(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	receive(t, ch, 1)
	err = s.Update(context.Background(), func(tx store.Tx) error {
		_, err := AppendTx(tx, t0, sample(1))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	l.Notify()
	if got := receive(t, ch, 1); got[0].Seq != 2 {
		t.Errorf("received seq %d, want 2", got[0].Seq)
	}
}

func TestSubscribeFailsOnClosedStore(t *testing.T) {
	s := storetest.NewMemory()
	l := New(s, newClock().now)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Subscribe(context.Background(), 0); err == nil {
		t.Errorf("Subscribe() on a closed store = nil error, want one")
	}
}

func TestStreamEnds(t *testing.T) {
	errStop := errors.New("stop")
	tests := []struct {
		name   string
		attack func(t *testing.T, s store.Store)
		fn     func(Record) error
		want   error
	}{
		{
			name: "fn error",
			fn: func(r Record) error {
				if r.Seq == 2 {
					return errStop
				}
				return nil
			},
			want: errStop,
		},
		{
			name:   "missing record",
			attack: func(t *testing.T, s store.Store) { rawDelete(t, s, bucketRecords, recordKey(2)) },
			fn:     func(Record) error { return nil },
			want:   ErrTampered,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, s := newLog(t)
			fill(t, l, 3)
			if tt.attack != nil {
				tt.attack(t, s)
			}
			err := l.Stream(context.Background(), 1, tt.fn)
			if !errors.Is(err, tt.want) {
				t.Errorf("Stream() = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestStreamCancelWhileWaiting(t *testing.T) {
	l, _ := newLog(t)
	fill(t, l, 2)
	ctx, cancel := context.WithCancel(context.Background())
	var got []uint64
	done := make(chan error, 1)
	go func() {
		done <- l.Stream(ctx, 1, func(r Record) error {
			got = append(got, r.Seq)
			if r.Seq == 2 {
				cancel() // caught up; Stream is about to wait
			}
			return nil
		})
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Stream() = %v, want context.Canceled", err)
		}
	case <-time.After(recvTimeout):
		t.Fatal("Stream did not return after cancel")
	}
	if diff := cmp.Diff([]uint64{1, 2}, got); diff != "" {
		t.Errorf("streamed seqs (-want +got):\n%s", diff)
	}
}

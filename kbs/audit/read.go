package audit

import (
	"context"
	"errors"
	"fmt"

	"github.com/greatjail/cvm/kbs/store"
)

// Range returns up to limit records from fromSeq on, in ascending order,
// read in one transaction. fromSeq 0 means 1. At most MaxRange records are
// returned; limit <= 0 returns none. To page, call again from the last
// Seq + 1. Range reads records by key up to the head; it checks that each
// is well formed and under its own key, not the hashes (that is Verify's
// job). A missing or misplaced record is a *VerifyError wrapping
// ErrTampered.
func (l *Log) Range(ctx context.Context, fromSeq uint64, limit int) ([]Record, error) {
	fromSeq = max(fromSeq, 1)
	if limit <= 0 {
		return nil, nil
	}
	limit = min(limit, MaxRange)
	var out []Record
	err := l.s.View(ctx, func(tx store.Tx) error {
		h, _, err := readHead(tx)
		if err != nil {
			return err
		}
		if fromSeq > h.Seq {
			return nil
		}
		to := h.Seq
		if h.Seq-fromSeq >= uint64(limit) {
			to = fromSeq + uint64(limit) - 1
		}
		out, err = readRecords(tx, fromSeq, to)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("audit: range: %w", err)
	}
	return out, nil
}

// Tail returns the last n records (at most MaxRange), in ascending order.
// n <= 0 returns none.
func (l *Log) Tail(ctx context.Context, n int) ([]Record, error) {
	if n <= 0 {
		return nil, nil
	}
	n = min(n, MaxRange)
	var out []Record
	err := l.s.View(ctx, func(tx store.Tx) error {
		h, _, err := readHead(tx)
		if err != nil {
			return err
		}
		if h.Seq == 0 {
			return nil
		}
		from := h.Seq - min(uint64(n), h.Seq) + 1
		out, err = readRecords(tx, from, h.Seq)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("audit: tail: %w", err)
	}
	return out, nil
}

// readRecords reads records from..to, which must all exist.
func readRecords(tx store.Tx, from, to uint64) ([]Record, error) {
	out := make([]Record, 0, to-from+1)
	for seq := from; seq <= to; seq++ {
		b, err := tx.Get(bucketRecords, recordKey(seq))
		if errors.Is(err, store.ErrNotFound) {
			return nil, &VerifyError{Seq: seq, Problem: ProblemGap, Detail: "record missing below the head"}
		}
		if err != nil {
			return nil, err
		}
		r, err := decodeRecord(b)
		if err != nil {
			return nil, &VerifyError{Seq: seq, Problem: ProblemMalformed, Detail: err.Error()}
		}
		if r.Seq != seq {
			return nil, &VerifyError{Seq: seq, Problem: ProblemKey, Detail: fmt.Sprintf("record %d under key %q", r.Seq, recordKey(seq))}
		}
		out = append(out, r)
	}
	return out, nil
}

// Stream calls fn with each record from fromSeq on (0 means 1), in order,
// and then with each new record as it is appended, until ctx ends (it
// returns ctx.Err()), fn returns an error (it returns that error) or reading
// fails (a store error, or a *VerifyError wrapping ErrTampered for a missing
// or malformed record). fn sees every Seq exactly once, ascending, without
// gaps; a slow fn delays only its own stream. Stream reads at most MaxRange
// records at a time and waits for Append or Notify when it has caught up.
func (l *Log) Stream(ctx context.Context, fromSeq uint64, fn func(Record) error) error {
	next := max(fromSeq, 1)
	for {
		// Take the wake-up channel before reading, so an append that
		// commits after the read wakes us.
		wake := l.waiter()
		recs, err := l.Range(ctx, next, MaxRange)
		if err != nil {
			return err
		}
		for _, r := range recs {
			if r.Seq != next { // Range guarantees this; keep the promise local.
				return fmt.Errorf("audit: stream: %w", &VerifyError{Seq: next, Problem: ProblemGap, Detail: fmt.Sprintf("got record %d", r.Seq)})
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := fn(r); err != nil {
				return err
			}
			next++
		}
		if len(recs) == MaxRange {
			continue // more may be waiting
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wake:
		}
	}
}

// SubscribeBuffer is the capacity of the channel Subscribe returns.
const SubscribeBuffer = 64

// Subscribe returns a channel that receives the records from fromSeq on
// (0 means 1), then new ones as they are appended, with the guarantees of
// Stream: in order, no gaps, no duplicates; a slow reader falls behind and
// loses nothing. A goroutine owned by the subscription feeds the channel;
// it closes the channel and exits when ctx ends or reading fails (use
// Stream to learn why). A reader that stops reading must cancel ctx to
// release that goroutine. Subscribe fails at once if the log cannot be read.
func (l *Log) Subscribe(ctx context.Context, fromSeq uint64) (<-chan Record, error) {
	err := l.s.View(ctx, func(tx store.Tx) error {
		_, _, err := readHead(tx)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("audit: subscribe: %w", err)
	}
	ch := make(chan Record, SubscribeBuffer)
	go func() {
		defer close(ch)
		_ = l.Stream(ctx, fromSeq, func(r Record) error {
			select {
			case ch <- r:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	return ch, nil
}

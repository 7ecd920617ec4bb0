package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/greatjail/cvm/kbs/store"
)

// checkVerifyError fails t unless err is a *VerifyError wrapping ErrTampered
// equal to want (Detail aside), or nil when want is nil.
func checkVerifyError(t *testing.T, what string, err error, want *VerifyError) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Errorf("%s = %v, want a valid chain", what, err)
		}
		return
	}
	var ve *VerifyError
	if !errors.As(err, &ve) || !errors.Is(err, ErrTampered) {
		t.Fatalf("%s = %v, want a *VerifyError wrapping ErrTampered", what, err)
	}
	if diff := cmp.Diff(want, ve, cmpopts.IgnoreFields(VerifyError{}, "Detail")); diff != "" {
		t.Errorf("%s error (-want +got):\n%s", what, diff)
	}
	if ve.Detail == "" {
		t.Errorf("%s error has no detail for the operator", what)
	}
}

// TestVerifyAttacks tampers with a log of five records the way someone with
// write access to the store could, and checks that Verify names the attack,
// and where it happened. For the two attacks a hash chain alone cannot see,
// it checks that VerifyAgainst the head taken before the attack does.
func TestVerifyAttacks(t *testing.T) {
	type attack func(t *testing.T, s store.Store, recs []Record)
	// renumber stores old records recs[from:] one Seq lower, each rehashed
	// but keeping its Prev, and points the head at the last.
	renumber := func(t *testing.T, s store.Store, recs []Record, from int) {
		for i := from; i < len(recs); i++ {
			rawDelete(t, s, bucketRecords, recordKey(recs[i].Seq))
		}
		var last Record
		for i := from; i < len(recs); i++ {
			r := recs[i]
			r.Seq--
			last = putRecord(t, s, recordKey(r.Seq), r, true)
		}
		setHead(t, s, last.Seq, last.Hash)
	}
	// rewriteFrom rewrites the chain from record seq on consistently, with
	// a different actor in seq, and updates the head.
	rewriteFrom := func(t *testing.T, s store.Store, recs []Record, seq uint64) {
		prev := recs[seq-2].Hash
		for i := int(seq - 1); i < len(recs); i++ {
			r := recs[i]
			if r.Seq == seq {
				r.Actor = "mallory"
			}
			r.Prev = prev
			prev = putRecord(t, s, recordKey(r.Seq), r, true).Hash
		}
		setHead(t, s, uint64(len(recs)), prev)
	}
	editStored := func(seq uint64, edit func([]byte) []byte) attack {
		return func(t *testing.T, s store.Store, recs []Record) {
			key := recordKey(seq)
			rawPut(t, s, bucketRecords, key, edit(rawGet(t, s, bucketRecords, key)))
		}
	}

	tests := []struct {
		name   string
		attack attack
		// want is Verify's error, nil for a chain that still verifies.
		want *VerifyError
		// wantAnchor is VerifyAgainst(head before the attack)'s error
		// when want is nil; otherwise it is want too.
		wantAnchor *VerifyError
	}{
		{
			name: "field of record 3 edited",
			attack: func(t *testing.T, s store.Store, recs []Record) {
				r := recs[2]
				r.Actor = "mallory"
				putRecord(t, s, recordKey(3), r, false)
			},
			want: &VerifyError{Seq: 3, Problem: ProblemHash},
		},
		{
			name: "outcome of record 3 edited",
			attack: func(t *testing.T, s store.Store, recs []Record) {
				r := recs[2]
				r.Outcome = OutcomeDenied
				putRecord(t, s, recordKey(3), r, false)
			},
			want: &VerifyError{Seq: 3, Problem: ProblemHash},
		},
		{
			name: "record 3 edited and rehashed",
			attack: func(t *testing.T, s store.Store, recs []Record) {
				r := recs[2]
				r.Actor = "mallory"
				putRecord(t, s, recordKey(3), r, true)
			},
			want: &VerifyError{Seq: 4, Problem: ProblemLink},
		},
		{
			name: "last record edited and rehashed",
			attack: func(t *testing.T, s store.Store, recs []Record) {
				r := recs[4]
				r.Actor = "mallory"
				putRecord(t, s, recordKey(5), r, true)
			},
			want: &VerifyError{Seq: 5, Problem: ProblemHead},
		},
		{
			name: "last record edited, rehashed, head rewritten",
			attack: func(t *testing.T, s store.Store, recs []Record) {
				r := recs[4]
				r.Actor = "mallory"
				r = putRecord(t, s, recordKey(5), r, true)
				setHead(t, s, 5, r.Hash)
			},
			wantAnchor: &VerifyError{Problem: ProblemAnchor},
		},
		{
			name:   "record 3 removed",
			attack: func(t *testing.T, s store.Store, recs []Record) { rawDelete(t, s, bucketRecords, recordKey(3)) },
			want:   &VerifyError{Seq: 3, Problem: ProblemGap},
		},
		{
			name:   "record 1 removed",
			attack: func(t *testing.T, s store.Store, recs []Record) { rawDelete(t, s, bucketRecords, recordKey(1)) },
			want:   &VerifyError{Seq: 1, Problem: ProblemGap},
		},
		{
			name:   "record 3 removed, later ones renumbered and rehashed",
			attack: func(t *testing.T, s store.Store, recs []Record) { renumber(t, s, recs, 3) },
			want:   &VerifyError{Seq: 3, Problem: ProblemLink},
		},
		{
			name: "records 2 and 3 swapped",
			attack: func(t *testing.T, s store.Store, recs []Record) {
				b2, b3 := rawGet(t, s, bucketRecords, recordKey(2)), rawGet(t, s, bucketRecords, recordKey(3))
				rawPut(t, s, bucketRecords, recordKey(2), b3)
				rawPut(t, s, bucketRecords, recordKey(3), b2)
			},
			want: &VerifyError{Seq: 2, Problem: ProblemKey},
		},
		{
			name: "records 2 and 3 swapped, renumbered and rehashed",
			attack: func(t *testing.T, s store.Store, recs []Record) {
				r2, r3 := recs[1], recs[2]
				r2.Seq, r3.Seq = 3, 2
				putRecord(t, s, recordKey(2), r3, true)
				putRecord(t, s, recordKey(3), r2, true)
			},
			want: &VerifyError{Seq: 2, Problem: ProblemLink},
		},
		{
			name:   "last record cut off, head left",
			attack: func(t *testing.T, s store.Store, recs []Record) { rawDelete(t, s, bucketRecords, recordKey(5)) },
			want:   &VerifyError{Seq: 5, Problem: ProblemHead},
		},
		{
			name: "last record cut off, head rewritten",
			attack: func(t *testing.T, s store.Store, recs []Record) {
				rawDelete(t, s, bucketRecords, recordKey(5))
				setHead(t, s, 4, recs[3].Hash)
			},
			wantAnchor: &VerifyError{Problem: ProblemAnchor},
		},
		{
			name: "every record removed, head left",
			attack: func(t *testing.T, s store.Store, recs []Record) {
				for _, r := range recs {
					rawDelete(t, s, bucketRecords, recordKey(r.Seq))
				}
			},
			want: &VerifyError{Seq: 1, Problem: ProblemHead},
		},
		{
			name: "every record and the head removed",
			attack: func(t *testing.T, s store.Store, recs []Record) {
				for _, r := range recs {
					rawDelete(t, s, bucketRecords, recordKey(r.Seq))
				}
				rawDelete(t, s, bucketHead, headKey)
			},
			wantAnchor: &VerifyError{Problem: ProblemAnchor},
		},
		{
			name:       "chain rewritten consistently from record 3",
			attack:     func(t *testing.T, s store.Store, recs []Record) { rewriteFrom(t, s, recs, 3) },
			wantAnchor: &VerifyError{Problem: ProblemAnchor},
		},
		{
			name: "record 3 inserted again after the head",
			attack: func(t *testing.T, s store.Store, recs []Record) {
				rawPut(t, s, bucketRecords, recordKey(6), rawGet(t, s, bucketRecords, recordKey(3)))
			},
			want: &VerifyError{Seq: 3, Problem: ProblemDuplicate},
		},
		{
			name: "record 3 copied over record 4",
			attack: func(t *testing.T, s store.Store, recs []Record) {
				rawPut(t, s, bucketRecords, recordKey(4), rawGet(t, s, bucketRecords, recordKey(3)))
			},
			want: &VerifyError{Seq: 3, Problem: ProblemDuplicate},
		},
		{
			name: "record 5 moved to key 7",
			attack: func(t *testing.T, s store.Store, recs []Record) {
				b := rawGet(t, s, bucketRecords, recordKey(5))
				rawDelete(t, s, bucketRecords, recordKey(5))
				rawPut(t, s, bucketRecords, recordKey(7), b)
			},
			want: &VerifyError{Seq: 7, Problem: ProblemKey},
		},
		{
			name: "record 5 moved to key \"5\"",
			attack: func(t *testing.T, s store.Store, recs []Record) {
				b := rawGet(t, s, bucketRecords, recordKey(5))
				rawDelete(t, s, bucketRecords, recordKey(5))
				rawPut(t, s, bucketRecords, "5", b)
			},
			want: &VerifyError{Seq: 5, Problem: ProblemKey},
		},
		{
			name: "record 1 copied to key 0",
			attack: func(t *testing.T, s store.Store, recs []Record) {
				rawPut(t, s, bucketRecords, recordKey(0), rawGet(t, s, bucketRecords, recordKey(1)))
			},
			want: &VerifyError{Seq: 1, Problem: ProblemKey},
		},
		{
			name:   "record 3 replaced by garbage",
			attack: editStored(3, func([]byte) []byte { return []byte("\x00garbage") }),
			want:   &VerifyError{Seq: 3, Problem: ProblemMalformed},
		},
		{
			name: "record 3 re-indented",
			attack: editStored(3, func(b []byte) []byte {
				var out bytes.Buffer
				if err := json.Indent(&out, b, "", " "); err != nil {
					panic(err)
				}
				return out.Bytes()
			}),
			want: &VerifyError{Seq: 3, Problem: ProblemMalformed},
		},
		{
			name:   "record 3 with the same time spelled +00:00",
			attack: editStored(3, func(b []byte) []byte { return bytes.Replace(b, []byte(`Z"`), []byte(`+00:00"`), 1) }),
			want:   &VerifyError{Seq: 3, Problem: ProblemMalformed},
		},
		{
			name:   "record 3 with an extra field",
			attack: editStored(3, func(b []byte) []byte { return append([]byte(`{"note":"hidden",`), b[1:]...) }),
			want:   &VerifyError{Seq: 3, Problem: ProblemMalformed},
		},
		{
			name: "record 3 with a duplicate actor key",
			attack: editStored(3, func(b []byte) []byte {
				return bytes.Replace(b, []byte(`"outcome"`), []byte(`"actor":"mallory","outcome"`), 1)
			}),
			want: &VerifyError{Seq: 3, Problem: ProblemMalformed},
		},
		{
			name: "record 3 with an escaped but equal string",
			attack: editStored(3, func(b []byte) []byte {
				return bytes.Replace(b, []byte(`"kind":"release"`), []byte(`"kind":"\u0072elease"`), 1)
			}),
			want: &VerifyError{Seq: 3, Problem: ProblemMalformed},
		},
		{
			name: "record 3 with an unknown kind, rehashed",
			attack: func(t *testing.T, s store.Store, recs []Record) {
				r := recs[2]
				r.Kind = "bogus"
				putRecord(t, s, recordKey(3), r, true)
			},
			want: &VerifyError{Seq: 3, Problem: ProblemMalformed},
		},
		{
			name: "valid record 6 added behind the head",
			attack: func(t *testing.T, s store.Store, recs []Record) {
				r := sample(6)
				r.Seq, r.Time, r.Prev = 6, t0, recs[4].Hash
				putRecord(t, s, recordKey(6), r, true)
			},
			want: &VerifyError{Seq: 6, Problem: ProblemHead},
		},
		{
			name:   "head removed",
			attack: func(t *testing.T, s store.Store, recs []Record) { rawDelete(t, s, bucketHead, headKey) },
			want:   &VerifyError{Seq: 5, Problem: ProblemHead},
		},
		{
			name:   "head malformed",
			attack: func(t *testing.T, s store.Store, recs []Record) { rawPut(t, s, bucketHead, headKey, []byte("[]")) },
			want:   &VerifyError{Problem: ProblemHead},
		},
		{
			name:   "head names an earlier record",
			attack: func(t *testing.T, s store.Store, recs []Record) { setHead(t, s, 4, recs[3].Hash) },
			want:   &VerifyError{Seq: 5, Problem: ProblemHead},
		},
		{
			name:   "head with the right seq and a wrong hash",
			attack: func(t *testing.T, s store.Store, recs []Record) { setHead(t, s, 5, recs[3].Hash) },
			want:   &VerifyError{Seq: 5, Problem: ProblemHead},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, s := newLog(t)
			recs := fill(t, l, 5)
			anchor := mustVerify(t, l).Head
			tt.attack(t, s, recs)

			_, err := l.Verify(context.Background())
			checkVerifyError(t, "Verify()", err, tt.want)
			wantAnchor := tt.want
			if wantAnchor == nil {
				wantAnchor = tt.wantAnchor
			}
			_, err = l.VerifyAgainst(context.Background(), anchor)
			checkVerifyError(t, "VerifyAgainst(head before the attack)", err, wantAnchor)
		})
	}
}

func TestVerifyAgainst(t *testing.T) {
	l, s := newLog(t)
	recs := fill(t, l, 5)
	head := recs[4].Hash
	tests := []struct {
		name    string
		anchor  string
		want    *VerifyError
		wantErr error
	}{
		{name: "current head", anchor: head},
		{name: "current head in upper case", anchor: strings.ToUpper(head)},
		{name: "an earlier record", anchor: recs[1].Hash},
		{name: "genesis", anchor: Genesis},
		{name: "a hash not in the chain", anchor: ClaimsDigest([]byte("x")), want: &VerifyError{Problem: ProblemAnchor}},
		{name: "not a hash", anchor: "xyz", wantErr: ErrInvalid},
		{name: "empty", anchor: "", wantErr: ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := l.VerifyAgainst(context.Background(), tt.anchor)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || errors.Is(err, ErrTampered) {
					t.Errorf("VerifyAgainst(%q) = %v, want %v", tt.anchor, err, tt.wantErr)
				}
				return
			}
			checkVerifyError(t, "VerifyAgainst()", err, tt.want)
			if tt.want == nil && (res.Records != 5 || res.Head != head) {
				t.Errorf("VerifyAgainst() = %+v, want 5 records up to %s", res, head)
			}
		})
	}

	// A consistent rewrite after record 2 keeps record 2's hash: an anchor
	// taken at 2 still verifies, one taken at 5 does not.
	prev := recs[1].Hash
	for _, r := range recs[2:] {
		r.Actor, r.Prev = "mallory", prev
		prev = putRecord(t, s, recordKey(r.Seq), r, true).Hash
	}
	setHead(t, s, 5, prev)
	if _, err := l.VerifyAgainst(context.Background(), recs[1].Hash); err != nil {
		t.Errorf("VerifyAgainst(record 2) after a rewrite from 3 = %v, want nil", err)
	}
	_, err := l.VerifyAgainst(context.Background(), head)
	checkVerifyError(t, "VerifyAgainst(old head) after a rewrite from 3", err, &VerifyError{Problem: ProblemAnchor})
}

// cancelLater is a context whose Err reports cancellation from the
// second call on: the store's check at the start of View passes, and the
// walk itself has to notice.
type cancelLater struct {
	context.Context
	calls atomic.Int32
}

func (c *cancelLater) Err() error {
	if c.calls.Add(1) > 1 {
		return context.Canceled
	}
	return nil
}

func TestVerifyCancelled(t *testing.T) {
	l, _ := newLog(t)
	fill(t, l, 2*verifyCtxEvery)
	ctx := &cancelLater{Context: context.Background()}
	if _, err := l.Verify(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Verify(cancelled during the walk) = %v, want context.Canceled", err)
	}
	if n := ctx.calls.Load(); n < 2 {
		t.Errorf("Verify looked at ctx %d times, want the walk to look", n)
	}
}

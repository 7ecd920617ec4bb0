package audit

import (
	"context"
	"fmt"
	"strings"

	"github.com/greatjail/cvm/kbs/store"
)

// Problem says what Verify found wrong. Callers branch on these values.
type Problem string

// The problems Verify reports, each with the attack it reveals.
const (
	// ProblemMalformed: a stored value is not the canonical encoding of a
	// valid record (garbage, or a record re-encoded by hand).
	ProblemMalformed Problem = "malformed record"
	// ProblemKey: a record is stored under a key that is not the key of
	// its Seq (a record moved, or a foreign key in the bucket).
	ProblemKey Problem = "record stored under the wrong key"
	// ProblemDuplicate: a record repeats the Seq of an earlier one (a
	// record copied to a second place).
	ProblemDuplicate Problem = "duplicate seq"
	// ProblemGap: a Seq is missing (a record removed).
	ProblemGap Problem = "missing record"
	// ProblemHash: a record's Hash does not match its content (a record
	// edited).
	ProblemHash Problem = "hash mismatch"
	// ProblemLink: a record's Prev is not the Hash of the record before it
	// (a record removed or reordered and the rest renumbered, or a record
	// edited and its hash recomputed).
	ProblemLink Problem = "prev does not match the previous record"
	// ProblemHead: the head is missing, malformed or does not name the
	// last record (the tail cut off, records added behind the head's back,
	// or the last record edited and rehashed).
	ProblemHead Problem = "head does not match the chain"
	// ProblemAnchor: VerifyAgainst's anchor is not a record of the chain
	// (the chain rewritten or truncated since the anchor was taken).
	ProblemAnchor Problem = "anchor not in the chain"
)

// VerifyError is where and why a chain failed to verify. It wraps
// ErrTampered.
type VerifyError struct {
	// Seq is where the chain breaks: the record at fault, or the first
	// missing one. It is 0 when no single record is at fault (a malformed
	// head, an anchor not found).
	Seq uint64
	// Problem is what is wrong.
	Problem Problem
	// Detail is for people, not for branching.
	Detail string
}

func (e *VerifyError) Error() string {
	msg := fmt.Sprintf("audit: log tampered with at seq %d: %s", e.Seq, e.Problem)
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	return msg
}

// Unwrap returns ErrTampered.
func (e *VerifyError) Unwrap() error { return ErrTampered }

// VerifyResult describes a chain that verified.
type VerifyResult struct {
	// Records is the number of records, which is also the last Seq.
	Records uint64
	// Head is the Hash of the last record, Genesis for an empty log. Keep
	// it outside the store to check later with VerifyAgainst.
	Head string
}

// Verify walks the whole chain in one read transaction (a consistent
// snapshot) and checks every record: the stored value is the canonical
// encoding of a valid record, it is stored under the key of its Seq, Seqs
// run 1, 2, 3, ... with no gap or duplicate, its Hash matches its content,
// its Prev is the previous record's Hash, and the head names the last
// record. Any failure is a *VerifyError wrapping ErrTampered; store errors
// are returned as they are. Verify cannot detect a consistent rewrite of the
// chain from some record on (see the package doc); VerifyAgainst can.
func (l *Log) Verify(ctx context.Context) (*VerifyResult, error) {
	return l.verify(ctx, "")
}

// VerifyAgainst verifies the chain as Verify does and also checks that it
// contains a record whose Hash is anchor, a head taken earlier (from
// VerifyResult.Head) and kept outside the store. Because each hash covers
// every record before it, this proves that the records up to the anchor are
// unchanged. An anchor that is not 64 hex digits is ErrInvalid; Genesis is
// in every chain.
func (l *Log) VerifyAgainst(ctx context.Context, anchor string) (*VerifyResult, error) {
	anchor = strings.ToLower(anchor)
	if !isHash(anchor) {
		return nil, fmt.Errorf("%w: anchor %q is not a hex SHA-256", ErrInvalid, anchor)
	}
	return l.verify(ctx, anchor)
}

// verifyCtxEvery is how many records Verify checks between looks at ctx.
const verifyCtxEvery = 1024

func (l *Log) verify(ctx context.Context, anchor string) (*VerifyResult, error) {
	var res *VerifyResult
	err := l.s.View(ctx, func(tx store.Tx) error {
		lastSeq, lastHash := uint64(0), Genesis
		found := anchor == "" || anchor == Genesis
		n := 0
		err := tx.Scan(bucketRecords, "", func(key string, value []byte) error {
			if n++; n%verifyCtxEvery == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			r, err := checkRecord(key, value, lastSeq, lastHash)
			if err != nil {
				return err
			}
			lastSeq, lastHash = r.Seq, r.Hash
			if r.Hash == anchor {
				found = true
			}
			return nil
		})
		if err != nil {
			return err
		}
		h, ok, err := readHead(tx)
		if err != nil {
			return err
		}
		switch {
		case !ok && lastSeq != 0:
			return &VerifyError{Seq: lastSeq, Problem: ProblemHead, Detail: fmt.Sprintf("no head, but %d records", lastSeq)}
		case h.Seq > lastSeq:
			return &VerifyError{Seq: lastSeq + 1, Problem: ProblemHead, Detail: fmt.Sprintf("head names record %d, the last record is %d", h.Seq, lastSeq)}
		case h.Seq < lastSeq:
			return &VerifyError{Seq: h.Seq + 1, Problem: ProblemHead, Detail: fmt.Sprintf("head names record %d, but records go up to %d", h.Seq, lastSeq)}
		case h.Hash != lastHash:
			return &VerifyError{Seq: lastSeq, Problem: ProblemHead, Detail: fmt.Sprintf("head hash %s, last record's hash %s", h.Hash, lastHash)}
		}
		if !found {
			return &VerifyError{Problem: ProblemAnchor, Detail: fmt.Sprintf("no record with hash %s among %d records", anchor, lastSeq)}
		}
		res = &VerifyResult{Records: lastSeq, Head: lastHash}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// checkRecord checks the record stored under key, given the Seq and Hash of
// the record checked before it, and returns it.
func checkRecord(key string, value []byte, lastSeq uint64, lastHash string) (Record, error) {
	seq, ok := parseKey(key)
	if !ok {
		return Record{}, &VerifyError{Seq: lastSeq + 1, Problem: ProblemKey, Detail: fmt.Sprintf("key %q is not a sequence number", key)}
	}
	r, err := decodeRecord(value)
	if err != nil {
		return Record{}, &VerifyError{Seq: seq, Problem: ProblemMalformed, Detail: err.Error()}
	}
	if r.Seq != seq {
		if r.Seq >= 1 && r.Seq <= lastSeq {
			return Record{}, &VerifyError{Seq: r.Seq, Problem: ProblemDuplicate, Detail: fmt.Sprintf("record %d again under key %q", r.Seq, key)}
		}
		return Record{}, &VerifyError{Seq: seq, Problem: ProblemKey, Detail: fmt.Sprintf("record %d under key %q", r.Seq, key)}
	}
	// Keys are scanned in ascending order and are fixed-width, so seq >
	// lastSeq here; anything but the next one means records are missing.
	if seq != lastSeq+1 {
		return Record{}, &VerifyError{Seq: lastSeq + 1, Problem: ProblemGap, Detail: fmt.Sprintf("next record is %d", seq)}
	}
	want, err := hashRecord(r)
	if err != nil {
		return Record{}, &VerifyError{Seq: seq, Problem: ProblemMalformed, Detail: err.Error()}
	}
	if r.Hash != want {
		return Record{}, &VerifyError{Seq: seq, Problem: ProblemHash, Detail: fmt.Sprintf("stored %s, content hashes to %s", r.Hash, want)}
	}
	if r.Prev != lastHash {
		return Record{}, &VerifyError{Seq: seq, Problem: ProblemLink, Detail: fmt.Sprintf("prev %s, previous record's hash %s", r.Prev, lastHash)}
	}
	return r, nil
}

// Package audit is the key broker's append-only, hash-chained audit log. It
// records every attestation result, release, denial and admin change: who
// (Actor), what (Action, Outcome), under which policy version, for which
// claims digest, and when. Verify walks the chain and detects any record that
// was edited, removed, reordered, duplicated or moved, and a tail that was cut
// off.
//
// # Records and chaining
//
// Each Record carries Seq (1, 2, 3, ... with no gaps), Prev (the Hash of the
// record before it, or Genesis, 64 zeros, for the first) and Hash:
//
//	Hash = lowercase hex SHA-256( "cvm-audit-v1\n" || canonical(record with Hash = "") )
//
// The prefix "cvm-audit-v1\n" separates this hash from any other use of
// SHA-256 and versions the encoding: a different encoding gets a different
// prefix, so a record can never verify under two encodings.
//
// # Canonical encoding, version 1
//
// canonical(r) is the JSON that encoding/json produces for Record with Time
// converted to UTC: no whitespace; the fields in declaration order (seq, time,
// kind, actor, action, outcome, tee, policy_version, claims_digest, reasons,
// details, prev, hash); tee, policy_version, claims_digest, reasons and
// details omitted when empty; seq as a decimal integer; time as RFC 3339 with
// nanoseconds, trailing zeros of the fraction dropped and the zone "Z"
// (time.RFC3339Nano in UTC); strings escaped as encoding/json does (`"`, `\`,
// \n, \r, \t, other control characters as \u00XX, "<", ">" and "&" as
// \u003c, \u003e and \u0026, U+2028 and U+2029 as \u2028 and \u2029);
// details keys sorted by byte value. A golden test pins these bytes, so a
// change in encoding/json cannot pass unnoticed.
//
// A stored record is exactly canonical(r) with Hash set, and Verify accepts
// nothing else: a value that decodes to a record but is not byte-for-byte its
// canonical encoding (extra whitespace or fields, duplicate or reordered
// keys, another spelling of the same time or string) is ProblemMalformed.
// Nothing can hide in a stored record outside what the hash covers.
//
// Append replaces invalid UTF-8 in every string by U+FFFD before hashing, so
// the record it returns is the record it stored.
//
// # Store layout
//
// Bucket "audit": key = Seq as 20 decimal digits, zero-padded (so the store's
// key order is Seq order), value = the stored record. Bucket "audit-head": key
// "head" = {"seq":N,"hash":"<Hash of record N>"}. Append reads the head and
// writes the next record and the new head in one transaction, and never
// overwrites a record: if the key it is about to write exists (say the head
// was rewound or deleted), the log has been tampered with and Append fails
// with ErrTampered, as it does when the head is malformed. The log fails
// closed: nothing more is recorded until an operator repairs it, and callers
// that must not act unrecorded (releases) then refuse to act.
//
// # Limits of a hash chain
//
// The chain makes tampering evident, not impossible. Someone with write
// access to the store can rewrite every record from some point on,
// recomputing each Hash and Prev and the head; the rewritten chain verifies.
// What catches that is a head kept outside the store: Verify returns the
// head hash (`cvm kbs audit verify` prints it), an operator or another
// system records it, and VerifyAgainst later checks that the chain still
// contains that hash. Because every hash covers all records before it, the
// records up to the anchored one are then exactly those that existed when it
// was taken. In particular, cutting off the last records and rewriting the
// head to the new last record passes Verify and fails only VerifyAgainst with
// an earlier anchor. (A later change may sign the head.) Record times come
// from the injected clock and are not checked for order: clocks step back.
//
// # Streaming
//
// Subscribe and Stream deliver the records from a given Seq on, then new
// records as they are appended, with no gaps, no duplicates and in Seq order.
// They read the records from the store, not from a queue fed by Append: a
// slow consumer falls behind and catches up, it never loses records and
// never slows Append down. Memory per subscriber is bounded (one batch of at
// most MaxRange records plus a channel buffer of 64). A subscriber is woken
// by Append, and by Notify after a caller's own transaction that used
// AppendTx commits; records appended by another process are delivered at the
// next wake-up in this one. A gap in the stored records ends the stream with
// ErrTampered (Stream returns it; Subscribe closes its channel).
//
// # Concurrency
//
// A Log is safe for concurrent use. Appends are serialized by the store's
// Update transactions (serializable by contract), which is what keeps Seq
// free of gaps and the chain linear across goroutines and, with a shared
// store, across replicas. Log.mu guards only the wake-up channel.
package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/greatjail/cvm/kbs/store"
)

// Kinds of record.
const (
	KindAttest  = "attest"  // an attestation result
	KindRelease = "release" // a resource released to a guest
	KindDeny    = "deny"    // a request refused
	KindAdmin   = "admin"   // an administrative change
)

// Outcomes of the recorded action.
const (
	OutcomeOK     = "ok"
	OutcomeDenied = "denied"
	OutcomeError  = "error"
)

// Genesis is the Prev of the first record and the head of an empty log.
const Genesis = "0000000000000000000000000000000000000000000000000000000000000000"

// MaxRecordSize is the largest stored record, in bytes. Append refuses
// larger records with ErrInvalid and Verify treats them as malformed, which
// bounds the work done on each stored value.
const MaxRecordSize = 64 << 10

// MaxRange is the most records Range and Tail return in one call.
const MaxRange = 1000

// Store buckets and keys (see the package doc).
const (
	bucketRecords = "audit"
	bucketHead    = "audit-head"
	headKey       = "head"
	keyDigits     = 20
	hashDomain    = "cvm-audit-v1\n"
)

// ErrTampered means the stored log is not a chain that Append could have
// written: a record was edited, removed, reordered, duplicated or moved, or
// the head does not match. Verify's errors are *VerifyError wrapping it.
var ErrTampered = errors.New("audit: log tampered with")

// ErrInvalid means a record given to Append is not acceptable: unknown kind
// or outcome, missing actor or action, malformed claims digest, or too large.
var ErrInvalid = errors.New("audit: invalid record")

// Record is one entry of the log. Append sets Seq, Time, Prev and Hash; the
// caller sets the rest. The JSON form is the stored form (see the package
// doc for its canonical encoding).
type Record struct {
	// Seq numbers records 1, 2, 3, ... in append order.
	Seq uint64 `json:"seq"`
	// Time is when the record was appended, from the injected clock, UTC.
	Time time.Time `json:"time"`
	// Kind is one of the Kind constants.
	Kind string `json:"kind"`
	// Actor is who: the admin client certificate subject, or the guest's
	// peer address, or "guest".
	Actor string `json:"actor"`
	// Action is what, e.g. "attest", "resource.get repo/key/1",
	// "resource.put repo/key/1".
	Action string `json:"action"`
	// Outcome is one of the Outcome constants.
	Outcome string `json:"outcome"`
	// TEE is the attested TEE type ("snp", "tdx", "tpm", "sim"), if any.
	TEE string `json:"tee,omitempty"`
	// PolicyVersion is the version of the policy that decided, if any.
	PolicyVersion string `json:"policy_version,omitempty"`
	// ClaimsDigest is the lowercase hex SHA-256 of the verified claims JSON
	// (see ClaimsDigest), if any.
	ClaimsDigest string `json:"claims_digest,omitempty"`
	// Reasons explain a denial or an error, as the operator sees them.
	Reasons []string `json:"reasons,omitempty"`
	// Details hold anything else worth keeping, e.g. a resource version.
	Details map[string]string `json:"details,omitempty"`
	// Prev is the Hash of the previous record, Genesis for the first.
	Prev string `json:"prev"`
	// Hash is the hex SHA-256 over the domain prefix and this record's
	// canonical encoding with Hash empty.
	Hash string `json:"hash"`
}

// ClaimsDigest returns the lowercase hex SHA-256 of claimsJSON, the form
// Record.ClaimsDigest takes.
func ClaimsDigest(claimsJSON []byte) string {
	sum := sha256.Sum256(claimsJSON)
	return hex.EncodeToString(sum[:])
}

// Log is the audit log kept in a store.Store.
type Log struct {
	s   store.Store
	now func() time.Time

	// mu guards wake.
	mu sync.Mutex
	// wake is closed and replaced by Notify; Stream waits on it.
	wake chan struct{}
}

// New returns the log kept in s, stamping records with now. now must not be
// nil.
func New(s store.Store, now func() time.Time) *Log {
	if s == nil || now == nil {
		panic("audit: New needs a store and a clock")
	}
	return &Log{s: s, now: now, wake: make(chan struct{})}
}

// Append adds r to the log in one store transaction: it reads the head,
// sets Seq, Time, Prev and Hash (any values r has for them are ignored),
// writes the record and the new head, and returns the record as stored.
// Subscribers are woken once the transaction has committed.
func (l *Log) Append(ctx context.Context, r Record) (Record, error) {
	var out Record
	err := l.s.Update(ctx, func(tx store.Tx) error {
		var err error
		out, err = AppendTx(tx, l.now(), r)
		return err
	})
	if err != nil {
		return Record{}, err
	}
	l.Notify()
	return out, nil
}

// AppendTx does what Append does inside the caller's transaction tx, with
// the time now, so that a state change and its audit record commit
// together or not at all. After tx commits, the caller should call
// Log.Notify so that subscribers see the record without waiting for the
// next Append.
func AppendTx(tx store.Tx, now time.Time, r Record) (Record, error) {
	r, err := normalize(r)
	if err != nil {
		return Record{}, err
	}
	h, _, err := readHead(tx)
	if err != nil {
		return Record{}, fmt.Errorf("audit: append: %w", err)
	}
	if h.Seq == math.MaxUint64 {
		return Record{}, errors.New("audit: append: sequence numbers exhausted")
	}
	r.Seq = h.Seq + 1
	r.Time = now.UTC()
	r.Prev = h.Hash
	if r.Hash, err = hashRecord(r); err != nil {
		return Record{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	b, err := encode(r)
	if err != nil {
		return Record{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if len(b) > MaxRecordSize {
		return Record{}, fmt.Errorf("%w: %d bytes encoded, limit %d", ErrInvalid, len(b), MaxRecordSize)
	}
	// Decode what is about to be stored, as Verify will: the returned
	// record is then exactly the stored one, and a record that could not
	// verify is never written.
	stored, err := decodeRecord(b)
	if err != nil {
		return Record{}, fmt.Errorf("audit: append: encoding does not round-trip: %w", err)
	}
	key := recordKey(r.Seq)
	switch _, err := tx.Get(bucketRecords, key); {
	case err == nil:
		return Record{}, fmt.Errorf("audit: append: %w", &VerifyError{Seq: r.Seq, Problem: ProblemHead,
			Detail: fmt.Sprintf("head says %d records but record %d exists", h.Seq, r.Seq)})
	case !errors.Is(err, store.ErrNotFound):
		return Record{}, fmt.Errorf("audit: append: %w", err)
	}
	if err := tx.Put(bucketRecords, key, b); err != nil {
		return Record{}, fmt.Errorf("audit: append: %w", err)
	}
	hb, err := json.Marshal(head{Seq: r.Seq, Hash: r.Hash})
	if err != nil {
		return Record{}, fmt.Errorf("audit: append: %w", err)
	}
	if err := tx.Put(bucketHead, headKey, hb); err != nil {
		return Record{}, fmt.Errorf("audit: append: %w", err)
	}
	return stored, nil
}

// Notify wakes the subscribers so that they read new records. Append calls
// it; callers of AppendTx call it after their transaction commits. Calling
// it when nothing was appended is harmless.
func (l *Log) Notify() {
	l.mu.Lock()
	close(l.wake)
	l.wake = make(chan struct{})
	l.mu.Unlock()
}

// waiter returns the channel the next Notify closes.
func (l *Log) waiter() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.wake
}

// normalize returns a copy of r with invalid UTF-8 replaced, empty slices
// and maps made nil, and checks that it is a record Append may write.
func normalize(r Record) (Record, error) {
	r.Kind = validUTF8(r.Kind)
	r.Actor = validUTF8(r.Actor)
	r.Action = validUTF8(r.Action)
	r.Outcome = validUTF8(r.Outcome)
	r.TEE = validUTF8(r.TEE)
	r.PolicyVersion = validUTF8(r.PolicyVersion)
	r.ClaimsDigest = validUTF8(r.ClaimsDigest)
	if len(r.Reasons) == 0 {
		r.Reasons = nil
	} else {
		reasons := make([]string, len(r.Reasons))
		for i, s := range r.Reasons {
			reasons[i] = validUTF8(s)
		}
		r.Reasons = reasons
	}
	if len(r.Details) == 0 {
		r.Details = nil
	} else {
		details := make(map[string]string, len(r.Details))
		for k, v := range r.Details {
			ck := validUTF8(k)
			if _, dup := details[ck]; dup {
				return Record{}, fmt.Errorf("%w: details keys %q collide once invalid UTF-8 is replaced", ErrInvalid, ck)
			}
			details[ck] = validUTF8(v)
		}
		r.Details = details
	}
	if err := validate(r); err != nil {
		return Record{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return r, nil
}

// validate checks the caller-set fields of r.
func validate(r Record) error {
	switch r.Kind {
	case KindAttest, KindRelease, KindDeny, KindAdmin:
	default:
		return fmt.Errorf("unknown kind %q", r.Kind)
	}
	switch r.Outcome {
	case OutcomeOK, OutcomeDenied, OutcomeError:
	default:
		return fmt.Errorf("unknown outcome %q", r.Outcome)
	}
	if r.Actor == "" {
		return errors.New("no actor")
	}
	if r.Action == "" {
		return errors.New("no action")
	}
	if r.ClaimsDigest != "" && !isHash(r.ClaimsDigest) {
		return fmt.Errorf("claims digest %q is not 64 lowercase hex digits", r.ClaimsDigest)
	}
	return nil
}

func validUTF8(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }

// isHash reports whether s is 64 lowercase hex digits.
func isHash(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// encode returns the canonical encoding of r (see the package doc).
func encode(r Record) ([]byte, error) {
	r.Time = r.Time.UTC()
	return json.Marshal(r)
}

// hashRecord returns the hash r should carry.
func hashRecord(r Record) (string, error) {
	r.Hash = ""
	b, err := encode(r)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	h.Write([]byte(hashDomain))
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil)), nil
}

// errNotCanonical is why decodeRecord refuses a value that decodes but is
// not its record's canonical encoding.
var errNotCanonical = errors.New("not the canonical encoding")

// decodeRecord parses a stored record: b must be exactly the canonical
// encoding of a record that Append would accept. It does not check Hash.
func decodeRecord(b []byte) (Record, error) {
	if len(b) > MaxRecordSize {
		return Record{}, fmt.Errorf("%d bytes, limit %d", len(b), MaxRecordSize)
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return Record{}, err
	}
	c, err := encode(r)
	if err != nil {
		return Record{}, err
	}
	if !bytes.Equal(c, b) {
		return Record{}, errNotCanonical
	}
	if err := validate(r); err != nil {
		return Record{}, err
	}
	return r, nil
}

// recordKey is the store key of record seq.
func recordKey(seq uint64) string { return fmt.Sprintf("%0*d", keyDigits, seq) }

// parseKey returns the seq a record key names, or false if key is not
// exactly what recordKey makes for some seq >= 1.
func parseKey(key string) (uint64, bool) {
	if len(key) != keyDigits {
		return 0, false
	}
	var seq uint64
	for i := 0; i < len(key); i++ {
		c := key[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if seq > (math.MaxUint64-d)/10 {
			return 0, false
		}
		seq = seq*10 + d
	}
	return seq, seq != 0
}

// head is the stored head: the last record's Seq and Hash.
type head struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
}

// readHead returns the stored head, or {0, Genesis} and false when there is
// none. A malformed head is a *VerifyError with ProblemHead.
func readHead(tx store.Tx) (head, bool, error) {
	b, err := tx.Get(bucketHead, headKey)
	if errors.Is(err, store.ErrNotFound) {
		return head{Hash: Genesis}, false, nil
	}
	if err != nil {
		return head{}, false, err
	}
	var h head
	if err := json.Unmarshal(b, &h); err != nil {
		return head{}, false, &VerifyError{Problem: ProblemHead, Detail: "malformed head: " + err.Error()}
	}
	if !isHash(h.Hash) || (h.Seq == 0 && h.Hash != Genesis) {
		return head{}, false, &VerifyError{Problem: ProblemHead, Detail: fmt.Sprintf("malformed head: seq %d, hash %q", h.Seq, h.Hash)}
	}
	return h, true, nil
}

package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/greatjail/cvm/kbs/store"
	"github.com/greatjail/cvm/kbs/store/storetest"
)

// t0 is the first time the test clock returns.
var t0 = time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC)

// clock is a test clock that advances one second per call.
type clock struct {
	mu sync.Mutex // guards t
	t  time.Time
}

func newClock() *clock { return &clock{t: t0.Add(-time.Second)} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Second)
	return c.t
}

func newLog(t testing.TB) (*Log, *storetest.Memory) {
	t.Helper()
	s := storetest.NewMemory()
	return New(s, newClock().now), s
}

// sample returns a valid record to append; i varies the action.
func sample(i int) Record {
	return Record{
		Kind:          KindRelease,
		Actor:         "192.0.2.7:40312",
		Action:        fmt.Sprintf("resource.get tenant/disk-key/%d", i),
		Outcome:       OutcomeOK,
		TEE:           "snp",
		PolicyVersion: "3",
		ClaimsDigest:  ClaimsDigest([]byte(`{"tee":"snp"}`)),
		Details:       map[string]string{"version": "1"},
	}
}

// fill appends n sample records and returns them as Append returned them.
func fill(t testing.TB, l *Log, n int) []Record {
	t.Helper()
	var out []Record
	for i := range n {
		r, err := l.Append(context.Background(), sample(i))
		if err != nil {
			t.Fatalf("Append(%d) = %v", i, err)
		}
		out = append(out, r)
	}
	return out
}

func mustVerify(t *testing.T, l *Log) *VerifyResult {
	t.Helper()
	res, err := l.Verify(context.Background())
	if err != nil {
		t.Fatalf("Verify() = %v, want a valid chain", err)
	}
	return res
}

// Raw store access, as an attacker with write access to the store has it.

func rawGet(t *testing.T, s store.Store, bucket, key string) []byte {
	t.Helper()
	var b []byte
	err := s.View(context.Background(), func(tx store.Tx) error {
		var err error
		b, err = tx.Get(bucket, key)
		return err
	})
	if err != nil {
		t.Fatalf("get %s/%s: %v", bucket, key, err)
	}
	return b
}

func rawPut(t *testing.T, s store.Store, bucket, key string, value []byte) {
	t.Helper()
	err := s.Update(context.Background(), func(tx store.Tx) error { return tx.Put(bucket, key, value) })
	if err != nil {
		t.Fatalf("put %s/%s: %v", bucket, key, err)
	}
}

func rawDelete(t *testing.T, s store.Store, bucket, key string) {
	t.Helper()
	err := s.Update(context.Background(), func(tx store.Tx) error { return tx.Delete(bucket, key) })
	if err != nil {
		t.Fatalf("delete %s/%s: %v", bucket, key, err)
	}
}

// putRecord stores r under key; with rehash it first recomputes r.Hash
// from r's content (an attacker who knows the algorithm). It returns r as
// stored.
func putRecord(t *testing.T, s store.Store, key string, r Record, rehash bool) Record {
	t.Helper()
	if rehash {
		h, err := hashRecord(r)
		if err != nil {
			t.Fatal(err)
		}
		r.Hash = h
	}
	b, err := encode(r)
	if err != nil {
		t.Fatal(err)
	}
	rawPut(t, s, bucketRecords, key, b)
	return r
}

func setHead(t *testing.T, s store.Store, seq uint64, hash string) {
	t.Helper()
	b, err := json.Marshal(head{Seq: seq, Hash: hash})
	if err != nil {
		t.Fatal(err)
	}
	rawPut(t, s, bucketHead, headKey, b)
}

func TestAppendChains(t *testing.T) {
	l, _ := newLog(t)
	got := fill(t, l, 3)

	prev := Genesis
	var want []Record
	for i := range 3 {
		r := sample(i)
		r.Seq = uint64(i + 1)
		r.Time = t0.Add(time.Duration(i) * time.Second)
		r.Prev = prev
		h, err := hashRecord(r)
		if err != nil {
			t.Fatal(err)
		}
		r.Hash = h
		prev = h
		want = append(want, r)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Append results (-want +got):\n%s", diff)
	}
	tail, err := l.Tail(context.Background(), 3)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, tail); diff != "" {
		t.Errorf("Tail(3) differs from what Append returned (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(&VerifyResult{Records: 3, Head: want[2].Hash}, mustVerify(t, l)); diff != "" {
		t.Errorf("Verify() (-want +got):\n%s", diff)
	}
}

func TestAppendIgnoresCallerChainFields(t *testing.T) {
	l, _ := newLog(t)
	r := sample(0)
	r.Seq, r.Time, r.Prev, r.Hash = 99, time.Unix(0, 0), "forged-prev", "forged-hash"
	got, err := l.Append(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	if got.Seq != 1 || !got.Time.Equal(t0) || got.Prev != Genesis || got.Hash == "forged-hash" {
		t.Errorf("Append(forged chain fields) = seq %d time %v prev %q hash %q, want seq 1, time %v, prev Genesis, a computed hash",
			got.Seq, got.Time, got.Prev, got.Hash, t0)
	}
	mustVerify(t, l)
}

func TestAppendStoresUTC(t *testing.T) {
	zone := time.FixedZone("UTC+5", 5*3600)
	local := time.Date(2026, 5, 6, 7, 8, 9, 0, zone)
	l := New(storetest.NewMemory(), func() time.Time { return local })
	got, err := l.Append(context.Background(), sample(0))
	if err != nil {
		t.Fatal(err)
	}
	if !got.Time.Equal(local) || got.Time.Location() != time.UTC {
		t.Errorf("Append with a UTC+5 clock: Time = %v, want %v in UTC", got.Time, local.UTC())
	}
	mustVerify(t, l)
}

func TestAppendInvalid(t *testing.T) {
	long := strings.Repeat("x", MaxRecordSize)
	tests := []struct {
		name   string
		mutate func(*Record)
	}{
		{"no kind", func(r *Record) { r.Kind = "" }},
		{"unknown kind", func(r *Record) { r.Kind = "release-all" }},
		{"no outcome", func(r *Record) { r.Outcome = "" }},
		{"unknown outcome", func(r *Record) { r.Outcome = "maybe" }},
		{"no actor", func(r *Record) { r.Actor = "" }},
		{"no action", func(r *Record) { r.Action = "" }},
		{"claims digest not hex", func(r *Record) { r.ClaimsDigest = strings.Repeat("g", 64) }},
		{"claims digest uppercase", func(r *Record) { r.ClaimsDigest = strings.ToUpper(ClaimsDigest(nil)) }},
		{"claims digest short", func(r *Record) { r.ClaimsDigest = "abcd" }},
		{"too large", func(r *Record) { r.Reasons = []string{long} }},
		{"details keys collide after UTF-8 repair", func(r *Record) {
			r.Details = map[string]string{"k\xff": "1", "k\xfe": "2"}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, _ := newLog(t)
			r := sample(0)
			tt.mutate(&r)
			if _, err := l.Append(context.Background(), r); !errors.Is(err, ErrInvalid) {
				t.Errorf("Append() = %v, want ErrInvalid", err)
			}
			if res := mustVerify(t, l); res.Records != 0 {
				t.Errorf("after a refused Append the log has %d records, want 0", res.Records)
			}
		})
	}
}

func TestAppendRepairsUTF8(t *testing.T) {
	l, _ := newLog(t)
	r := sample(0)
	r.Actor = "CN=bad\xffname"
	r.Reasons = []string{"x\xc3"}
	r.Details = map[string]string{"k\xff": "v\xfe"}
	got, err := l.Append(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	if got.Actor != "CN=bad\uFFFDname" || got.Reasons[0] != "x\uFFFD" || got.Details["k\uFFFD"] != "v\uFFFD" {
		t.Errorf("Append() = %+v, want invalid bytes replaced by U+FFFD", got)
	}
	stored, err := l.Range(context.Background(), 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]Record{got}, stored); diff != "" {
		t.Errorf("stored record differs from the returned one (-returned +stored):\n%s", diff)
	}
	mustVerify(t, l)
}

func TestAppendDoesNotAliasCaller(t *testing.T) {
	l, _ := newLog(t)
	r := sample(0)
	r.Reasons = []string{"a"}
	got, err := l.Append(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	r.Reasons[0] = "changed"
	r.Details["version"] = "changed"
	if got.Reasons[0] != "a" || got.Details["version"] != "1" {
		t.Errorf("the returned record shares slices or maps with the caller's: %+v", got)
	}
}

// TestCanonicalGolden pins the canonical encoding (see the package doc) and
// the hash. The hash was computed outside Go, with Python's hashlib over
// "cvm-audit-v1\n" followed by wantJSON with "hash":"" (the preimage
// written out by hand from the rules in the package doc).
func TestCanonicalGolden(t *testing.T) {
	s := storetest.NewMemory()
	r := Record{
		Kind:          KindDeny,
		Actor:         "CN=ops <admin>&co",
		Action:        "resource.get a/b/1",
		Outcome:       OutcomeDenied,
		TEE:           "tdx",
		PolicyVersion: "2",
		ClaimsDigest:  ClaimsDigest([]byte("{}")),
		Reasons:       []string{"debug\tenabled\n", "line\u2028sep", "bad\xffbyte", "ctl\x01\"\\"},
		Details:       map[string]string{"z": "1", "a": "é", "m": ""},
	}
	var got Record
	err := s.Update(context.Background(), func(tx store.Tx) error {
		var err error
		got, err = AppendTx(tx, time.Date(2026, 1, 2, 3, 4, 5, 600, time.FixedZone("x", 3600)), r)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	const (
		wantHash = "8a3b33fc1e27b09c909322b8deccf1442a03eea7f4db5e6b12e2eea2e8354907"
		wantJSON = `{"seq":1,"time":"2026-01-02T02:04:05.0000006Z","kind":"deny","actor":"CN=ops \u003cadmin\u003e\u0026co","action":"resource.get a/b/1","outcome":"denied","tee":"tdx","policy_version":"2","claims_digest":"44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","reasons":["debug\tenabled\n","line\u2028sep","bad�byte","ctl\u0001\"\\"],"details":{"a":"é","m":"","z":"1"},"prev":"0000000000000000000000000000000000000000000000000000000000000000","hash":"8a3b33fc1e27b09c909322b8deccf1442a03eea7f4db5e6b12e2eea2e8354907"}`
	)
	if got.Hash != wantHash {
		t.Errorf("hash = %s, want %s", got.Hash, wantHash)
	}
	if b := rawGet(t, s, bucketRecords, "00000000000000000001"); string(b) != wantJSON {
		t.Errorf("stored record =\n%s\nwant\n%s", b, wantJSON)
	}
	if b := rawGet(t, s, bucketHead, headKey); string(b) != `{"seq":1,"hash":"`+wantHash+`"}` {
		t.Errorf("stored head = %s", b)
	}
}

func TestAppendTx(t *testing.T) {
	errBoom := errors.New("boom")
	tests := []struct {
		name        string
		fail        bool
		wantRecords uint64
		wantState   bool
	}{
		{name: "commit", wantRecords: 3, wantState: true},
		{name: "rollback", fail: true, wantRecords: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, s := newLog(t)
			fill(t, l, 2)
			before := mustVerify(t, l)
			err := s.Update(context.Background(), func(tx store.Tx) error {
				if err := tx.Put("resources", "tenant/disk-key/2", []byte("sealed")); err != nil {
					return err
				}
				r := sample(2)
				r.Kind, r.Action = KindAdmin, "resource.put tenant/disk-key/2"
				if _, err := AppendTx(tx, t0.Add(time.Hour), r); err != nil {
					return err
				}
				if tt.fail {
					return errBoom
				}
				return nil
			})
			if tt.fail != errors.Is(err, errBoom) {
				t.Fatalf("Update() = %v", err)
			}
			l.Notify()
			res := mustVerify(t, l)
			if res.Records != tt.wantRecords {
				t.Errorf("records = %d, want %d", res.Records, tt.wantRecords)
			}
			if tt.fail && res.Head != before.Head {
				t.Errorf("head after rollback = %s, want unchanged %s", res.Head, before.Head)
			}
			var gotState bool
			_ = s.View(context.Background(), func(tx store.Tx) error {
				_, err := tx.Get("resources", "tenant/disk-key/2")
				gotState = err == nil
				return nil
			})
			if gotState != tt.wantState {
				t.Errorf("resource stored = %v, want %v (state and record commit together)", gotState, tt.wantState)
			}
		})
	}
}

// TestAppendFailsClosed: once the head does not describe the log, Append
// refuses rather than overwrite a record or guess.
func TestAppendFailsClosed(t *testing.T) {
	tests := []struct {
		name   string
		attack func(t *testing.T, s store.Store, recs []Record)
		want   *VerifyError
	}{
		{
			name:   "head rewound would overwrite record 3",
			attack: func(t *testing.T, s store.Store, recs []Record) { setHead(t, s, 2, recs[1].Hash) },
			want:   &VerifyError{Seq: 3, Problem: ProblemHead},
		},
		{
			name: "head deleted would overwrite record 1",
			attack: func(t *testing.T, s store.Store, recs []Record) {
				rawDelete(t, s, bucketHead, headKey)
			},
			want: &VerifyError{Seq: 1, Problem: ProblemHead},
		},
		{
			name:   "head malformed",
			attack: func(t *testing.T, s store.Store, recs []Record) { rawPut(t, s, bucketHead, headKey, []byte("{")) },
			want:   &VerifyError{Problem: ProblemHead},
		},
		{
			name:   "head hash not hex",
			attack: func(t *testing.T, s store.Store, recs []Record) { setHead(t, s, 3, "zz") },
			want:   &VerifyError{Problem: ProblemHead},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, s := newLog(t)
			recs := fill(t, l, 3)
			tt.attack(t, s, recs)
			before := rawGet(t, s, bucketRecords, recordKey(3))
			_, err := l.Append(context.Background(), sample(9))
			var ve *VerifyError
			if !errors.As(err, &ve) || !errors.Is(err, ErrTampered) {
				t.Fatalf("Append() = %v, want a *VerifyError wrapping ErrTampered", err)
			}
			if diff := cmp.Diff(tt.want, ve, cmpopts.IgnoreFields(VerifyError{}, "Detail")); diff != "" {
				t.Errorf("Append() error (-want +got):\n%s", diff)
			}
			if after := rawGet(t, s, bucketRecords, recordKey(3)); string(after) != string(before) {
				t.Errorf("Append overwrote record 3")
			}
		})
	}
}

func TestConcurrentAppend(t *testing.T) {
	const workers, each = 16, 40
	l, _ := newLog(t)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex // guards seqs
		seqs []uint64
	)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				r, err := l.Append(context.Background(), sample(w*each+i))
				if err != nil {
					t.Errorf("Append() = %v", err)
					return
				}
				mu.Lock()
				seqs = append(seqs, r.Seq)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.Sort(seqs)
	want := make([]uint64, workers*each)
	for i := range want {
		want[i] = uint64(i + 1)
	}
	if diff := cmp.Diff(want, seqs); diff != "" {
		t.Errorf("Seqs returned by concurrent appends (-want +got):\n%s", diff)
	}
	if res := mustVerify(t, l); res.Records != workers*each {
		t.Errorf("Verify().Records = %d, want %d", res.Records, workers*each)
	}
}

func TestRangeTail(t *testing.T) {
	l, _ := newLog(t)
	recs := fill(t, l, 5)
	tests := []struct {
		name string
		get  func() ([]Record, error)
		want []Record
	}{
		{"range from 0", func() ([]Record, error) { return l.Range(context.Background(), 0, 3) }, recs[:3]},
		{"range middle", func() ([]Record, error) { return l.Range(context.Background(), 2, 2) }, recs[1:3]},
		{"range past the end", func() ([]Record, error) { return l.Range(context.Background(), 4, 100) }, recs[3:]},
		{"range after head", func() ([]Record, error) { return l.Range(context.Background(), 6, 10) }, nil},
		{"range huge seq", func() ([]Record, error) { return l.Range(context.Background(), ^uint64(0), MaxRange) }, nil},
		{"range limit 0", func() ([]Record, error) { return l.Range(context.Background(), 1, 0) }, nil},
		{"range limit negative", func() ([]Record, error) { return l.Range(context.Background(), 1, -1) }, nil},
		{"tail 2", func() ([]Record, error) { return l.Tail(context.Background(), 2) }, recs[3:]},
		{"tail more than all", func() ([]Record, error) { return l.Tail(context.Background(), 10) }, recs},
		{"tail 0", func() ([]Record, error) { return l.Tail(context.Background(), 0) }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.get()
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestRangeCapped(t *testing.T) {
	l, _ := newLog(t)
	fill(t, l, MaxRange+5)
	for _, get := range []func() ([]Record, error){
		func() ([]Record, error) { return l.Range(context.Background(), 1, MaxRange+5) },
		func() ([]Record, error) { return l.Tail(context.Background(), MaxRange+5) },
	} {
		got, err := get()
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != MaxRange {
			t.Errorf("got %d records, want MaxRange = %d", len(got), MaxRange)
		}
	}
}

func TestEmptyLog(t *testing.T) {
	l, _ := newLog(t)
	if diff := cmp.Diff(&VerifyResult{Records: 0, Head: Genesis}, mustVerify(t, l)); diff != "" {
		t.Errorf("Verify() of an empty log (-want +got):\n%s", diff)
	}
	got, err := l.Tail(context.Background(), 5)
	if err != nil || len(got) != 0 {
		t.Errorf("Tail(5) of an empty log = %v, %v; want nothing", got, err)
	}
}

func TestRangeTampered(t *testing.T) {
	tests := []struct {
		name   string
		attack func(t *testing.T, s store.Store)
		want   *VerifyError
	}{
		{"record removed", func(t *testing.T, s store.Store) { rawDelete(t, s, bucketRecords, recordKey(2)) },
			&VerifyError{Seq: 2, Problem: ProblemGap}},
		{"record garbage", func(t *testing.T, s store.Store) { rawPut(t, s, bucketRecords, recordKey(2), []byte("{}")) },
			&VerifyError{Seq: 2, Problem: ProblemMalformed}},
		{"record moved", func(t *testing.T, s store.Store) {
			rawPut(t, s, bucketRecords, recordKey(2), rawGet(t, s, bucketRecords, recordKey(3)))
		}, &VerifyError{Seq: 2, Problem: ProblemKey}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, s := newLog(t)
			fill(t, l, 3)
			tt.attack(t, s)
			_, err := l.Range(context.Background(), 1, 10)
			var ve *VerifyError
			if !errors.As(err, &ve) || !errors.Is(err, ErrTampered) {
				t.Fatalf("Range() = %v, want a *VerifyError wrapping ErrTampered", err)
			}
			if diff := cmp.Diff(tt.want, ve, cmpopts.IgnoreFields(VerifyError{}, "Detail")); diff != "" {
				t.Errorf("Range() error (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseKey(t *testing.T) {
	tests := []struct {
		key    string
		want   uint64
		wantOK bool
	}{
		{"00000000000000000001", 1, true},
		{recordKey(^uint64(0)), ^uint64(0), true},
		{"00000000000000000000", 0, false},
		{"99999999999999999999", 0, false}, // overflows uint64
		{"18446744073709551616", 0, false}, // MaxUint64 + 1
		{"1", 0, false},
		{"0000000000000000001 ", 0, false},
		{"-0000000000000000001", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		got, ok := parseKey(tt.key)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("parseKey(%q) = %d, %v; want %d, %v", tt.key, got, ok, tt.want, tt.wantOK)
		}
	}
}

func BenchmarkAppend(b *testing.B) {
	l, _ := newLog(b)
	r := sample(0)
	for b.Loop() {
		if _, err := l.Append(context.Background(), r); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify1000(b *testing.B) {
	l, _ := newLog(b)
	fill(b, l, 1000)
	for b.Loop() {
		if _, err := l.Verify(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}

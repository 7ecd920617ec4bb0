package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/greatjail/cvm/kbs/store"
)

// Run runs the conformance suite against the store.Store implementation
// that open returns. Each subtest calls open once and must get a new,
// empty store; Run closes every store it opens, so open should register
// with t.Cleanup only what the store leaves behind (a temporary file, a
// database schema), not a second Close.
//
// Every promise in package store's documentation has a subtest here, and
// one behaviour it does not state yet: ScanDeleteVisited, writing to the
// scanned bucket (deleting or rewriting the visited key) from inside Scan's
// fn. The suite is meant to run under the race detector (go test -race).
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"GetPutDelete", testGetPutDelete},
		{"PutCopiesValue", testPutCopiesValue},
		{"GetReturnsCopy", testGetReturnsCopy},
		{"EmptyValue", testEmptyValue},
		{"ImplicitBuckets", testImplicitBuckets},
		{"ScanOrder", testScanOrder},
		{"ScanBucketIsolation", testScanBucketIsolation},
		{"ScanManyKeys", testScanManyKeys},
		{"ScanOwnWrites", testScanOwnWrites},
		{"ScanStopsOnError", testScanStopsOnError},
		{"ScanDeleteVisited", testScanDeleteVisited},
		{"UpdateRollback", testUpdateRollback},
		{"ViewReturnsError", testViewReturnsError},
		{"NextSequence", testNextSequence},
		{"ReadOnlyView", testReadOnlyView},
		{"NameLimits", testNameLimits},
		{"ValueLimit", testValueLimit},
		{"CancelledContext", testCancelledContext},
		{"SerializableUpdates", testSerializableUpdates},
		{"ViewSnapshot", testViewSnapshot},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close() = %v, want nil", err)
				}
			})
			tt.fn(t, s)
		})
	}
	// This one closes the store itself.
	t.Run("UseAfterClose", func(t *testing.T) { testUseAfterClose(t, open(t)) })
}

// errRollback is returned from Update functions that want their
// transaction rolled back.
var errRollback = errors.New("storetest: rollback requested by test")

// kv is one key and value as Scan reports them.
type kv struct {
	Key   string
	Value string
}

// mustUpdate runs fn in an Update and fails the test if it returns an error.
func mustUpdate(t *testing.T, s store.Store, fn func(store.Tx) error) {
	t.Helper()
	if err := s.Update(t.Context(), fn); err != nil {
		t.Fatalf("Update() = %v, want nil", err)
	}
}

// mustView runs fn in a View and fails the test if it returns an error.
func mustView(t *testing.T, s store.Store, fn func(store.Tx) error) {
	t.Helper()
	if err := s.View(t.Context(), fn); err != nil {
		t.Fatalf("View() = %v, want nil", err)
	}
}

// putAll commits every key of kvs to bucket in one Update.
func putAll(t *testing.T, s store.Store, bucket string, kvs []kv) {
	t.Helper()
	mustUpdate(t, s, func(tx store.Tx) error {
		for _, e := range kvs {
			if err := tx.Put(bucket, e.Key, []byte(e.Value)); err != nil {
				return fmt.Errorf("Put(%q, %q): %w", bucket, e.Key, err)
			}
		}
		return nil
	})
}

// scan returns what Scan visits, with values copied.
func scan(tx store.Tx, bucket, prefix string) ([]kv, error) {
	var got []kv
	err := tx.Scan(bucket, prefix, func(k string, v []byte) error {
		got = append(got, kv{k, string(v)})
		return nil
	})
	return got, err
}

// committed returns what a View sees in bucket.
func committed(t *testing.T, s store.Store, bucket string) []kv {
	t.Helper()
	var got []kv
	mustView(t, s, func(tx store.Tx) error {
		var err error
		got, err = scan(tx, bucket, "")
		return err
	})
	return got
}

// getResult is what Get returned, comparable with cmp.
type getResult struct {
	Value string
	Err   error
}

func get(tx store.Tx, bucket, key string) getResult {
	v, err := tx.Get(bucket, key)
	return getResult{string(v), err}
}

var cmpErrors = cmp.Comparer(func(a, b error) bool {
	if a == nil || b == nil {
		return a == b
	}
	return errors.Is(a, b) || errors.Is(b, a)
})

func testGetPutDelete(t *testing.T, s store.Store) {
	const b = "items"
	// Each step runs in its own Update, so every result is also checked
	// against committed state from the previous steps.
	steps := []struct {
		name string
		op   func(tx store.Tx) error
		key  string
		want getResult // Get(b, key) after op committed
	}{
		{"missing", nil, "k", getResult{"", store.ErrNotFound}},
		{"put", func(tx store.Tx) error { return tx.Put(b, "k", []byte("v1")) }, "k", getResult{"v1", nil}},
		{"overwrite", func(tx store.Tx) error { return tx.Put(b, "k", []byte("v2")) }, "k", getResult{"v2", nil}},
		{"other key untouched", func(tx store.Tx) error { return tx.Put(b, "k2", []byte("x")) }, "k", getResult{"v2", nil}},
		{"empty key is a key", func(tx store.Tx) error { return tx.Put(b, "", []byte("e")) }, "", getResult{"e", nil}},
		{"delete", func(tx store.Tx) error { return tx.Delete(b, "k") }, "k", getResult{"", store.ErrNotFound}},
		{"delete leaves other key", nil, "k2", getResult{"x", nil}},
		{"delete empty key", func(tx store.Tx) error { return tx.Delete(b, "") }, "", getResult{"", store.ErrNotFound}},
		{"put after delete", func(tx store.Tx) error { return tx.Put(b, "k", []byte("v3")) }, "k", getResult{"v3", nil}},
	}
	for _, st := range steps {
		if st.op != nil {
			mustUpdate(t, s, st.op)
		}
		var got getResult
		mustView(t, s, func(tx store.Tx) error { got = get(tx, b, st.key); return nil })
		if diff := cmp.Diff(st.want, got, cmpErrors); diff != "" {
			t.Errorf("%s: Get(%q, %q) mismatch (-want +got):\n%s", st.name, b, st.key, diff)
		}
	}

	// Delete of a missing key, in an existing and a never-written bucket.
	mustUpdate(t, s, func(tx store.Tx) error {
		for _, c := range []struct{ bucket, key string }{{b, "nope"}, {"never-written", "k"}} {
			if err := tx.Delete(c.bucket, c.key); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("Delete(%q, %q) = %v, want %v", c.bucket, c.key, err, store.ErrNotFound)
			}
		}
		// Inside one transaction: put, then delete, then delete again.
		if err := tx.Put(b, "tmp", []byte("t")); err != nil {
			return err
		}
		if err := tx.Delete(b, "tmp"); err != nil {
			t.Errorf("Delete(%q, tmp) after Put in same tx = %v, want nil", b, err)
		}
		if err := tx.Delete(b, "tmp"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("second Delete(%q, tmp) = %v, want %v", b, err, store.ErrNotFound)
		}
		if got := get(tx, b, "tmp"); !errors.Is(got.Err, store.ErrNotFound) {
			t.Errorf("Get(%q, tmp) after Delete in same tx = %+v, want ErrNotFound", b, got)
		}
		return nil
	})
	if diff := cmp.Diff([]kv{{"k", "v3"}, {"k2", "x"}}, committed(t, s, b)); diff != "" {
		t.Errorf("final contents mismatch (-want +got):\n%s", diff)
	}
}

func testPutCopiesValue(t *testing.T, s store.Store) {
	buf := []byte("original")
	mustUpdate(t, s, func(tx store.Tx) error {
		if err := tx.Put("b", "k", buf); err != nil {
			return err
		}
		copy(buf, "MUTATED!")
		if got := get(tx, "b", "k"); got.Value != "original" || got.Err != nil {
			t.Errorf("Get in same tx after mutating Put's slice = %+v, want {original <nil>}", got)
		}
		return nil
	})
	copy(buf, "mutated2")
	var got getResult
	mustView(t, s, func(tx store.Tx) error { got = get(tx, "b", "k"); return nil })
	if got.Value != "original" || got.Err != nil {
		t.Errorf("Get after commit and mutating Put's slice = %+v, want {original <nil>}", got)
	}
}

func testGetReturnsCopy(t *testing.T, s store.Store) {
	putAll(t, s, "b", []kv{{"k", "original"}})
	mutateAndReget := func(tx store.Tx, where string) {
		v, err := tx.Get("b", "k")
		if err != nil {
			t.Fatalf("%s: Get = %v", where, err)
		}
		for i := range v {
			v[i] = 'X'
		}
		if got := get(tx, "b", "k"); got.Value != "original" || got.Err != nil {
			t.Errorf("%s: Get after mutating the previous result = %+v, want {original <nil>}", where, got)
		}
	}
	mustView(t, s, func(tx store.Tx) error { mutateAndReget(tx, "View"); return nil })
	mustUpdate(t, s, func(tx store.Tx) error {
		mutateAndReget(tx, "Update, committed value")
		if err := tx.Put("b", "k", []byte("original")); err != nil {
			return err
		}
		mutateAndReget(tx, "Update, uncommitted value")
		return nil
	})
	mustView(t, s, func(tx store.Tx) error { mutateAndReget(tx, "View after Update"); return nil })
}

func testEmptyValue(t *testing.T, s store.Store) {
	mustUpdate(t, s, func(tx store.Tx) error {
		if err := tx.Put("b", "nil", nil); err != nil {
			return err
		}
		return tx.Put("b", "empty", []byte{})
	})
	mustView(t, s, func(tx store.Tx) error {
		for _, k := range []string{"nil", "empty"} {
			v, err := tx.Get("b", k)
			if err != nil || len(v) != 0 {
				t.Errorf("Get(b, %q) = %q, %v; want empty value, nil", k, v, err)
			}
		}
		return nil
	})
	if diff := cmp.Diff([]kv{{"empty", ""}, {"nil", ""}}, committed(t, s, "b")); diff != "" {
		t.Errorf("Scan of empty values mismatch (-want +got):\n%s", diff)
	}
	mustUpdate(t, s, func(tx store.Tx) error { return tx.Delete("b", "nil") })
	if diff := cmp.Diff([]kv{{"empty", ""}}, committed(t, s, "b")); diff != "" {
		t.Errorf("after Delete(b, nil) mismatch (-want +got):\n%s", diff)
	}
}

func testImplicitBuckets(t *testing.T, s store.Store) {
	check := func(tx store.Tx, where string) {
		if got := get(tx, "never", "k"); !errors.Is(got.Err, store.ErrNotFound) {
			t.Errorf("%s: Get from a never-written bucket = %+v, want ErrNotFound", where, got)
		}
		got, err := scan(tx, "never", "")
		if err != nil || len(got) != 0 {
			t.Errorf("%s: Scan of a never-written bucket = %v, %v; want nothing, nil", where, got, err)
		}
	}
	mustView(t, s, func(tx store.Tx) error { check(tx, "View"); return nil })
	mustUpdate(t, s, func(tx store.Tx) error { check(tx, "Update"); return nil })
	// A bucket emptied by deletes reads like a never-written one.
	putAll(t, s, "gone", []kv{{"k", "v"}})
	mustUpdate(t, s, func(tx store.Tx) error { return tx.Delete("gone", "k") })
	if got := committed(t, s, "gone"); len(got) != 0 {
		t.Errorf("Scan of emptied bucket = %v, want nothing", got)
	}
}

// orderKeys are byte strings whose byte order differs from any ordering by
// length, by rune, or with 0x00 treated as a terminator.
var orderKeys = []string{
	"", "\x00", "\x00\x00", "\x00\xff", "\x01", "a", "a\x00", "a\x00\x00",
	"a\x01", "aa", "ab", "a\xff", "a\xff\x00", "a\xff\xff", "b", "\x7f",
	"\x80", "\xc3\xa9", "\xff", "\xff\x00", "\xff\xff", "\xff\xff\xff",
}

func testScanOrder(t *testing.T, s store.Store) {
	// Insert in an order unrelated to the sorted order, over two commits,
	// so both committed and uncommitted entries are scanned.
	shuffled := []int{7, 19, 2, 13, 0, 21, 10, 4, 16, 1, 12, 8, 20, 5, 17, 3, 14, 9, 18, 6, 11, 15}
	if len(shuffled) != len(orderKeys) || !slices.IsSorted(orderKeys) {
		t.Fatalf("test bug: %d shuffled indexes for %d keys, or keys not sorted", len(shuffled), len(orderKeys))
	}
	var first, second []kv
	for n, i := range shuffled {
		e := kv{orderKeys[i], fmt.Sprintf("v%d", i)}
		if n%2 == 0 {
			first = append(first, e)
		} else {
			second = append(second, e)
		}
	}
	putAll(t, s, "o", first)

	tests := []struct {
		prefix string
		want   []string
	}{
		{"", orderKeys},
		{"\x00", []string{"\x00", "\x00\x00", "\x00\xff"}},
		{"\x00\x00", []string{"\x00\x00"}},
		{"a", []string{"a", "a\x00", "a\x00\x00", "a\x01", "aa", "ab", "a\xff", "a\xff\x00", "a\xff\xff"}},
		{"a\x00", []string{"a\x00", "a\x00\x00"}},
		{"a\xff", []string{"a\xff", "a\xff\x00", "a\xff\xff"}},
		{"a\xff\xff", []string{"a\xff\xff"}},
		{"\xff", []string{"\xff", "\xff\x00", "\xff\xff", "\xff\xff\xff"}},
		{"\xff\xff", []string{"\xff\xff", "\xff\xff\xff"}},
		{"\xff\xff\xff\xff", nil},
		{"c", nil},
		{"\x7f", []string{"\x7f"}},
		{"\xc3", []string{"\xc3\xa9"}},
	}
	want := func(keys []string) []kv {
		var out []kv
		for _, k := range keys {
			for i, ok := range orderKeys {
				if ok == k {
					out = append(out, kv{k, fmt.Sprintf("v%d", i)})
				}
			}
		}
		return out
	}
	check := func(tx store.Tx, where string) {
		for _, tt := range tests {
			got, err := scan(tx, "o", tt.prefix)
			if err != nil {
				t.Errorf("%s: Scan(o, %q) = %v", where, tt.prefix, err)
				continue
			}
			if diff := cmp.Diff(want(tt.want), got); diff != "" {
				t.Errorf("%s: Scan(o, %q) mismatch (-want +got):\n%s", where, tt.prefix, diff)
			}
		}
	}
	mustUpdate(t, s, func(tx store.Tx) error {
		for _, e := range second {
			if err := tx.Put("o", e.Key, []byte(e.Value)); err != nil {
				return err
			}
		}
		check(tx, "Update, half uncommitted")
		return nil
	})
	mustView(t, s, func(tx store.Tx) error { check(tx, "View"); return nil })
}

func testScanBucketIsolation(t *testing.T, s store.Store) {
	// Bucket names that are prefixes of each other, or differ only in a
	// 0x00 or 0xff byte, must not leak keys into each other.
	buckets := []string{"s", "s2", "s\x00", "s\x00k", "s\xff", "t"}
	for _, b := range buckets {
		putAll(t, s, b, []kv{{"k", "in " + b}, {"k2", "in " + b}})
	}
	mustView(t, s, func(tx store.Tx) error {
		for _, b := range buckets {
			got, err := scan(tx, b, "")
			if err != nil {
				return err
			}
			want := []kv{{"k", "in " + b}, {"k2", "in " + b}}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Scan(%q) mismatch (-want +got):\n%s", b, diff)
			}
		}
		return nil
	})
}

func testScanManyKeys(t *testing.T, s store.Store) {
	// Enough keys to span several pages or result batches of a backend.
	const n = 2000
	var all []kv
	for i := range n {
		all = append(all, kv{fmt.Sprintf("%c/%06d", 'a'+i%3, i), strings.Repeat("x", i%50)})
	}
	putAll(t, s, "many", all)
	want := map[string][]kv{}
	for _, e := range all {
		want[e.Key[:2]] = append(want[e.Key[:2]], e)
	}
	mustView(t, s, func(tx store.Tx) error {
		for _, p := range []string{"a/", "b/", "c/"} {
			got, err := scan(tx, "many", p)
			if err != nil {
				return err
			}
			if diff := cmp.Diff(want[p], got); diff != "" {
				t.Errorf("Scan(many, %q) mismatch (-want +got):\n%s", p, diff)
			}
		}
		return nil
	})
}

func testScanOwnWrites(t *testing.T, s store.Store) {
	putAll(t, s, "w", []kv{{"a", "1"}, {"b", "1"}, {"c", "1"}, {"d", "1"}})
	err := s.Update(t.Context(), func(tx store.Tx) error {
		ops := []error{
			tx.Delete("w", "a"),
			tx.Put("w", "b", []byte("2")),
			tx.Put("w", "bb", []byte("new")),
			tx.Delete("w", "d"),
			tx.Put("w", "d", []byte("again")),
			tx.Put("w", "e", []byte("new")),
			tx.Put("w", "f", []byte("gone")),
			tx.Delete("w", "f"),
		}
		if err := errors.Join(ops...); err != nil {
			return err
		}
		got, err := scan(tx, "w", "")
		if err != nil {
			return err
		}
		want := []kv{{"b", "2"}, {"bb", "new"}, {"c", "1"}, {"d", "again"}, {"e", "new"}}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Scan inside Update mismatch (-want +got):\n%s", diff)
		}
		got, err = scan(tx, "w", "b")
		if err != nil {
			return err
		}
		if diff := cmp.Diff([]kv{{"b", "2"}, {"bb", "new"}}, got); diff != "" {
			t.Errorf("Scan(w, b) inside Update mismatch (-want +got):\n%s", diff)
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatalf("Update() = %v, want %v", err, errRollback)
	}
	if diff := cmp.Diff([]kv{{"a", "1"}, {"b", "1"}, {"c", "1"}, {"d", "1"}}, committed(t, s, "w")); diff != "" {
		t.Errorf("after rollback mismatch (-want +got):\n%s", diff)
	}
}

func testScanStopsOnError(t *testing.T, s store.Store) {
	putAll(t, s, "st", []kv{{"a", "1"}, {"b", "2"}, {"c", "3"}, {"d", "4"}})
	errStop := errors.New("stop here")
	check := func(tx store.Tx, where string) {
		var seen []string
		err := tx.Scan("st", "", func(k string, _ []byte) error {
			seen = append(seen, k)
			if k == "b" {
				return fmt.Errorf("wrapped: %w", errStop)
			}
			return nil
		})
		if !errors.Is(err, errStop) {
			t.Errorf("%s: Scan = %v, want the error fn returned", where, err)
		}
		if diff := cmp.Diff([]string{"a", "b"}, seen); diff != "" {
			t.Errorf("%s: keys visited mismatch (-want +got):\n%s", where, diff)
		}
	}
	mustView(t, s, func(tx store.Tx) error { check(tx, "View"); return nil })
	mustUpdate(t, s, func(tx store.Tx) error { check(tx, "Update"); return nil })
}

// testScanDeleteVisited checks the expiry-sweep pattern: deleting (and
// rewriting) the key being visited from inside Scan's fn, over keys of
// which half are committed and half written earlier in the same
// transaction. Package store does not spell this out yet.
func testScanDeleteVisited(t *testing.T, s store.Store) {
	const n = 600
	key := func(i int) string { return fmt.Sprintf("n/%04d", i) }
	var committedHalf []kv
	for i := 0; i < n; i += 2 {
		committedHalf = append(committedHalf, kv{key(i), "v"})
	}
	committedHalf = append(committedHalf, kv{"o/keep", "v"})
	putAll(t, s, "sweep", committedHalf)
	mustUpdate(t, s, func(tx store.Tx) error {
		for i := 1; i < n; i += 2 {
			if err := tx.Put("sweep", key(i), []byte("v")); err != nil {
				return err
			}
		}
		var seen int
		err := tx.Scan("sweep", "n/", func(k string, _ []byte) error {
			if k != key(seen) {
				return fmt.Errorf("visit %d: key %q, want %q", seen, k, key(seen))
			}
			seen++
			if seen%3 == 0 {
				return tx.Put("sweep", k, []byte("rewritten"))
			}
			return tx.Delete("sweep", k)
		})
		if err != nil {
			return err
		}
		if seen != n {
			t.Errorf("Scan visited %d keys while deleting them, want %d", seen, n)
		}
		return nil
	})
	var want []kv
	for i := 2; i < n; i += 3 {
		want = append(want, kv{key(i), "rewritten"})
	}
	want = append(want, kv{"o/keep", "v"})
	if diff := cmp.Diff(want, committed(t, s, "sweep")); diff != "" {
		t.Errorf("after sweep mismatch (-want +got):\n%s", diff)
	}
}

func testUpdateRollback(t *testing.T, s store.Store) {
	mustUpdate(t, s, func(tx store.Tx) error {
		if err := errors.Join(tx.Put("r", "a", []byte("a1")), tx.Put("r", "b", []byte("b1"))); err != nil {
			return err
		}
		n, err := tx.NextSequence("r")
		if err != nil || n != 1 {
			return fmt.Errorf("NextSequence(r) = %d, %v; want 1, nil", n, err)
		}
		return nil
	})
	errBoom := errors.New("boom")
	err := s.Update(t.Context(), func(tx store.Tx) error {
		ops := []error{
			tx.Put("r", "a", []byte("a2")),
			tx.Put("r", "c", []byte("c2")),
			tx.Delete("r", "b"),
			tx.Put("other", "x", []byte("x")),
		}
		if err := errors.Join(ops...); err != nil {
			return err
		}
		for _, b := range []string{"r", "r", "fresh"} {
			if _, err := tx.NextSequence(b); err != nil {
				return err
			}
		}
		return errBoom
	})
	if !errors.Is(err, errBoom) {
		t.Fatalf("Update() = %v, want the error fn returned (%v)", err, errBoom)
	}
	if diff := cmp.Diff([]kv{{"a", "a1"}, {"b", "b1"}}, committed(t, s, "r")); diff != "" {
		t.Errorf("bucket r after rollback mismatch (-want +got):\n%s", diff)
	}
	if got := committed(t, s, "other"); len(got) != 0 {
		t.Errorf("bucket other after rollback = %v, want nothing", got)
	}
	mustUpdate(t, s, func(tx store.Tx) error {
		for _, c := range []struct {
			bucket string
			want   uint64
		}{{"r", 2}, {"fresh", 1}} {
			if got, err := tx.NextSequence(c.bucket); err != nil || got != c.want {
				t.Errorf("NextSequence(%q) after rollback = %d, %v; want %d, nil", c.bucket, got, err, c.want)
			}
		}
		return nil
	})
}

func testViewReturnsError(t *testing.T, s store.Store) {
	errBoom := errors.New("boom")
	if err := s.View(t.Context(), func(store.Tx) error { return errBoom }); !errors.Is(err, errBoom) {
		t.Errorf("View() = %v, want the error fn returned (%v)", err, errBoom)
	}
}

func testNextSequence(t *testing.T, s store.Store) {
	next := func(tx store.Tx, b string) uint64 {
		t.Helper()
		n, err := tx.NextSequence(b)
		if err != nil {
			t.Fatalf("NextSequence(%q) = %v", b, err)
		}
		return n
	}
	var got []uint64
	mustUpdate(t, s, func(tx store.Tx) error {
		got = append(got, next(tx, "a"), next(tx, "a"), next(tx, "b"), next(tx, "a"))
		return nil
	})
	mustUpdate(t, s, func(tx store.Tx) error {
		got = append(got, next(tx, "a"), next(tx, "b"), next(tx, "c"))
		return nil
	})
	if diff := cmp.Diff([]uint64{1, 2, 1, 3, 4, 2, 1}, got); diff != "" {
		t.Errorf("sequence values mismatch (-want +got):\n%s", diff)
	}
	// The counter is not a key: it neither shows in Scan nor changes
	// when the bucket's keys are written or all deleted.
	if got := committed(t, s, "a"); len(got) != 0 {
		t.Errorf("Scan of a bucket with only a sequence = %v, want nothing", got)
	}
	putAll(t, s, "a", []kv{{"k", "v"}})
	mustUpdate(t, s, func(tx store.Tx) error { return tx.Delete("a", "k") })
	mustUpdate(t, s, func(tx store.Tx) error {
		if n := next(tx, "a"); n != 5 {
			t.Errorf("NextSequence(a) after writing and deleting keys = %d, want 5", n)
		}
		return nil
	})
}

func testReadOnlyView(t *testing.T, s store.Store) {
	putAll(t, s, "ro", []kv{{"k", "v"}})
	mustView(t, s, func(tx store.Tx) error {
		ops := []struct {
			name string
			err  error
		}{
			{"Put existing", tx.Put("ro", "k", []byte("w"))},
			{"Put new", tx.Put("ro", "new", []byte("w"))},
			{"Put new bucket", tx.Put("ro2", "k", []byte("w"))},
			{"Delete existing", tx.Delete("ro", "k")},
			{"Delete missing", tx.Delete("ro", "missing")},
		}
		for _, op := range ops {
			if !errors.Is(op.err, store.ErrReadOnly) {
				t.Errorf("%s in View = %v, want %v", op.name, op.err, store.ErrReadOnly)
			}
		}
		if _, err := tx.NextSequence("ro"); !errors.Is(err, store.ErrReadOnly) {
			t.Errorf("NextSequence in View = %v, want %v", err, store.ErrReadOnly)
		}
		if got := get(tx, "ro", "k"); got.Value != "v" || got.Err != nil {
			t.Errorf("Get after refused writes = %+v, want {v <nil>}", got)
		}
		return nil
	})
	if diff := cmp.Diff([]kv{{"k", "v"}}, committed(t, s, "ro")); diff != "" {
		t.Errorf("after View mismatch (-want +got):\n%s", diff)
	}
	if got := committed(t, s, "ro2"); len(got) != 0 {
		t.Errorf("bucket written in View = %v, want nothing", got)
	}
	mustUpdate(t, s, func(tx store.Tx) error {
		if n, err := tx.NextSequence("ro"); err != nil || n != 1 {
			t.Errorf("NextSequence after refused call in View = %d, %v; want 1, nil", n, err)
		}
		return nil
	})
}

func testNameLimits(t *testing.T, s store.Store) {
	okBucket := strings.Repeat("b", store.MaxBucketLen)
	okKey := strings.Repeat("k", store.MaxKeyLen)
	longBucket := strings.Repeat("b", store.MaxBucketLen+1)
	longKey := strings.Repeat("k", store.MaxKeyLen+1)
	noop := func(string, []byte) error { return nil }
	// is reports whether err is what the table wants: nil, or wrapping want.
	is := func(err, want error) bool {
		if want == nil {
			return err == nil
		}
		return errors.Is(err, want)
	}
	tests := []struct {
		name      string
		bucket    string
		key       string
		want      error // for every operation on (bucket, key)
		bucketErr error // for operations that take only the bucket
	}{
		{"empty bucket", "", "k", store.ErrTooLarge, store.ErrTooLarge},
		{"bucket over limit", longBucket, "k", store.ErrTooLarge, store.ErrTooLarge},
		{"key over limit", "b", longKey, store.ErrTooLarge, nil},
		{"bucket at limit", okBucket, "k", nil, nil},
		{"key at limit", "b", okKey, nil, nil},
		{"both at limit", okBucket, okKey, nil, nil},
	}
	for _, tt := range tests {
		mustUpdate(t, s, func(tx store.Tx) error {
			// In order: Put, read back, Scan with the key as prefix,
			// Delete, then Put again for the View below.
			ops := []struct {
				op   string
				err  error
				want error
			}{
				{"Put", tx.Put(tt.bucket, tt.key, []byte("v")), tt.want},
				{"Get", get(tx, tt.bucket, tt.key).Err, tt.want},
				{"Scan(prefix=key)", tx.Scan(tt.bucket, tt.key, noop), tt.want},
				{"Delete", tx.Delete(tt.bucket, tt.key), tt.want},
				{"Scan(prefix=\"\")", tx.Scan(tt.bucket, "", noop), tt.bucketErr},
				{"NextSequence", func() error { _, err := tx.NextSequence(tt.bucket); return err }(), tt.bucketErr},
				{"Put again", tx.Put(tt.bucket, tt.key, []byte("v")), tt.want},
			}
			for _, o := range ops {
				if !is(o.err, o.want) {
					t.Errorf("%s: %s(bucket of %d bytes, key of %d bytes) in Update = %v, want %v",
						tt.name, o.op, len(tt.bucket), len(tt.key), o.err, o.want)
				}
			}
			return nil
		})
		mustView(t, s, func(tx store.Tx) error {
			if got := get(tx, tt.bucket, tt.key); !is(got.Err, tt.want) {
				t.Errorf("%s: Get in View = %v, want %v", tt.name, got.Err, tt.want)
			}
			if err := tx.Scan(tt.bucket, "", noop); !is(err, tt.bucketErr) {
				t.Errorf("%s: Scan(prefix=\"\") in View = %v, want %v", tt.name, err, tt.bucketErr)
			}
			return nil
		})
	}
	// Nothing over the limits was stored.
	for _, c := range []struct {
		bucket string
		want   []int // key lengths
	}{{"b", []int{store.MaxKeyLen}}, {okBucket, []int{1, store.MaxKeyLen}}} {
		var got []int
		for _, e := range committed(t, s, c.bucket) {
			got = append(got, len(e.Key))
		}
		if diff := cmp.Diff(c.want, got); diff != "" {
			t.Errorf("key lengths in bucket of %d bytes mismatch (-want +got):\n%s", len(c.bucket), diff)
		}
	}
}

func testValueLimit(t *testing.T, s store.Store) {
	// Kept cheap: the value at the limit is written and read back in a
	// transaction that is then rolled back, so nothing large is committed.
	big := make([]byte, store.MaxValueLen+1)
	big[0], big[store.MaxValueLen-1], big[store.MaxValueLen] = 1, 2, 3
	err := s.Update(t.Context(), func(tx store.Tx) error {
		if err := tx.Put("v", "over", big); !errors.Is(err, store.ErrTooLarge) {
			t.Errorf("Put(value of MaxValueLen+1 bytes) = %v, want %v", err, store.ErrTooLarge)
		}
		if got := get(tx, "v", "over"); !errors.Is(got.Err, store.ErrNotFound) {
			t.Errorf("Get after refused Put = err %v, want %v", got.Err, store.ErrNotFound)
		}
		if err := tx.Put("v", "at", big[:store.MaxValueLen]); err != nil {
			t.Errorf("Put(value of MaxValueLen bytes) = %v, want nil", err)
			return errRollback
		}
		v, err := tx.Get("v", "at")
		if err != nil || !bytes.Equal(v, big[:store.MaxValueLen]) {
			t.Errorf("Get of the MaxValueLen value = %d bytes, %v; want the %d bytes put", len(v), err, store.MaxValueLen)
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Errorf("Update() = %v, want %v", err, errRollback)
	}
	// A refused Put leaves the transaction usable and stores nothing.
	mustUpdate(t, s, func(tx store.Tx) error {
		if err := tx.Put("v", "over", big); !errors.Is(err, store.ErrTooLarge) {
			t.Errorf("Put(value of MaxValueLen+1 bytes) = %v, want %v", err, store.ErrTooLarge)
		}
		return tx.Put("v", "small", []byte("s"))
	})
	if diff := cmp.Diff([]kv{{"small", "s"}}, committed(t, s, "v")); diff != "" {
		t.Errorf("after refused Put mismatch (-want +got):\n%s", diff)
	}
}

func testCancelledContext(t *testing.T, s store.Store) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	called := false
	err := s.Update(ctx, func(tx store.Tx) error {
		called = true
		return tx.Put("c", "k", []byte("v"))
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Update(cancelled ctx) = %v, want %v", err, context.Canceled)
	}
	if called {
		t.Errorf("Update(cancelled ctx) ran fn")
	}
	called = false
	err = s.View(ctx, func(store.Tx) error { called = true; return nil })
	if !errors.Is(err, context.Canceled) {
		t.Errorf("View(cancelled ctx) = %v, want %v", err, context.Canceled)
	}
	if called {
		t.Errorf("View(cancelled ctx) ran fn")
	}
	if got := committed(t, s, "c"); len(got) != 0 {
		t.Errorf("after Update(cancelled ctx) bucket holds %v, want nothing", got)
	}
}

func testSerializableUpdates(t *testing.T, s store.Store) {
	const workers, increments = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for range increments {
				err := s.Update(context.Background(), func(tx store.Tx) error {
					n := 0
					v, err := tx.Get("ctr", "n")
					switch {
					case errors.Is(err, store.ErrNotFound):
					case err != nil:
						return err
					default:
						if _, err := fmt.Sscan(string(v), &n); err != nil {
							return fmt.Errorf("counter %q: %w", v, err)
						}
					}
					return tx.Put("ctr", "n", fmt.Appendf(nil, "%d", n+1))
				})
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Update in worker = %v", err)
	}
	if diff := cmp.Diff([]kv{{"n", fmt.Sprint(workers * increments)}}, committed(t, s, "ctr")); diff != "" {
		t.Errorf("counter after %d concurrent increments mismatch (-want +got):\n%s", workers*increments, diff)
	}
}

func testViewSnapshot(t *testing.T, s store.Store) {
	// Updaters move units between accounts, keeping the total, and bump a
	// version key in the same transaction, until the viewers are done.
	// Each viewer reads the state several times in one View, pausing in
	// between so that Updates can commit meanwhile, and must see the same
	// consistent state every time. The test does not require Updates to
	// progress while a View is open: a store may make them wait.
	const accounts, total = 4, 400
	start := make([]kv, accounts)
	for i := range start {
		start[i] = kv{fmt.Sprintf("acct/%d", i), fmt.Sprint(total / accounts)}
	}
	putAll(t, s, "snap", append(start, kv{"version", "0"}))

	num := func(tx store.Tx, k string) (int, error) {
		v, err := tx.Get("snap", k)
		if err != nil {
			return 0, err
		}
		var n int
		_, err = fmt.Sscan(string(v), &n)
		return n, err
	}
	put := func(tx store.Tx, k string, n int) error {
		return tx.Put("snap", k, fmt.Appendf(nil, "%d", n))
	}
	const updaters, viewers, views, rereads = 2, 3, 30, 3
	var updates atomic.Int64
	stop := make(chan struct{})
	var updWG, viewWG sync.WaitGroup
	errs := make(chan error, updaters+viewers)
	for u := range updaters {
		updWG.Go(func() {
			for r := 0; ; r++ {
				select {
				case <-stop:
					return
				default:
				}
				from, to := fmt.Sprintf("acct/%d", (u+r)%accounts), fmt.Sprintf("acct/%d", (u+2*r+1)%accounts)
				err := s.Update(context.Background(), func(tx store.Tx) error {
					a, err := num(tx, from)
					if err != nil {
						return err
					}
					if err := put(tx, from, a-1); err != nil {
						return err
					}
					b, err := num(tx, to)
					if err != nil {
						return err
					}
					ver, err := num(tx, "version")
					if err != nil {
						return err
					}
					return errors.Join(put(tx, to, b+1), put(tx, "version", ver+1))
				})
				if err != nil {
					errs <- fmt.Errorf("updater %d: %w", u, err)
					return
				}
				updates.Add(1)
			}
		})
	}
	for v := range viewers {
		viewWG.Go(func() {
			for range views {
				err := s.View(context.Background(), func(tx store.Tx) error {
					read := func() (string, error) {
						ver, err := num(tx, "version")
						if err != nil {
							return "", err
						}
						got, err := scan(tx, "snap", "acct/")
						if err != nil {
							return "", err
						}
						sum := 0
						for _, e := range got {
							var n int
							if _, err := fmt.Sscan(e.Value, &n); err != nil {
								return "", err
							}
							sum += n
						}
						if sum != total {
							return "", fmt.Errorf("accounts sum to %d, want %d: %v", sum, total, got)
						}
						return fmt.Sprint("version ", ver, got), nil
					}
					first, err := read()
					if err != nil {
						return err
					}
					for range rereads {
						time.Sleep(100 * time.Microsecond)
						again, err := read()
						if err != nil {
							return err
						}
						if again != first {
							return fmt.Errorf("state changed inside one View: %s, then %s", first, again)
						}
					}
					return nil
				})
				if err != nil {
					errs <- fmt.Errorf("viewer %d: %w", v, err)
					return
				}
			}
		})
	}
	viewWG.Wait()
	close(stop)
	updWG.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	n := updates.Load()
	if n == 0 {
		t.Errorf("no Update committed while the viewers ran")
	}
	mustView(t, s, func(tx store.Tx) error {
		if ver, err := num(tx, "version"); err != nil || int64(ver) != n {
			t.Errorf("version after updates = %d, %v; want %d", ver, err, n)
		}
		return nil
	})
}

func testUseAfterClose(t *testing.T, s store.Store) {
	putAll(t, s, "b", []kv{{"k", "v"}})
	if err := s.Close(); err != nil {
		t.Fatalf("Close() = %v, want nil", err)
	}
	called := false
	if err := s.Update(t.Context(), func(tx store.Tx) error { called = true; return nil }); err == nil {
		t.Errorf("Update after Close = nil, want an error")
	}
	if err := s.View(t.Context(), func(tx store.Tx) error { called = true; return nil }); err == nil {
		t.Errorf("View after Close = nil, want an error")
	}
	if called {
		t.Errorf("a transaction function ran after Close")
	}
}

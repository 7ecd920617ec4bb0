package boltstore_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/greatjail/cvm/kbs/store"
	"github.com/greatjail/cvm/kbs/store/boltstore"
	"github.com/greatjail/cvm/kbs/store/storetest"
	bolt "go.etcd.io/bbolt"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return open(t, filepath.Join(t.TempDir(), "kbs.db"))
	})
}

// open opens path with default options, failing the test on error. The
// caller closes the store.
func open(t testing.TB, path string) *boltstore.Store {
	t.Helper()
	s, err := boltstore.Open(path, boltstore.Options{})
	if err != nil {
		t.Fatalf("Open(%s) = %v", path, err)
	}
	return s
}

type entry struct {
	Bucket, Key, Value string
}

// dump returns every entry of the given buckets, in Scan order.
func dump(t *testing.T, s store.Store, buckets ...string) []entry {
	t.Helper()
	var got []entry
	err := s.View(t.Context(), func(tx store.Tx) error {
		for _, b := range buckets {
			err := tx.Scan(b, "", func(k string, v []byte) error {
				got = append(got, entry{b, k, string(v)})
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("View() = %v", err)
	}
	return got
}

// sequences returns the next value of each bucket's counter without
// keeping it (the Update is rolled back).
func sequences(t *testing.T, s store.Store, buckets ...string) []uint64 {
	t.Helper()
	errPeek := errors.New("peek")
	var got []uint64
	err := s.Update(t.Context(), func(tx store.Tx) error {
		for _, b := range buckets {
			n, err := tx.NextSequence(b)
			if err != nil {
				return err
			}
			got = append(got, n)
		}
		return errPeek
	})
	if !errors.Is(err, errPeek) {
		t.Fatalf("Update() = %v", err)
	}
	return got
}

// TestReopen checks that data and sequences survive Close and Open, twice.
func TestReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kbs.db")
	want := []entry{
		{"a", "", "empty key"},
		{"a", "\x00", "zero"},
		{"a", "k", ""},
		{"a", "k\xff", "ff"},
		{"b", "x", strings.Repeat("v", 5000)},
		{"c\x00", "y", "odd bucket name"},
	}
	buckets := []string{"a", "b", "c\x00", "seq-only"}
	s := open(t, path)
	err := s.Update(t.Context(), func(tx store.Tx) error {
		for _, e := range want {
			if err := tx.Put(e.Bucket, e.Key, []byte(e.Value)); err != nil {
				return err
			}
		}
		for _, b := range []string{"a", "a", "a", "seq-only"} {
			if _, err := tx.NextSequence(b); err != nil {
				return err
			}
		}
		return tx.Put("b", "deleted", []byte("soon"))
	})
	if err != nil {
		t.Fatalf("Update() = %v", err)
	}
	if err := s.Update(t.Context(), func(tx store.Tx) error { return tx.Delete("b", "deleted") }); err != nil {
		t.Fatalf("Update(Delete) = %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	for round := range 2 {
		s := open(t, path)
		if diff := cmp.Diff(want, dump(t, s, buckets...)); diff != "" {
			t.Errorf("reopen %d: contents mismatch (-want +got):\n%s", round, diff)
		}
		if diff := cmp.Diff([]uint64{4, 1, 1, 2}, sequences(t, s, buckets...)); diff != "" {
			t.Errorf("reopen %d: next sequences mismatch (-want +got):\n%s", round, diff)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("Close() = %v", err)
		}
	}
}

func TestOpenCreatesPrivateFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kbs.db")
	s := open(t, path)
	defer s.Close()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("mode of new store file = %v, want %v", got, os.FileMode(0o600))
	}
}

func TestOpenLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kbs.db")
	holder := open(t, path)
	tests := []struct {
		name    string
		opts    boltstore.Options
		minWait time.Duration
	}{
		{"short timeout", boltstore.Options{Timeout: 50 * time.Millisecond}, 0},
		// Zero means DefaultTimeout (1s), not bbolt's "wait forever".
		{"default timeout", boltstore.Options{}, boltstore.DefaultTimeout - 100*time.Millisecond},
	}
	for _, tt := range tests {
		start := time.Now()
		s, err := boltstore.Open(path, tt.opts)
		waited := time.Since(start)
		if err == nil {
			s.Close()
			t.Fatalf("%s: second Open = nil error, want %v", tt.name, boltstore.ErrLocked)
		}
		if !errors.Is(err, boltstore.ErrLocked) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: second Open = %v, want %v naming %s", tt.name, err, boltstore.ErrLocked, path)
		}
		if waited < tt.minWait {
			t.Errorf("%s: second Open failed after %v, want at least %v", tt.name, waited, tt.minWait)
		}
	}
	if err := holder.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	s := open(t, path) // the lock went with Close
	s.Close()
}

func TestOpenRejects(t *testing.T) {
	dir := t.TempDir()
	foreign := filepath.Join(dir, "foreign.db")
	db, err := bolt.Open(foreign, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("other")); return err })
	if err := errors.Join(err, db.Close()); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(garbage, []byte(strings.Repeat("not a bbolt file\n", 1000)), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		path string
		want error // nil: any error
	}{
		{"foreign bbolt file", foreign, boltstore.ErrFormat},
		{"not a bbolt file", garbage, nil},
		{"missing directory", filepath.Join(dir, "no", "such", "kbs.db"), nil},
		{"directory", dir, nil},
	}
	for _, tt := range tests {
		s, err := boltstore.Open(tt.path, boltstore.Options{Timeout: 50 * time.Millisecond})
		if err == nil {
			s.Close()
			t.Errorf("%s: Open = nil error, want one", tt.name)
			continue
		}
		if tt.want != nil && !errors.Is(err, tt.want) {
			t.Errorf("%s: Open = %v, want %v", tt.name, err, tt.want)
		}
		if !strings.Contains(err.Error(), tt.path) {
			t.Errorf("%s: Open = %v, want the error to name %s", tt.name, err, tt.path)
		}
	}
	// The failed Open released the foreign file and left it unchanged.
	db, err = bolt.Open(foreign, 0o600, &bolt.Options{Timeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatalf("bbolt open after refused Open = %v (lock not released?)", err)
	}
	defer db.Close()
	var names []string
	err = db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, _ *bolt.Bucket) error { names = append(names, string(name)); return nil })
	})
	if err != nil || !cmp.Equal(names, []string{"other"}) {
		t.Errorf("buckets of foreign file after refused Open = %q, %v; want [other]", names, err)
	}
}

// TestTxAfterReturn checks that a Tx kept past its function fails cleanly
// instead of touching bbolt memory that is no longer mapped.
func TestTxAfterReturn(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "kbs.db"))
	defer s.Close()
	var kept []store.Tx
	if err := s.Update(t.Context(), func(tx store.Tx) error { kept = append(kept, tx); return tx.Put("b", "k", []byte("v")) }); err != nil {
		t.Fatal(err)
	}
	if err := s.View(t.Context(), func(tx store.Tx) error { kept = append(kept, tx); return nil }); err != nil {
		t.Fatal(err)
	}
	for i, tx := range kept {
		_, errGet := tx.Get("b", "k")
		_, errSeq := tx.NextSequence("b")
		errs := map[string]error{
			"Get":          errGet,
			"Put":          tx.Put("b", "k", []byte("late")),
			"Delete":       tx.Delete("b", "k"),
			"Scan":         tx.Scan("b", "", func(string, []byte) error { return nil }),
			"NextSequence": errSeq,
		}
		for op, err := range errs {
			if err == nil {
				t.Errorf("tx %d: %s after the function returned = nil, want an error", i, op)
			}
		}
	}
	if diff := cmp.Diff([]entry{{"b", "k", "v"}}, dump(t, s, "b")); diff != "" {
		t.Errorf("contents mismatch (-want +got):\n%s", diff)
	}
}

// TestScanValueWritable checks that fn may write into the value Scan gives
// it (bbolt's own memory is a read-only map) without changing the store.
func TestScanValueWritable(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "kbs.db"))
	defer s.Close()
	if err := s.Update(t.Context(), func(tx store.Tx) error {
		return errors.Join(tx.Put("b", "k1", []byte("v1")), tx.Put("b", "k2", []byte("v2")))
	}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"View", "Update"} {
		run := s.View
		if name == "Update" {
			run = s.Update
		}
		err := run(t.Context(), func(tx store.Tx) error {
			return tx.Scan("b", "", func(_ string, v []byte) error {
				for i := range v {
					v[i] = 'X'
				}
				return nil
			})
		})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if diff := cmp.Diff([]entry{{"b", "k1", "v1"}, {"b", "k2", "v2"}}, dump(t, s, "b")); diff != "" {
		t.Errorf("contents after writing into Scan values mismatch (-want +got):\n%s", diff)
	}
}

// BenchmarkUpdate is one small Put per transaction, each synced to disk:
// it measures the commit and sync path, mostly the disk's sync latency.
func BenchmarkUpdate(b *testing.B) {
	s := open(b, filepath.Join(b.TempDir(), "kbs.db"))
	defer s.Close()
	value := []byte(strings.Repeat("v", 64))
	i := 0
	for b.Loop() {
		key := fmt.Sprintf("k/%08d", i)
		i++
		if err := s.Update(b.Context(), func(tx store.Tx) error { return tx.Put("bench", key, value) }); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkView is one Get per read-only transaction over 10,000 keys.
func BenchmarkView(b *testing.B) {
	s := open(b, filepath.Join(b.TempDir(), "kbs.db"))
	defer s.Close()
	const n = 10_000
	value := []byte(strings.Repeat("v", 64))
	if err := s.Update(b.Context(), func(tx store.Tx) error {
		for i := range n {
			if err := tx.Put("bench", fmt.Sprintf("k/%08d", i), value); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	i := 0
	for b.Loop() {
		key := fmt.Sprintf("k/%08d", i%n)
		i++
		if err := s.View(b.Context(), func(tx store.Tx) error { _, err := tx.Get("bench", key); return err }); err != nil {
			b.Fatal(err)
		}
	}
}

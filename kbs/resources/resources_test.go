package resources

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/greatjail/cvm/kbs/store"
	"github.com/greatjail/cvm/kbs/store/storetest"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// rawKEK is a SYNTHETIC key-encryption key derived from a public label,
// for tests only.
func rawKEK(label string) []byte {
	s := sha256.Sum256([]byte("cvm resources synthetic kek " + label))
	return s[:]
}

func kek(t testing.TB, label string) *KEK {
	t.Helper()
	k, err := LoadKEK(rawKEK(label))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func kekID(label string) string {
	s := sha256.Sum256(rawKEK(label))
	return hex.EncodeToString(s[:8])
}

// clock ticks one second per call, so creation times differ.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Second)
	return c.t
}

func newStore(t testing.TB, s store.Store, keks ...*KEK) *Store {
	t.Helper()
	r, err := New(s, keks, rand.NewChaCha8([32]byte{byte(len(keks))}), (&clock{t: t0}).Now)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func put(t testing.TB, r *Store, name, data string) Meta {
	t.Helper()
	m, err := r.Put(context.Background(), name, []byte(data))
	if err != nil {
		t.Fatalf("Put(%q) = %v", name, err)
	}
	return m
}

func TestLoadKEK(t *testing.T) {
	raw := rawKEK("a")
	h := hex.EncodeToString(raw)
	tests := []struct {
		name   string
		in     []byte
		wantID string // "" = error
	}{
		{"32 raw bytes", raw, kekID("a")},
		{"64 hex characters", []byte(h), kekID("a")},
		{"hex and newline", []byte(h + "\n"), kekID("a")},
		{"hex and CRLF", []byte(h + "\r\n"), kekID("a")},
		{"upper-case hex", []byte(strings.ToUpper(h) + "\n"), kekID("a")},
		{"31 bytes", raw[:31], ""},
		{"33 bytes", append(bytes.Clone(raw), 1), ""},
		{"63 hex characters", []byte(h[:63]), ""},
		{"hex and two newlines", []byte(h + "\n\n"), ""},
		{"hex with leading space", []byte(" " + h), ""},
		{"64 characters, not hex", []byte(strings.Repeat("g", 64)), ""},
		{"64 characters and newline, not hex", []byte(strings.Repeat("z", 64) + "\n"), ""},
		{"all-zero raw key", make([]byte, 32), ""},
		{"all-zero hex key", []byte(strings.Repeat("0", 64) + "\n"), ""},
		{"empty", nil, ""},
	}
	for _, tc := range tests {
		k, err := LoadKEK(tc.in)
		if tc.wantID == "" {
			if err == nil {
				t.Errorf("%s: LoadKEK succeeded, want an error", tc.name)
			}
			continue
		}
		if err != nil || k.ID() != tc.wantID {
			t.Errorf("%s: LoadKEK = %v, %v, want ID %s", tc.name, k, err, tc.wantID)
		}
	}
	k := kek(t, "a")
	for _, s := range []string{fmt.Sprint(k), fmt.Sprintf("%v %+v %#v %s", k, k, k, k)} {
		if strings.Contains(s, h[:16]) || strings.Contains(s, string(raw[:8])) {
			t.Errorf("formatting a KEK printed key material: %q", s)
		}
	}
	if got, want := k.String(), "KEK "+kekID("a"); got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func TestRoundTrip(t *testing.T) {
	ctx := context.Background()
	r := newStore(t, storetest.NewMemory(), kek(t, "a"))
	m := put(t, r, "repo/disk/root", "SYNTHETIC passphrase")
	want := Meta{Name: "repo/disk/root", Version: 1, Size: 20, Created: t0.Add(time.Second), KEKID: kekID("a")}
	if diff := cmp.Diff(want, m); diff != "" {
		t.Errorf("Put meta (-want +got):\n%s", diff)
	}
	for _, v := range []int{0, 1} {
		data, got, err := r.Get(ctx, "repo/disk/root", v)
		if err != nil {
			t.Fatalf("Get(v%d) = %v", v, err)
		}
		if string(data) != "SYNTHETIC passphrase" {
			t.Errorf("Get(v%d) = %q", v, data)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Get(v%d) meta (-want +got):\n%s", v, diff)
		}
		st, err := r.Stat(ctx, "repo/disk/root", v)
		if err != nil || !cmp.Equal(want, st) {
			t.Errorf("Stat(v%d) = %+v, %v, want %+v", v, st, err, want)
		}
	}
	// Empty and maximal resources.
	for _, size := range []int{0, MaxSize} {
		data := bytes.Repeat([]byte{0x5a}, size)
		m, err := r.Put(ctx, "sizes", data)
		if err != nil {
			t.Fatalf("Put(%d bytes) = %v", size, err)
		}
		got, gm, err := r.Get(ctx, "sizes", m.Version)
		if err != nil || !bytes.Equal(got, data) || gm.Size != size {
			t.Errorf("Get(%d bytes) = %d bytes, %+v, %v", size, len(got), gm, err)
		}
	}
}

func TestVersions(t *testing.T) {
	ctx := context.Background()
	r := newStore(t, storetest.NewMemory(), kek(t, "a"))
	for i := 1; i <= 3; i++ {
		if m := put(t, r, "repo/key", fmt.Sprintf("content %d", i)); m.Version != i {
			t.Fatalf("Put #%d: version %d", i, m.Version)
		}
	}
	put(t, r, "repo/key2", "other")
	for _, tc := range []struct {
		version int
		want    string
		err     error
	}{
		{0, "content 3", nil},
		{1, "content 1", nil},
		{2, "content 2", nil},
		{3, "content 3", nil},
		{4, ErrNotFound.Error(), ErrNotFound},
		{-1, "", ErrNotFound},
		{MaxVersion + 1, "", ErrNotFound},
	} {
		data, m, err := r.Get(ctx, "repo/key", tc.version)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("Get(v%d) = %v, want %v", tc.version, err, tc.err)
			}
			continue
		}
		if err != nil || string(data) != tc.want || (tc.version != 0 && m.Version != tc.version) {
			t.Errorf("Get(v%d) = %q, %+v, %v, want %q", tc.version, data, m, err, tc.want)
		}
	}
	vs, err := r.Versions(ctx, "repo/key")
	if err != nil {
		t.Fatal(err)
	}
	var got []int
	for _, m := range vs {
		got = append(got, m.Version)
	}
	if diff := cmp.Diff([]int{1, 2, 3}, got); diff != "" {
		t.Errorf("Versions (-want +got):\n%s", diff)
	}

	if err := r.Delete(ctx, "repo/key"); err != nil {
		t.Fatalf("Delete = %v", err)
	}
	for _, v := range []int{0, 1, 3} {
		if _, _, err := r.Get(ctx, "repo/key", v); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(v%d) after Delete = %v, want ErrNotFound", v, err)
		}
	}
	if _, err := r.Stat(ctx, "repo/key", 0); !errors.Is(err, ErrNotFound) {
		t.Errorf("Stat after Delete = %v, want ErrNotFound", err)
	}
	if _, err := r.Versions(ctx, "repo/key"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Versions after Delete = %v, want ErrNotFound", err)
	}
	if err := r.Delete(ctx, "repo/key"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Delete = %v, want ErrNotFound", err)
	}
	if err := r.Delete(ctx, "never/stored"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Delete of a missing name = %v, want ErrNotFound", err)
	}
	// Version numbers are never reused.
	if m := put(t, r, "repo/key", "after delete"); m.Version != 4 {
		t.Errorf("Put after Delete: version %d, want 4", m.Version)
	}
	// The neighbour was untouched.
	if data, _, err := r.Get(ctx, "repo/key2", 0); err != nil || string(data) != "other" {
		t.Errorf("Get(repo/key2) = %q, %v", data, err)
	}
}

func TestList(t *testing.T) {
	ctx := context.Background()
	r := newStore(t, storetest.NewMemory(), kek(t, "a"))
	if l, err := r.List(ctx); err != nil || len(l) != 0 {
		t.Fatalf("List of an empty store = %v, %v", l, err)
	}
	// Names chosen so that key order ("/" < "@") differs from name order
	// and prefixes of one another.
	for _, n := range []string{"a/b", "a", "a-b", "a", "a.b", "a/b/c", "b", "a"} {
		put(t, r, n, "x")
	}
	if err := r.Delete(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	l, err := r.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	type nv struct {
		Name    string
		Version int
	}
	var got []nv
	for _, m := range l {
		got = append(got, nv{m.Name, m.Version})
	}
	want := []nv{{"a", 3}, {"a-b", 1}, {"a.b", 1}, {"a/b", 1}, {"a/b/c", 1}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("List (-want +got):\n%s", diff)
	}
	// Deleting "a" leaves "a/b", "a-b" and "a.b".
	if err := r.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if l, _ := r.List(ctx); len(l) != 4 {
		t.Errorf("after Delete(a), List has %d entries, want 4", len(l))
	}
}

func TestValidName(t *testing.T) {
	seg := func(n int) string { return strings.Repeat("x", n) }
	tests := []struct {
		name string
		ok   bool
	}{
		{"a", true},
		{"repo/type/tag", true},
		{"default/key/disk-1.0_rc", true},
		{"A.b_c-D9", true},
		{"...", true},
		{".hidden/..x", true},
		{"1/2/3/4/5/6/7/8", true},
		{seg(128), true},
		{seg(128) + "/" + seg(128) + "/" + seg(128) + "/" + seg(125), true}, // 512 bytes
		{"", false},
		{"/", false},
		{"/a", false},
		{"a/", false},
		{"a//b", false},
		{".", false},
		{"..", false},
		{"a/./b", false},
		{"a/../b", false},
		{"../etc/passwd", false},
		{"1/2/3/4/5/6/7/8/9", false},
		{seg(129), false},
		{seg(128) + "/" + seg(128) + "/" + seg(128) + "/" + seg(126), false}, // 513 bytes
		{"a b", false},
		{"a@1", false},
		{"a\x00b", false},
		{"a\\b", false},
		{"a:b", false},
		{"a\nb", false},
		{"café", false},
		{"a%2fb", false},
	}
	for _, tc := range tests {
		err := ValidName(tc.name)
		if tc.ok != (err == nil) {
			t.Errorf("ValidName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidName) {
			t.Errorf("ValidName(%q) = %v, does not wrap ErrInvalidName", tc.name, err)
		}
	}
}

func TestPutErrors(t *testing.T) {
	ctx := context.Background()
	r := newStore(t, storetest.NewMemory(), kek(t, "a"))
	if _, err := r.Put(ctx, "a/../b", []byte("x")); !errors.Is(err, ErrInvalidName) {
		t.Errorf("Put(bad name) = %v, want ErrInvalidName", err)
	}
	if _, err := r.Put(ctx, "big", make([]byte, MaxSize+1)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Put(MaxSize+1) = %v, want ErrTooLarge", err)
	}
	for _, f := range []func() error{
		func() error { _, _, err := r.Get(ctx, "a/../b", 0); return err },
		func() error { _, err := r.Stat(ctx, "", 0); return err },
		func() error { return r.Delete(ctx, "a b") },
	} {
		if err := f(); !errors.Is(err, ErrInvalidName) {
			t.Errorf("bad name: %v, want ErrInvalidName", err)
		}
	}
	if _, err := r.Versions(ctx, "/"); !errors.Is(err, ErrInvalidName) {
		t.Errorf("Versions(/) = %v, want ErrInvalidName", err)
	}
	bad, err := New(storetest.NewMemory(), []*KEK{kek(t, "a")}, failingReader{}, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bad.Put(ctx, "x", []byte("y")); err == nil || !strings.Contains(err.Error(), "entropy") {
		t.Errorf("Put with a failing random source = %v", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := r.Put(cancelled, "x", []byte("y")); !errors.Is(err, context.Canceled) {
		t.Errorf("Put with a cancelled context = %v", err)
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("entropy exhausted") }

func TestNewErrors(t *testing.T) {
	s := storetest.NewMemory()
	a := kek(t, "a")
	r := rand.NewChaCha8([32]byte{})
	tests := []struct {
		name string
		f    func() (*Store, error)
	}{
		{"no store", func() (*Store, error) { return New(nil, []*KEK{a}, r, time.Now) }},
		{"no keks", func() (*Store, error) { return New(s, nil, r, time.Now) }},
		{"nil kek", func() (*Store, error) { return New(s, []*KEK{a, nil}, r, time.Now) }},
		{"same kek twice", func() (*Store, error) { return New(s, []*KEK{a, kek(t, "a")}, r, time.Now) }},
		{"no random source", func() (*Store, error) { return New(s, []*KEK{a}, nil, time.Now) }},
		{"no clock", func() (*Store, error) { return New(s, []*KEK{a}, r, nil) }},
	}
	for _, tc := range tests {
		if _, err := tc.f(); err == nil {
			t.Errorf("%s: New succeeded", tc.name)
		}
	}
}

// raw returns the stored values of the resources bucket.
func raw(t *testing.T, s store.Store) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := s.View(context.Background(), func(tx store.Tx) error {
		return tx.Scan(Bucket, "", func(k string, v []byte) error {
			out[k] = bytes.Clone(v)
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func setRaw(t *testing.T, s store.Store, key string, value []byte) {
	t.Helper()
	if err := s.Update(context.Background(), func(tx store.Tx) error { return tx.Put(Bucket, key, value) }); err != nil {
		t.Fatal(err)
	}
}

// TestStoreAttacks: someone with write access to the store (not to the
// KEK) moves or edits ciphertexts; each edit fails with its own reason.
func TestStoreAttacks(t *testing.T) {
	ctx := context.Background()
	a, b := kek(t, "a"), kek(t, "b")
	tests := []struct {
		name    string
		attack  func(vals map[string][]byte) (key string, value []byte)
		get     string
		version int
		want    error
		reason  string
	}{
		{"copy A's ciphertext to B's key", func(v map[string][]byte) (string, []byte) {
			return dataKey("tenant-b/disk", 1), v[dataKey("tenant-a/disk", 1)]
		}, "tenant-b/disk", 1, ErrCorrupt, "does not decrypt"},
		{"copy A's ciphertext over B's latest", func(v map[string][]byte) (string, []byte) {
			return dataKey("tenant-b/disk", 1), v[dataKey("tenant-a/disk", 2)]
		}, "tenant-b/disk", 0, ErrCorrupt, "does not decrypt"},
		{"roll back A's latest to its version 1", func(v map[string][]byte) (string, []byte) {
			return dataKey("tenant-a/disk", 2), v[dataKey("tenant-a/disk", 1)]
		}, "tenant-a/disk", 0, ErrCorrupt, "does not decrypt"},
		{"new version 3 from version 1's ciphertext", func(v map[string][]byte) (string, []byte) {
			return dataKey("tenant-a/disk", 3), v[dataKey("tenant-a/disk", 1)]
		}, "tenant-a/disk", 0, ErrCorrupt, "does not decrypt"},
		{"creation time edited", func(v map[string][]byte) (string, []byte) {
			e := bytes.Clone(v[dataKey("tenant-a/disk", 1)])
			e[6+kekIDLen+7] ^= 1
			return dataKey("tenant-a/disk", 1), e
		}, "tenant-a/disk", 1, ErrCorrupt, "does not decrypt"},
		{"KEK ID pointed at the other loaded KEK", func(v map[string][]byte) (string, []byte) {
			e := bytes.Clone(v[dataKey("tenant-a/disk", 1)])
			copy(e[6:], b.ID())
			return dataKey("tenant-a/disk", 1), e
		}, "tenant-a/disk", 1, ErrCorrupt, "does not decrypt under KEK " + b.ID()},
		{"KEK ID pointed at an unknown KEK", func(v map[string][]byte) (string, []byte) {
			e := bytes.Clone(v[dataKey("tenant-a/disk", 1)])
			copy(e[6:], "0123456789abcdef")
			return dataKey("tenant-a/disk", 1), e
		}, "tenant-a/disk", 1, ErrUnknownKEK, "encrypted under KEK 0123456789abcdef"},
		{"nonce flipped", func(v map[string][]byte) (string, []byte) {
			e := bytes.Clone(v[dataKey("tenant-a/disk", 1)])
			e[headerSize] ^= 1
			return dataKey("tenant-a/disk", 1), e
		}, "tenant-a/disk", 1, ErrCorrupt, "does not decrypt"},
		{"ciphertext flipped", func(v map[string][]byte) (string, []byte) {
			e := bytes.Clone(v[dataKey("tenant-a/disk", 1)])
			e[headerSize+nonceSize] ^= 1
			return dataKey("tenant-a/disk", 1), e
		}, "tenant-a/disk", 1, ErrCorrupt, "does not decrypt"},
		{"tag truncated", func(v map[string][]byte) (string, []byte) {
			e := v[dataKey("tenant-a/disk", 1)]
			return dataKey("tenant-a/disk", 1), e[:len(e)-1]
		}, "tenant-a/disk", 1, ErrCorrupt, "does not decrypt"},
		{"truncated below the minimum", func(v map[string][]byte) (string, []byte) {
			return dataKey("tenant-a/disk", 1), v[dataKey("tenant-a/disk", 1)][:minEnvSize-1]
		}, "tenant-a/disk", 1, ErrCorrupt, "too short"},
		{"magic changed", func(v map[string][]byte) (string, []byte) {
			e := bytes.Clone(v[dataKey("tenant-a/disk", 1)])
			e[0] = 'X'
			return dataKey("tenant-a/disk", 1), e
		}, "tenant-a/disk", 1, ErrCorrupt, "bad magic"},
		{"format changed", func(v map[string][]byte) (string, []byte) {
			e := bytes.Clone(v[dataKey("tenant-a/disk", 1)])
			e[4] = 2
			return dataKey("tenant-a/disk", 1), e
		}, "tenant-a/disk", 1, ErrCorrupt, "unknown format 2"},
		{"KEK ID not hex", func(v map[string][]byte) (string, []byte) {
			e := bytes.Clone(v[dataKey("tenant-a/disk", 1)])
			e[6] = 'Z'
			return dataKey("tenant-a/disk", 1), e
		}, "tenant-a/disk", 1, ErrCorrupt, "not lowercase hex"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := storetest.NewMemory()
			r := newStore(t, s, a, b)
			put(t, r, "tenant-a/disk", "SYNTHETIC key of tenant A v1")
			put(t, r, "tenant-a/disk", "SYNTHETIC key of tenant A v2")
			put(t, r, "tenant-b/disk", "SYNTHETIC key of tenant B v1")
			k, v := tc.attack(raw(t, s))
			setRaw(t, s, k, v)
			data, _, err := r.Get(ctx, tc.get, tc.version)
			if !errors.Is(err, tc.want) || data != nil {
				t.Fatalf("Get(%q, %d) = %q, %v, want %v", tc.get, tc.version, data, err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("Get error %q does not say %q", err, tc.reason)
			}
		})
	}
}

func TestUnknownKEK(t *testing.T) {
	ctx := context.Background()
	s := storetest.NewMemory()
	put(t, newStore(t, s, kek(t, "a")), "repo/key", "SYNTHETIC secret")
	// The broker restarted with the wrong key file.
	r := newStore(t, s, kek(t, "b"))
	_, _, err := r.Get(ctx, "repo/key", 0)
	if !errors.Is(err, ErrUnknownKEK) {
		t.Fatalf("Get with the wrong KEK = %v, want ErrUnknownKEK", err)
	}
	for _, want := range []string{"KEK " + kekID("a"), "not loaded", "loaded: " + kekID("b"), `"repo/key" version 1`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	// Metadata is still readable, and names the KEK needed.
	l, err := r.List(ctx)
	if err != nil || len(l) != 1 || l[0].KEKID != kekID("a") {
		t.Errorf("List = %+v, %v, want one entry under KEK %s", l, err, kekID("a"))
	}
	// Rotation cannot proceed without the old key, and changes nothing.
	before := raw(t, s)
	if n, err := r.Rotate(ctx); !errors.Is(err, ErrUnknownKEK) || n != 0 {
		t.Errorf("Rotate without the old KEK = %d, %v, want ErrUnknownKEK", n, err)
	}
	if diff := cmp.Diff(before, raw(t, s)); diff != "" {
		t.Errorf("failed Rotate changed the store (-before +after):\n%s", diff)
	}
}

func TestRotation(t *testing.T) {
	ctx := context.Background()
	s := storetest.NewMemory()
	a, b := kek(t, "old"), kek(t, "new")
	contents := map[string][]string{
		"repo/disk/root": {"SYNTHETIC root v1", "SYNTHETIC root v2"},
		"repo/image/key": {"SYNTHETIC image key"},
		"x":              {"SYNTHETIC x"},
	}
	old := newStore(t, s, a)
	created := map[string]time.Time{}
	for name, vs := range contents {
		for i, c := range vs {
			m := put(t, old, name, c)
			created[fmt.Sprintf("%s@%d", name, i+1)] = m.Created
		}
	}
	check := func(r *Store, stage string) {
		t.Helper()
		for name, vs := range contents {
			for i, c := range vs {
				data, m, err := r.Get(ctx, name, i+1)
				if err != nil || string(data) != c {
					t.Errorf("%s: Get(%q, %d) = %q, %v, want %q", stage, name, i+1, data, err, c)
				}
				if !m.Created.Equal(created[fmt.Sprintf("%s@%d", name, i+1)]) {
					t.Errorf("%s: %q v%d created %v, want %v", stage, name, i+1, m.Created, created[fmt.Sprintf("%s@%d", name, i+1)])
				}
			}
		}
	}
	// Step 2: both keys, old current.
	check(newStore(t, s, a, b), "[old, new]")
	// Step 3: new current.
	both := newStore(t, s, b, a)
	check(both, "[new, old]")
	put(t, both, "written/during/rotation", "SYNTHETIC fresh")
	contents["written/during/rotation"] = []string{"SYNTHETIC fresh"}
	if m, _ := both.Stat(ctx, "written/during/rotation", 1); m.KEKID != b.ID() {
		t.Errorf("new write under KEK %s, want %s", m.KEKID, b.ID())
	}
	created["written/during/rotation@1"] = mustStat(t, both, "written/during/rotation").Created
	// Step 4: rotate.
	n, err := both.Rotate(ctx)
	if err != nil || n != 4 {
		t.Fatalf("Rotate = %d, %v, want 4", n, err)
	}
	if n, err := both.Rotate(ctx); err != nil || n != 0 {
		t.Errorf("second Rotate = %d, %v, want 0", n, err)
	}
	l, err := both.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range l {
		if m.KEKID != b.ID() {
			t.Errorf("after Rotate, %q is under KEK %s", m.Name, m.KEKID)
		}
	}
	// Step 5: old key removed.
	check(newStore(t, s, b), "[new]")
	// And a broker with only the old key now cannot read.
	if _, _, err := newStore(t, s, a).Get(ctx, "x", 0); !errors.Is(err, ErrUnknownKEK) || !strings.Contains(err.Error(), b.ID()) {
		t.Errorf("Get with only the old KEK after rotation = %v, want ErrUnknownKEK naming %s", err, b.ID())
	}
}

func mustStat(t *testing.T, r *Store, name string) Meta {
	t.Helper()
	m, err := r.Stat(context.Background(), name, 0)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestNoPlaintextAtRest scans every stored key and value for the
// plaintexts and the KEK.
func TestNoPlaintextAtRest(t *testing.T) {
	ctx := context.Background()
	s := storetest.NewMemory()
	a, b := kek(t, "a"), kek(t, "b")
	secrets := []string{"SYNTHETIC-SECRET-ONE-0123456789", "SYNTHETIC-SECRET-TWO-abcdefghij", strings.Repeat("SYNTHETIC-LONG ", 1000)}
	r := newStore(t, s, a)
	for i, sec := range secrets {
		put(t, r, fmt.Sprintf("s/%d", i), sec)
		put(t, r, fmt.Sprintf("s/%d", i), sec) // same plaintext twice
	}
	if _, err := newStore(t, s, b, a).Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	vals := raw(t, s)
	if len(vals) != 2*len(secrets)+len(secrets) {
		t.Fatalf("store holds %d keys, want %d", len(vals), 3*len(secrets))
	}
	seen := map[string]bool{}
	for k, v := range vals {
		for _, sec := range secrets {
			if bytes.Contains(v, []byte(sec[:16])) || strings.Contains(k, sec[:16]) {
				t.Errorf("store key %q or its value contains plaintext %.16q", k, sec)
			}
		}
		for _, label := range []string{"a", "b"} {
			if bytes.Contains(v, rawKEK(label)[:8]) || bytes.Contains(v, []byte(hex.EncodeToString(rawKEK(label))[:16])) {
				t.Errorf("store value of %q contains KEK material", k)
			}
		}
		if strings.HasPrefix(k, dataPrefix) {
			ct := string(v[headerSize:])
			if seen[ct] {
				t.Errorf("two versions share a nonce and ciphertext")
			}
			seen[ct] = true
		}
	}
}

func TestPutTx(t *testing.T) {
	ctx := context.Background()
	s := storetest.NewMemory()
	r := newStore(t, s, kek(t, "a"))
	// The caller's transaction fails after PutTx: nothing is kept, not
	// even the version number.
	errAudit := errors.New("audit append failed")
	err := s.Update(ctx, func(tx store.Tx) error {
		if _, err := r.PutTx(tx, "repo/key", []byte("SYNTHETIC")); err != nil {
			return err
		}
		return errAudit
	})
	if !errors.Is(err, errAudit) {
		t.Fatalf("Update = %v", err)
	}
	if _, _, err := r.Get(ctx, "repo/key", 0); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after rolled-back PutTx = %v, want ErrNotFound", err)
	}
	// Committed with another record.
	err = s.Update(ctx, func(tx store.Tx) error {
		m, err := r.PutTx(tx, "repo/key", []byte("SYNTHETIC"))
		if err != nil {
			return err
		}
		if m.Version != 1 {
			t.Errorf("PutTx after rollback: version %d, want 1", m.Version)
		}
		return tx.Put("audit", "1", []byte("put repo/key v1"))
	})
	if err != nil {
		t.Fatal(err)
	}
	if data, _, err := r.Get(ctx, "repo/key", 1); err != nil || string(data) != "SYNTHETIC" {
		t.Errorf("Get after committed PutTx = %q, %v", data, err)
	}
	// DeleteTx likewise.
	_ = s.Update(ctx, func(tx store.Tx) error {
		if err := r.DeleteTx(tx, "repo/key"); err != nil {
			t.Errorf("DeleteTx = %v", err)
		}
		return errAudit
	})
	if _, _, err := r.Get(ctx, "repo/key", 1); err != nil {
		t.Errorf("Get after rolled-back DeleteTx = %v", err)
	}
}

func TestConcurrentPuts(t *testing.T) {
	ctx := context.Background()
	r := newStore(t, storetest.NewMemory(), kek(t, "a"))
	const n = 20
	versions := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			m, err := r.Put(ctx, "shared", []byte(fmt.Sprint(i)))
			if err != nil {
				t.Error(err)
				return
			}
			versions[i] = m.Version
		})
	}
	wg.Wait()
	seen := map[int]bool{}
	for _, v := range versions {
		if v < 1 || v > n || seen[v] {
			t.Errorf("versions %v are not a permutation of 1..%d", versions, n)
			break
		}
		seen[v] = true
	}
}

func TestCorruptIndex(t *testing.T) {
	ctx := context.Background()
	s := storetest.NewMemory()
	r := newStore(t, s, kek(t, "a"))
	put(t, r, "x", "y")
	setRaw(t, s, seqPrefix+"x", []byte("not a number"))
	if _, err := r.Put(ctx, "x", []byte("z")); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Put with a corrupt counter = %v, want ErrCorrupt", err)
	}
	setRaw(t, s, dataPrefix+"stray", []byte("v"))
	if _, err := r.List(ctx); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "stray key") {
		t.Errorf("List with a stray key = %v, want ErrCorrupt", err)
	}
}

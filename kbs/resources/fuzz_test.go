package resources

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/greatjail/cvm/kbs/store"
	"github.com/greatjail/cvm/kbs/store/storetest"
)

// FuzzValidName: whatever ValidName accepts meets every rule, and makes a
// store key that parses back to the same name.
func FuzzValidName(f *testing.F) {
	for _, s := range []string{"a", "repo/type/tag", "", "/", "a//b", ".", "..", "a/../b", "...", "a@1", "1/2/3/4/5/6/7/8/9",
		strings.Repeat("x", 129), "café", "a\x00b", strings.Repeat("a/", 256)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := ValidName(name)
		if err != nil {
			if !errors.Is(err, ErrInvalidName) {
				t.Fatalf("ValidName(%q) = %v, not ErrInvalidName", name, err)
			}
			return
		}
		segs := strings.Split(name, "/")
		if len(name) > maxNameLen || len(segs) > maxSegments {
			t.Fatalf("ValidName accepted %q: too long", name)
		}
		for _, s := range segs {
			if s == "" || s == "." || s == ".." || len(s) > maxSegmentLen || strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != "" {
				t.Fatalf("ValidName accepted %q: bad segment %q", name, s)
			}
		}
		for _, v := range []int{1, 42, MaxVersion} {
			n, got, ok := parseDataKey(dataKey(name, v))
			if !ok || n != name || got != v {
				t.Fatalf("parseDataKey(dataKey(%q, %d)) = %q, %d, %v", name, v, n, got, ok)
			}
			if len(dataKey(name, v)) > store.MaxKeyLen {
				t.Fatalf("dataKey(%q) is over the store's key limit", name)
			}
		}
	})
}

// FuzzEnvelope: a stored value is untrusted (whoever can write the store
// can put anything there). Decoding never panics; what decodes is
// described exactly by its fields; Get of it never panics and returns
// nothing but the genuine plaintext.
func FuzzEnvelope(f *testing.F) {
	ctx := context.Background()
	s := storetest.NewMemory()
	a, b := kek(f, "a"), kek(f, "b")
	r := newStore(f, s, a, b)
	const secret = "SYNTHETIC fuzz secret"
	if _, err := r.Put(ctx, "n", []byte(secret)); err != nil {
		f.Fatal(err)
	}
	var genuine []byte
	_ = s.View(ctx, func(tx store.Tx) error {
		var err error
		genuine, err = tx.Get(Bucket, dataKey("n", 1))
		return err
	})
	f.Add(genuine)
	f.Add(genuine[:minEnvSize])
	f.Add(genuine[:minEnvSize-1])
	f.Add([]byte{})
	f.Add([]byte("CVMR\x01\x10"))
	f.Fuzz(func(t *testing.T, env []byte) {
		e, err := decodeEnvelope(env)
		if err == nil {
			if len(env) < minEnvSize || !bytes.Equal(e.header, env[:headerSize]) || string(e.header[:4]) != magic ||
				!bytes.Equal(append(append(bytes.Clone(e.header), e.nonce...), e.ciphertext...), env) || e.kekID != string(env[6:22]) {
				t.Fatalf("decodeEnvelope(%x) = %+v, inconsistent", env, e)
			}
		}
		if err := s.Update(ctx, func(tx store.Tx) error { return tx.Put(Bucket, dataKey("n", 2), env) }); err != nil {
			t.Fatal(err)
		}
		data, m, err := r.Get(ctx, "n", 2)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnknownKEK) {
				t.Fatalf("Get = %v, want ErrCorrupt or ErrUnknownKEK", err)
			}
			if _, err := r.Stat(ctx, "n", 2); (err == nil) != (decodeErr(env) == nil) {
				t.Fatalf("Stat = %v, but decodeEnvelope = %v", err, decodeErr(env))
			}
			return
		}
		// Only a ciphertext made for "n" version 2 opens there, and the
		// only one the fuzzer has is for version 1.
		t.Fatalf("Get accepted %x as %q, %+v", env, data, m)
	})
}

func decodeErr(b []byte) error {
	_, err := decodeEnvelope(b)
	return err
}

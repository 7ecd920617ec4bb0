package seal

import (
	"errors"
	"testing"
)

// FuzzOpen: the guest opens bytes that crossed the untrusted host. Open
// never panics, fails only with ErrOpen or ErrSuite, and nothing opens
// but what Seal made: the secret, under the info it was sealed with.
// (Seal is randomized and fuzz workers rerun this setup, so the seed
// ciphertexts are not the ones computed here; the check is on content.)
func FuzzOpen(f *testing.F) {
	keys := testKeys(f)
	info := Info("repo/disk/root", 1)
	for _, k := range keys {
		ct, suite, err := Seal(k.jwk, info, secret)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(ct, suite.KEM, suite.KDF, suite.AEAD, info)
		f.Add(ct[:len(ct)/2], suite.KEM, suite.KDF, suite.AEAD, info)
	}
	f.Add([]byte{}, uint16(0), uint16(0), uint16(0), []byte{})
	f.Fuzz(func(t *testing.T, ct []byte, kem, kdf, aead uint16, inf []byte) {
		for _, k := range keys {
			pt, err := Open(k.priv, Suite{kem, kdf, aead}, inf, ct)
			if err != nil {
				if !errors.Is(err, ErrOpen) && !errors.Is(err, ErrSuite) {
					t.Fatalf("Open = %v, want ErrOpen or ErrSuite", err)
				}
				continue
			}
			if string(inf) != string(info) || string(pt) != string(secret) {
				t.Fatalf("Open(%x, info %q) with key %s = %q, which was never sealed", ct, inf, k.name, pt)
			}
		}
	})
}

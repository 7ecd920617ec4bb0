package token

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// FuzzVerify: Verify never panics on any string; it fails only with
// ErrInvalid or ErrExpired; whatever it accepts is the content of a token
// the genuine key signed (the seeds), since the key is the only way past
// the signature.
func FuzzVerify(f *testing.F) {
	c := &clock{t: t0}
	s := newSigner(f, "current", c)
	v := newVerifier(f, c, s)
	var genuine []*Token
	for _, a := range attackTokens(f, s) {
		f.Add(a.tok)
		if a.want == nil {
			tk, err := v.Verify(a.tok)
			if err != nil {
				f.Fatal(err)
			}
			genuine = append(genuine, tk)
		}
	}
	f.Add("a.b.c")
	f.Add("....")
	f.Add("eyJhbGciOiJFUzI1NiJ9..")
	f.Fuzz(func(t *testing.T, tok string) {
		got, err := v.Verify(tok)
		if err != nil {
			if errors.Is(err, ErrInvalid) == errors.Is(err, ErrExpired) {
				t.Fatalf("Verify(%q) = %v, want exactly one of ErrInvalid, ErrExpired", tok, err)
			}
			if got != nil {
				t.Fatalf("Verify returned a token with error %v", err)
			}
			return
		}
		for _, g := range genuine {
			if cmp.Equal(g, got) {
				return
			}
		}
		t.Fatalf("Verify(%q) accepted a token the key never signed: %+v", tok, got)
	})
}

// FuzzDecode gets past the signature by signing whatever payload the
// fuzzer makes with the genuine key, to exercise the claim checks behind
// it: Verify never panics, and what it accepts signs again to a token
// that verifies to the same content.
func FuzzDecode(f *testing.F) {
	c := &clock{t: t0}
	s := newSigner(f, "current", c)
	v := newVerifier(f, c, s)
	good, err := s.Sign(sampleToken(f))
	if err != nil {
		f.Fatal(err)
	}
	body, _ := base64.RawURLEncoding.DecodeString(strings.Split(good, ".")[1])
	f.Add(body)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"eat_profile":"tag:github.com,2023:veraison/ear","iat":1,"exp":2,"jti":"x","ear.verifier-id":{"developer":"cvm"},"submods":{"cpu":{"ear.status":"warning","ear.veraison.annotated-evidence":{"tee":"tdx"},"ear.veraison.key-attestation":{"akpub":""}}}}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		got, err := v.Verify(signRaw(t, s.key, payload, nil))
		if err != nil {
			if errors.Is(err, ErrInvalid) == errors.Is(err, ErrExpired) {
				t.Fatalf("Verify = %v, want exactly one of ErrInvalid, ErrExpired", err)
			}
			return
		}
		again, err := s.Sign(*got)
		if err != nil {
			t.Fatalf("Sign(Verify(payload %q)) = %v", payload, err)
		}
		got2, err := v.Verify(again)
		if err != nil {
			t.Fatalf("Verify(Sign(Verify(payload %q))) = %v", payload, err)
		}
		if diff := cmp.Diff(got, got2); diff != "" {
			t.Fatalf("re-signed token differs (-first +second):\n%s", diff)
		}
	})
}

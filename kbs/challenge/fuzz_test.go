package challenge

import (
	"encoding/base64"
	"errors"
	"testing"
	"time"

	"github.com/greatjail/cvm/attestation"
)

// FuzzCheck: Check never panics on any string; every failure wraps exactly
// one sentinel; only canonical, authentic nonces pass.
func FuzzCheck(f *testing.F) {
	c := &clock{t: t0}
	iss := newIssuer(f, testKey, c, 1)
	for _, tee := range []attestation.TEE{attestation.TEESEVSNP, attestation.TEETDX, attestation.TEETPM, attestation.TEESim} {
		ch, err := iss.Issue(tee)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(ch.Nonce, string(tee))
		f.Add(ch.Nonce+"=", string(tee))
		f.Add(ch.Nonce[:20]+"\n"+ch.Nonce[20:], string(tee))
		f.Add(ch.Nonce[1:], string(tee))
	}
	f.Add("", "snp")
	f.Add("AQNzbnA", "snp")
	f.Add("lQXZSVZldGtmPi8QB50p8BF8ZUn83RAw9hkl80QLPk0=", "tdx")
	sentinels := []error{ErrMalformed, ErrForged, ErrExpired, ErrWrongTEE}
	f.Fuzz(func(t *testing.T, nonce, tee string) {
		exp, err := iss.Check(nonce, attestation.TEE(tee))
		if err != nil {
			n := 0
			for _, s := range sentinels {
				if errors.Is(err, s) {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("Check(%q, %q) = %v wraps %d sentinels, want 1", nonce, tee, err, n)
			}
			return
		}
		raw, derr := base64.RawURLEncoding.DecodeString(nonce)
		if derr != nil || base64.RawURLEncoding.EncodeToString(raw) != nonce {
			t.Fatalf("Check accepted non-canonical %q", nonce)
		}
		if !exp.After(t0) {
			t.Fatalf("Check accepted %q with expiry %v, not after now", nonce, exp)
		}
	})
}

// FuzzParseAuthentic gets past the MAC by signing whatever body the fuzzer
// makes, to exercise the field checks behind it: Check never panics, and
// what it accepts decodes to the TEE and expiry it reports.
func FuzzParseAuthentic(f *testing.F) {
	c := &clock{t: t0}
	iss := newIssuer(f, testKey, c, 1)
	ch, err := iss.Issue(attestation.TEESEVSNP)
	if err != nil {
		f.Fatal(err)
	}
	raw, _ := base64.RawURLEncoding.DecodeString(ch.Nonce)
	f.Add(raw[:len(raw)-macSize], "snp")
	f.Add([]byte{1, 3, 's', 'n', 'p'}, "snp")
	f.Add([]byte{1, 0}, "")
	f.Add([]byte{1, 255}, "snp")
	f.Add([]byte{2}, "snp")
	f.Fuzz(func(t *testing.T, body []byte, tee string) {
		nonce := base64.RawURLEncoding.EncodeToString(append(body[:len(body):len(body)], iss.mac(body)...))
		exp, err := iss.Check(nonce, attestation.TEE(tee))
		if err != nil {
			if errors.Is(err, ErrForged) {
				t.Fatalf("Check(%x) = %v for an authentic body", body, err)
			}
			return
		}
		if len(body) != fixedSize-macSize+len(tee) || body[0] != version || string(body[2:2+len(tee)]) != tee {
			t.Fatalf("Check accepted body %x for TEE %q", body, tee)
		}
		if want := time.Unix(int64(uint64(body[2+len(tee)])<<56|uint64(body[3+len(tee)])<<48|uint64(body[4+len(tee)])<<40|uint64(body[5+len(tee)])<<32|uint64(body[6+len(tee)])<<24|uint64(body[7+len(tee)])<<16|uint64(body[8+len(tee)])<<8|uint64(body[9+len(tee)])), 0); !exp.Equal(want) {
			t.Fatalf("Check(%x) expiry = %v, want %v", body, exp, want)
		}
	})
}

package tpm_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"errors"
	"slices"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/attestation/tpm"
	"github.com/greatjail/cvm/attestation/tpm/tpmtest"
	"github.com/greatjail/cvm/testdata"
)

// isCheck reports whether err is an *attestation.Error for one of checks
// wrapping one of sentinels.
func isCheck(err error, checks []string, sentinels ...error) bool {
	var ae *attestation.Error
	if !errors.As(err, &ae) || !slices.Contains(checks, ae.Check) {
		return false
	}
	return slices.ContainsFunc(sentinels, func(s error) bool { return errors.Is(err, s) })
}

func FuzzParseEventLog(f *testing.F) {
	for _, log := range [][]byte{testdata.TPMEventLogRHEL8, testdata.TPMEventLogUbuntu2404} {
		f.Add(log)
		f.Add(log[:len(log)/2])
		f.Add(log[:len(log)-1])
		f.Add(log[:200])
		f.Add(log[:60])
	}
	// A log with a StartupLocality event.
	events, err := tpm.ParseEventLog(testdata.TPMEventLogRHEL8)
	if err != nil {
		f.Fatal(err)
	}
	loc := tpm.Event{Type: tpm.EventNoAction, Digests: events[1].Digests, Data: append([]byte("StartupLocality\x00"), 3)}
	f.Add(encodeLog([]tpm.Event{events[0], loc, events[1], events[2]}))

	f.Fuzz(func(t *testing.T, b []byte) {
		events, err := tpm.ParseEventLog(b)
		if err != nil {
			if events != nil {
				t.Fatalf("ParseEventLog returned events and error %v", err)
			}
			if !isCheck(err, []string{"event log"}, attestation.ErrMalformed, attestation.ErrTooLarge) {
				t.Fatalf("ParseEventLog error %v is not an event log ErrMalformed/ErrTooLarge", err)
			}
			return
		}
		// What parses re-encodes to exactly the input: nothing skipped,
		// nothing invented.
		if got := encodeLog(events); !bytes.Equal(got, b) {
			t.Fatalf("re-encoding differs from the input:\n got %x\nwant %x", got, b)
		}
		for _, alg := range []tpm2.TPMAlgID{tpm2.TPMAlgSHA1, tpm2.TPMAlgSHA256, tpm2.TPMAlgSHA384, tpm2.TPMAlgSHA512} {
			pcrs, err := tpm.Replay(events, alg)
			if err != nil {
				if !isCheck(err, []string{"event log", "event log replay"}, attestation.ErrMalformed, attestation.ErrMismatch) {
					t.Fatalf("Replay error %v is not an event log error", err)
				}
				continue
			}
			for i, v := range pcrs {
				if i < 0 || i >= 24 || len(v) != hashSize(alg) {
					t.Fatalf("Replay(%v) PCR %d = %x", alg, i, v)
				}
			}
		}
	})
}

func hashSize(alg tpm2.TPMAlgID) int {
	switch alg {
	case tpm2.TPMAlgSHA1:
		return 20
	case tpm2.TPMAlgSHA256:
		return 32
	case tpm2.TPMAlgSHA384:
		return 48
	}
	return 64
}

// FuzzVerify mutates the quote and its signature: a mutated pair never
// verifies unless both equal the originals.
func FuzzVerify(f *testing.F) {
	key := syntheticKey(f, "fuzz")
	orig := rhel8Evidence(f, key)
	v := newVerifier(f, false, &key.PublicKey)
	if _, err := v.Verify(context.Background(), orig); err != nil {
		f.Fatalf("Verify(original): %v", err)
	}
	f.Add(orig.Report, orig.Signature)
	f.Add(orig.Report[:len(orig.Report)-1], orig.Signature)
	f.Add(orig.Report, orig.Signature[:40])
	other, err := tpmtest.Quote(key, tpm2.TPMAlgSHA256, orig.PCRs, quotedPCRs, []byte("other"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(other.Report, orig.Signature)
	f.Add(orig.Report, other.Signature)

	f.Fuzz(func(t *testing.T, report, sig []byte) {
		ev := *orig
		ev.Report, ev.Signature = report, sig
		claims, err := v.Verify(context.Background(), &ev)
		if err != nil {
			if claims != nil {
				t.Fatal("Verify returned claims with an error")
			}
			if !isCheck(err, []string{"quote", "quote signature"}, attestation.ErrMalformed, attestation.ErrSignature, attestation.ErrUnsupported, attestation.ErrMissing, attestation.ErrTooLarge) {
				t.Fatalf("Verify error %v is not a quote or signature error", err)
			}
			return
		}
		if !bytes.Equal(report, orig.Report) || !bytes.Equal(sig, orig.Signature) {
			t.Fatalf("mutated evidence verified:\nreport %x\nsig    %x", report, sig)
		}
	})
}

func FuzzParseAKPublic(f *testing.F) {
	p384, err := tpmtest.ECDSAKey(elliptic.P384(), "fuzz")
	if err != nil {
		f.Fatal(err)
	}
	for _, pub := range []crypto.PublicKey{&syntheticKey(f, "fuzz").PublicKey, &p384.PublicKey, &rsaKey().PublicKey} {
		b, err := tpmtest.AKPublic(pub)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)-2])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := tpm.ParseAKPublic(b)
		if err != nil {
			if k != nil {
				t.Fatal("ParseAKPublic returned a key with an error")
			}
			if !isCheck(err, []string{"attestation key"}, attestation.ErrMalformed, attestation.ErrUnsupported, attestation.ErrTooLarge) {
				t.Fatalf("ParseAKPublic error %v is not an attestation key error", err)
			}
			return
		}
		switch k := k.(type) {
		case *rsa.PublicKey:
			if n := k.N.BitLen(); n < 2048 || n > 8192 {
				t.Fatalf("ParseAKPublic returned an RSA key of %d bits", n)
			}
		case *ecdsa.PublicKey:
			if _, err := k.ECDH(); err != nil {
				t.Fatalf("ParseAKPublic returned an invalid ECDSA key: %v", err)
			}
		default:
			t.Fatalf("ParseAKPublic returned %T", k)
		}
	})
}

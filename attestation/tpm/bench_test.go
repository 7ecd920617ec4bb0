package tpm_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"math/big"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/greatjail/cvm/attestation/tpm"
	"github.com/greatjail/cvm/testdata"
)

// BenchmarkVerify is one full verification of the realistic case: a quote
// over PCRs 0-7 (SHA-256) by an ECDSA P-256 AK, with the RHEL 8 event log
// parsed and replayed against it.
func BenchmarkVerify(b *testing.B) {
	key := syntheticKey(b, "bench")
	ev := rhel8Evidence(b, key)
	v := newVerifier(b, false, &key.PublicKey)
	ctx := context.Background()
	for b.Loop() {
		if _, err := v.Verify(ctx, ev); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSignatureBound is the signature check that bounds Verify: SHA-256
// of the TPMS_ATTEST and ecdsa.Verify on P-256.
func BenchmarkSignatureBound(b *testing.B) {
	key := syntheticKey(b, "bench")
	ev := rhel8Evidence(b, key)
	sig, err := tpm2.Unmarshal[tpm2.TPMTSignature](ev.Signature)
	if err != nil {
		b.Fatal(err)
	}
	e, err := sig.Signature.ECDSA()
	if err != nil {
		b.Fatal(err)
	}
	r := new(big.Int).SetBytes(e.SignatureR.Buffer)
	s := new(big.Int).SetBytes(e.SignatureS.Buffer)
	for b.Loop() {
		d := sha256.Sum256(ev.Report)
		if !ecdsa.Verify(&key.PublicKey, d[:], r, s) {
			b.Fatal("signature does not verify")
		}
	}
}

// BenchmarkReplay parses and replays the RHEL 8 event log in SHA-256.
func BenchmarkReplay(b *testing.B) {
	for b.Loop() {
		events, err := tpm.ParseEventLog(testdata.TPMEventLogRHEL8)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := tpm.Replay(events, tpm2.TPMAlgSHA256); err != nil {
			b.Fatal(err)
		}
	}
}

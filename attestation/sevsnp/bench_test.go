package sevsnp

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha512"
	"crypto/x509"
	"testing"

	"github.com/google/go-sev-guest/abi"
	"github.com/greatjail/cvm/testdata"
)

// BenchmarkVerify is a full verification of the real Milan report with
// its VCEK supplied (as from a cache), offline, with pinned roots.
func BenchmarkVerify(b *testing.B) {
	v := mustNew(b, Options{Now: at(jan2024)})
	ev := milanEvidence()
	ctx := context.Background()
	for b.Loop() {
		if _, err := v.Verify(ctx, ev); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSignatureBound is the raw cost that bounds verification: one
// ECDSA P-384 verification of SHA-384 over the report's signed bytes with
// the VCEK public key already parsed.
func BenchmarkSignatureBound(b *testing.B) {
	vcek, err := x509.ParseCertificate(testdata.SNPMilanVCEK)
	if err != nil {
		b.Fatal(err)
	}
	pub := vcek.PublicKey.(*ecdsa.PublicKey)
	report := testdata.SNPMilanReport
	sig := report[offSignature:]
	r, s := abi.AmdBigInt(sig[0:0x48]), abi.AmdBigInt(sig[0x48:0x90])
	for b.Loop() {
		digest := sha512.Sum384(abi.SignedComponent(report))
		if !ecdsa.Verify(pub, digest[:], r, s) {
			b.Fatal("signature does not verify")
		}
	}
}

package tdx

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"math/big"
	"testing"

	"github.com/greatjail/cvm/testdata"
)

// BenchmarkVerify is a full offline verification of the recorded quote
// (PCK chain, QE report, quote signature, go-tdx-guest's second pass; no
// collateral).
func BenchmarkVerify(b *testing.B) {
	v := newVerifier(b, Options{Now: fixed(testNow)})
	ev := tdxEvidence(testdata.TDXQuote)
	for b.Loop() {
		if _, err := v.Verify(context.Background(), ev); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyCollateral adds synthetic TCB info, QE identity and CRL
// checks to BenchmarkVerify.
func BenchmarkVerifyCollateral(b *testing.B) {
	p := synth()
	spec := defaultColl(p)
	spec.pckCRL = makeCRL(crlSpec{}, p.ca, p.caKey)
	spec.rootCRL = makeCRL(crlSpec{}, p.root, p.rootKey)
	v := newVerifier(b, Options{Now: fixed(testNow), Roots: p.roots(b), Collateral: &staticSource{c: spec.collateral()}, CheckRevocations: true})
	ev := tdxEvidence(p.quote(nil))
	for b.Loop() {
		if _, err := v.Verify(context.Background(), ev); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSignatureBound is the ECDSA P-256 verification of the quote
// signature alone, with the attestation key and signature pre-parsed and
// the digest precomputed.
func BenchmarkSignatureBound(b *testing.B) {
	q := recorded().q
	pub, err := p256Key(q.attKey)
	if err != nil {
		b.Fatal(err)
	}
	digest := sha256.Sum256(q.signed)
	r := new(big.Int).SetBytes(q.signature[:32])
	s := new(big.Int).SetBytes(q.signature[32:])
	for b.Loop() {
		if !ecdsa.Verify(pub, digest[:], r, s) {
			b.Fatal("signature does not verify")
		}
	}
}

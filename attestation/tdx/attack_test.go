package tdx

import (
	"bytes"
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-tdx-guest/verify"
	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/testdata"
)

// outcome is an acceptable result of verifying tampered evidence.
type outcome struct {
	sentinel error
	check    string
}

// flipRegion names a byte range of the recorded quote and what flipping a
// bit in it must cause.
type flipRegion struct {
	name       string
	start, end int
	want       []outcome // empty: verification succeeds with unchanged claims
}

// quoteRegions maps the recorded quote (4974 bytes: 4935 of quote and 39
// trailing bytes that go-tdx-guest's authors appended) to the expected
// outcome of a bit flip in each field.
func quoteRegions(t *testing.T) []flipRegion {
	q := recorded().q
	raw := testdata.TDXQuote
	off := func(b []byte) int { // offset of sub-slice b in raw
		for i := range raw {
			if &raw[i] == &b[0] {
				return i
			}
		}
		t.Fatal("slice not in quote")
		return 0
	}
	sig, key := off(q.signature), off(q.attKey)
	qe, qeSig, auth, chain := off(q.qeReport), off(q.qeReportSig), off(q.qeAuthData), off(q.pckChain)
	end := chain + len(q.pckChain)
	layout := []outcome{{attestation.ErrMalformed, "quote"}, {attestation.ErrUnsupported, "quote"}}
	return []flipRegion{
		{"version", 0, 2, []outcome{{attestation.ErrUnsupported, "quote version"}}},
		{"attestation key type", 2, 4, []outcome{{attestation.ErrUnsupported, "attestation key type"}}},
		{"tee type", 4, 8, []outcome{{attestation.ErrUnsupported, "tee type"}}},
		{"header", 8, headerSize, []outcome{{attestation.ErrSignature, "quote signature"}}},
		{"td quote body", headerSize, signedOffset, []outcome{{attestation.ErrSignature, "quote signature"}}},
		{"signed data size", signedOffset, sig, layout},
		{"quote signature", sig, key, []outcome{{attestation.ErrSignature, "quote signature"}}},
		{"attestation key", key, key + attKeySize, []outcome{{attestation.ErrMismatch, "qe report data"}}},
		{"certification data header", key + attKeySize, qe, layout},
		{"qe report", qe, qeSig, []outcome{{attestation.ErrSignature, "qe report signature"}}},
		{"qe report signature", qeSig, qeSig + sigSize, []outcome{{attestation.ErrSignature, "qe report signature"}}},
		{"qe auth data size", qeSig + sigSize, auth, layout},
		{"qe auth data", auth, auth + len(q.qeAuthData), []outcome{{attestation.ErrMismatch, "qe report data"}}},
		{"pck chain header", auth + len(q.qeAuthData), chain, layout},
		{"pck chain", chain, end, []outcome{{attestation.ErrMalformed, "pck chain"}, {attestation.ErrChain, "pck chain"}}},
		{"trailing bytes", end, len(raw), nil},
	}
}

// TestBitFlips flips one bit in every byte of the recorded quote. Every
// flip in the quote proper fails with the reason of the field it hit;
// flips in the unsigned trailing bytes change nothing.
func TestBitFlips(t *testing.T) {
	v := newVerifier(t, Options{Now: fixed(testNow)})
	want, err := v.Verify(context.Background(), tdxEvidence(testdata.TDXQuote))
	if err != nil {
		t.Fatal(err)
	}
	regions := quoteRegions(t)
	if last := regions[len(regions)-1]; last.end != len(testdata.TDXQuote) || last.end-last.start != 39 {
		t.Fatalf("regions end at %d with %d trailing bytes, want %d and 39", last.end, last.end-last.start, len(testdata.TDXQuote))
	}
	for _, r := range regions {
		t.Run(r.name, func(t *testing.T) {
			t.Parallel()
			for i := r.start; i < r.end; i++ {
				q := bytes.Clone(testdata.TDXQuote)
				q[i] ^= 1 << (i % 8)
				got, err := v.Verify(context.Background(), tdxEvidence(q))
				if len(r.want) == 0 {
					if err != nil {
						t.Fatalf("byte %d: %v", i, err)
					}
					if diff := cmp.Diff(want, got); diff != "" {
						t.Fatalf("byte %d: claims changed (-want +got):\n%s", i, diff)
					}
					continue
				}
				if !matches(err, r.want) {
					t.Fatalf("byte %d: got %v, want one of %v", i, err, r.want)
				}
			}
		})
	}
}

func matches(err error, want []outcome) bool {
	var ae *attestation.Error
	if !errors.As(err, &ae) {
		return false
	}
	for _, o := range want {
		if errors.Is(err, o.sentinel) && ae.Check == o.check {
			return true
		}
	}
	return false
}

// TestTruncated verifies every prefix of the recorded quote: all that end
// before the signed data does fail as malformed, the others (which only
// drop trailing bytes) verify.
func TestTruncated(t *testing.T) {
	v := newVerifier(t, Options{Now: fixed(testNow)})
	end := len(testdata.TDXQuote) - 39
	for n := range len(testdata.TDXQuote) {
		_, err := v.Verify(context.Background(), tdxEvidence(testdata.TDXQuote[:n]))
		if n < end {
			if !matches(err, []outcome{{attestation.ErrMalformed, "quote"}}) {
				t.Fatalf("%d bytes: got %v, want malformed quote", n, err)
			}
		} else if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
	}
}

func TestEvidenceChecks(t *testing.T) {
	v := newVerifier(t, Options{Now: fixed(testNow)})
	v5 := with(testdata.TDXQuote, 0, 5)
	sgx := with(testdata.TDXQuote, 4, 0)
	for _, tc := range []struct {
		name     string
		ev       *attestation.Evidence
		sentinel error
		check    string
	}{
		{"nil", nil, attestation.ErrMissing, "evidence"},
		{"snp evidence", &attestation.Evidence{TEE: attestation.TEESEVSNP, Report: testdata.TDXQuote}, attestation.ErrUnsupported, "evidence"},
		{"empty", tdxEvidence(nil), attestation.ErrMalformed, "quote"},
		{"too large", tdxEvidence(make([]byte, attestation.MaxEvidenceSize+1)), attestation.ErrTooLarge, "quote"},
		{"version 5", tdxEvidence(v5), attestation.ErrUnsupported, "quote version"},
		{"sgx quote", tdxEvidence(sgx), attestation.ErrUnsupported, "tee type"},
		{"signed data size zero", tdxEvidence(with(with(with(testdata.TDXQuote, signedOffset, 0), signedOffset+1, 0), signedOffset+2, 0)), attestation.ErrMalformed, "quote"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Verify(context.Background(), tc.ev)
			checkErr(t, err, tc.sentinel, tc.check, nil)
		})
	}
}

// TestChainAttacks replaces or damages the PCK chain.
func TestChainAttacks(t *testing.T) {
	p := synth()
	r := recorded()
	intel := r.leafChain()
	onlyTest := x509.NewCertPool()
	onlyTest.AddCert(p.root)
	crlf := bytes.ReplaceAll(pemCerts(p.pck, p.ca, p.root), []byte("\n"), []byte("\r\n"))
	for _, tc := range []struct {
		name     string
		quote    []byte
		roots    *x509.CertPool
		sentinel error
		check    string
	}{
		// A complete self-made chain with Intel's names: trusted only if
		// its root is.
		{"self-made chain", p.quote(nil), nil, attestation.ErrChain, "pck chain"},
		{"roots without intel", testdata.TDXQuote, onlyTest, attestation.ErrChain, "pck chain"},
		// The self-made leaf under Intel's real CA and root.
		{"self-made leaf under intel ca", buildQuote(quoteSpec{leafKey: p.pckKey, chain: []*x509.Certificate{p.pck, intel[1], intel[2]}}), p.roots(t), attestation.ErrChain, "pck chain"},
		// Intel's chain with the synthetic root appended as its root.
		{"foreign root in chain", buildQuote(quoteSpec{leafKey: p.pckKey, chain: []*x509.Certificate{p.pck, p.ca, intel[2]}}), p.roots(t), attestation.ErrChain, "pck chain"},
		{"leaf and ca swapped", buildQuote(quoteSpec{leafKey: p.pckKey, chain: []*x509.Certificate{p.ca, p.pck, p.root}}), p.roots(t), attestation.ErrChain, "pck chain"},
		{"two certificates", buildQuote(quoteSpec{leafKey: p.pckKey, chain: []*x509.Certificate{p.pck, p.ca}}), p.roots(t), attestation.ErrMalformed, "pck chain"},
		{"four certificates", buildQuote(quoteSpec{leafKey: p.pckKey, chain: []*x509.Certificate{p.pck, p.ca, p.root, p.root}}), p.roots(t), attestation.ErrMalformed, "pck chain"},
		// Right chain, QE report signed by another key.
		{"qe report signed by another key", buildQuote(quoteSpec{leafKey: p.caKey, chain: []*x509.Certificate{p.pck, p.ca, p.root}}), p.roots(t), attestation.ErrSignature, "qe report signature"},
		{"crlf pem", replaceChain(p.quote(nil), crlf), p.roots(t), attestation.ErrMalformed, "pck chain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newVerifier(t, Options{Now: fixed(testNow), Roots: tc.roots})
			_, err := v.Verify(context.Background(), tdxEvidence(tc.quote))
			checkErr(t, err, tc.sentinel, tc.check, nil)
		})
	}
}

// replaceChain returns a synthetic quote with its PCK chain bytes replaced
// (and all sizes adjusted); the QE report still verifies.
func replaceChain(quote, chain []byte) []byte {
	q, err := parseQuote(quote)
	if err != nil {
		panic(err)
	}
	oldLen := len(q.pckChain)
	start := len(quote) - oldLen
	out := append(bytes.Clone(quote[:start]), chain...)
	delta := len(chain) - oldLen
	add := func(off int) {
		v := uint32(out[off]) | uint32(out[off+1])<<8 | uint32(out[off+2])<<16 | uint32(out[off+3])<<24
		v += uint32(delta)
		out[off], out[off+1], out[off+2], out[off+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
	}
	add(signedOffset)                                // signed data size
	add(signedOffset + 4 + sigSize + attKeySize + 2) // certification data size
	add(start - 4)                                   // PCK chain size
	return out
}

// TestPinnedQE: without collateral the QE must still be Intel's production
// TD QE.
func TestPinnedQE(t *testing.T) {
	p := synth()
	v := newVerifier(t, Options{Now: fixed(testNow), Roots: p.roots(t)})
	for _, tc := range []struct {
		name   string
		change func(r []byte)
	}{
		{"debug qe", func(r []byte) { r[qeAttributesOff] |= sgxAttributesDebug }},
		{"other mrsigner", func(r []byte) { r[qeMRSignerOff] ^= 1 }},
		{"sgx qe", func(r []byte) { r[qeISVProdIDOff] = 1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := buildQuote(quoteSpec{qeReport: tc.change, leafKey: p.pckKey, chain: []*x509.Certificate{p.pck, p.ca, p.root}})
			_, err := v.Verify(context.Background(), tdxEvidence(q))
			checkErr(t, err, attestation.ErrMismatch, "qe identity", nil)
		})
	}
}

// TestLibraryCrossCheck builds a chain that cvm's checks accept but
// go-tdx-guest rejects (its root is not named "Intel SGX Root CA"), to show
// that the library runs and that its verdict is classified.
func TestLibraryCrossCheck(t *testing.T) {
	rootKey, caKey, pckKey := newKey(), newKey(), newKey()
	root := makeCert(certSpec{cn: "cvm test root", ca: true}, rootKey, nil, nil)
	ca := makeCert(certSpec{cn: pckPlatformCACN, ca: true}, caKey, root, rootKey)
	pck := makeCert(certSpec{cn: pckLeafCN, extra: []pkix.Extension{recorded().sgxExt}}, pckKey, ca, caKey)
	pool := x509.NewCertPool()
	pool.AddCert(root)
	q := buildQuote(quoteSpec{leafKey: pckKey, chain: []*x509.Certificate{pck, ca, root}})
	v := newVerifier(t, Options{Now: fixed(testNow), Roots: pool})
	_, err := v.Verify(context.Background(), tdxEvidence(q))
	checkErr(t, err, attestation.ErrChain, "pck chain", nil)
	var ae *attestation.Error
	if errors.As(err, &ae); ae.Cause == nil || ae.Detail != "go-tdx-guest rejected a quote that passed cvm's own checks" {
		t.Errorf("got %v, want go-tdx-guest's verdict", err)
	}
}

func TestLibraryError(t *testing.T) {
	for _, tc := range []struct {
		err      error
		sentinel error
		check    string
	}{
		{verify.ErrHashVerificationFail, attestation.ErrSignature, "quote signature"},
		{errors.New("error verifying QE report signature: QE report's signature verification using PCK Leaf Certificate failed"), attestation.ErrSignature, "qe report signature"},
		{fmt.Errorf("error verifying QE report data: %v", verify.ErrSHA56VerificationFail), attestation.ErrMismatch, "qe report data"},
		{verify.ErrPckLeafCertExpired, attestation.ErrExpired, "pck validity"},
		{errors.New("unable to validate root cert: \"x\" is not expected in certificate's subject name"), attestation.ErrChain, "pck chain"},
		{verify.ErrPCKCertChainInvalid, attestation.ErrChain, "pck chain"},
		{errors.New("something new"), attestation.ErrSignature, "quote verification"},
	} {
		got := libraryError(tc.err)
		checkErr(t, got, tc.sentinel, tc.check, tc.err)
	}
}

// TestConcurrentVerify shares one Verifier, with collateral and CRLs, among
// many parallel subtests (run it with -race): go-tdx-guest's Options are
// built per call.
func TestConcurrentVerify(t *testing.T) {
	p := synth()
	spec := defaultColl(p)
	spec.pckCRL = makeCRL(crlSpec{}, p.ca, p.caKey)
	spec.rootCRL = makeCRL(crlSpec{}, p.root, p.rootKey)
	v := newVerifier(t, Options{Now: fixed(testNow), Roots: p.roots(t), Collateral: &staticSource{c: spec.collateral()}, CheckRevocations: true})
	quotes := [][]byte{p.quote(nil), p.quote(func(b []byte) { b[bodyTDAttributes] = 1 })}
	want := make([]*attestation.Claims, len(quotes))
	for i, q := range quotes {
		var err error
		if want[i], err = v.Verify(context.Background(), tdxEvidence(q)); err != nil {
			t.Fatal(err)
		}
	}
	for g := range 32 {
		t.Run(fmt.Sprint(g), func(t *testing.T) {
			t.Parallel()
			for i := range 8 {
				k := (g + i) % len(quotes)
				got, err := v.Verify(context.Background(), tdxEvidence(quotes[k]))
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(want[k], got); diff != "" {
					t.Fatalf("claims differ (-want +got):\n%s", diff)
				}
			}
		})
	}
}

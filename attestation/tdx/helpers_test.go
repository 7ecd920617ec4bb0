package tdx

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-tdx-guest/pcs"
	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/testdata"
)

// Times used throughout the tests. testNow is the time go-tdx-guest's own
// tests use with the sample collateral: inside the validity of the sample
// TCB info (2023-06-18..07-18), QE identity (06-08..07-08) and CRLs.
var (
	testNow  = time.Date(2023, 7, 1, 1, 0, 0, 0, time.UTC)
	testLate = time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC) // PCK leaf still valid (to 2029-09-20), Intel TCB signing cert expired 2025-05-21
)

func fixed(t time.Time) func() time.Time { return func() time.Time { return t } }

// checkErr asserts that err wraps sentinel and is an *attestation.Error
// with the given check; cause, if not nil, must also match errors.Is.
func checkErr(t testing.TB, err, sentinel error, check string, cause error) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v at check %q", sentinel, check)
	}
	var ae *attestation.Error
	if !errors.As(err, &ae) {
		t.Fatalf("error %v is %T, want *attestation.Error", err, err)
	}
	if !errors.Is(err, sentinel) || ae.Check != check {
		t.Fatalf("got %v (check %q), want %v at check %q", err, ae.Check, sentinel, check)
	}
	if cause != nil && !errors.Is(err, cause) {
		t.Fatalf("got %v, want it to also match %v", err, cause)
	}
}

// recorded parses the recorded quote and its PCK leaf once.
type realValues struct {
	q      *quote
	leaf   *x509.Certificate
	ext    *pcs.PckExtensions
	sgxExt pkix.Extension // the SGX extension of the real PCK leaf
}

var recorded = sync.OnceValue(func() *realValues {
	q, err := parseQuote(testdata.TDXQuote)
	if err != nil {
		panic(err)
	}
	certs, err := parseCanonicalPEM(q.pckChain)
	if err != nil {
		panic(err)
	}
	ext, err := pcs.PckCertificateExtensions(certs[0])
	if err != nil {
		panic(err)
	}
	r := &realValues{q: q, leaf: certs[0], ext: ext}
	for _, e := range certs[0].Extensions {
		if e.Id.Equal(pcs.OidSgxExtension) {
			r.sgxExt = e
		}
	}
	return r
})

// testPKI is a synthetic Intel-like PKI generated when the tests run. Its
// names mimic Intel's (go-tdx-guest checks common names) but the
// organization says what it is. None of its keys are committed.
type testPKI struct {
	rootKey, tcbKey, caKey, procCAKey, pckKey, procPCKKey *ecdsa.PrivateKey
	root, tcb, ca, procCA, pck, procPCK                   *x509.Certificate
	// otherRoot is a second root that the verifier never trusts.
	otherRootKey, otherTCBKey *ecdsa.PrivateKey
	otherRoot, otherTCB       *x509.Certificate
}

const synthOrg = "cvm synthetic test PKI (not Intel)"

var serial atomic.Int64

func newKey() *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}

// certSpec describes a synthetic certificate.
type certSpec struct {
	cn        string
	ca        bool
	notBefore time.Time
	notAfter  time.Time
	extra     []pkix.Extension
}

func makeCert(s certSpec, key *ecdsa.PrivateKey, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) *x509.Certificate {
	if s.notBefore.IsZero() {
		s.notBefore = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	if s.notAfter.IsZero() {
		s.notAfter = time.Date(2040, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	skid := sha256.Sum256([]byte(s.cn + big.NewInt(serial.Load()).String()))
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial.Add(1) + 1000),
		Subject:               pkix.Name{CommonName: s.cn, Organization: []string{synthOrg}},
		NotBefore:             s.notBefore,
		NotAfter:              s.notAfter,
		BasicConstraintsValid: true,
		IsCA:                  s.ca,
		SubjectKeyId:          skid[:20],
		CRLDistributionPoints: []string{"https://crl.invalid/" + s.cn},
		ExtraExtensions:       s.extra,
	}
	if s.ca {
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	} else {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		panic(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		panic(err)
	}
	return c
}

var synth = sync.OnceValue(func() *testPKI {
	p := &testPKI{
		rootKey: newKey(), tcbKey: newKey(), caKey: newKey(), procCAKey: newKey(),
		pckKey: newKey(), procPCKKey: newKey(), otherRootKey: newKey(), otherTCBKey: newKey(),
	}
	sgx := []pkix.Extension{recorded().sgxExt}
	p.root = makeCert(certSpec{cn: "Intel SGX Root CA", ca: true}, p.rootKey, nil, nil)
	p.tcb = makeCert(certSpec{cn: tcbSigningCN}, p.tcbKey, p.root, p.rootKey)
	p.ca = makeCert(certSpec{cn: pckPlatformCACN, ca: true}, p.caKey, p.root, p.rootKey)
	p.procCA = makeCert(certSpec{cn: pckProcessorCACN, ca: true}, p.procCAKey, p.root, p.rootKey)
	p.pck = makeCert(certSpec{cn: pckLeafCN, extra: sgx}, p.pckKey, p.ca, p.caKey)
	p.procPCK = makeCert(certSpec{cn: pckLeafCN, extra: sgx}, p.procPCKKey, p.procCA, p.procCAKey)
	p.otherRoot = makeCert(certSpec{cn: "Intel SGX Root CA", ca: true}, p.otherRootKey, nil, nil)
	p.otherTCB = makeCert(certSpec{cn: tcbSigningCN}, p.otherTCBKey, p.otherRoot, p.otherRootKey)
	return p
})

// roots returns the Intel root plus the synthetic root.
func (p *testPKI) roots(t testing.TB) *x509.CertPool {
	t.Helper()
	pool, err := IntelRoots()
	if err != nil {
		t.Fatal(err)
	}
	pool.AddCert(p.root)
	return pool
}

func pemCerts(certs ...*x509.Certificate) []byte {
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return b
}

// signRaw signs SHA-256(msg) and returns r||s.
func signRaw(key *ecdsa.PrivateKey, msg []byte) []byte {
	h := sha256.Sum256(msg)
	r, s, err := ecdsa.Sign(rand.Reader, key, h[:])
	if err != nil {
		panic(err)
	}
	out := make([]byte, 64)
	r.FillBytes(out[:32])
	s.FillBytes(out[32:])
	return out
}

// quoteSpec describes a synthetic quote: the recorded quote's header, body,
// QE report and QE authentication data, optionally modified, re-signed by a
// fresh attestation key whose QE report is signed by leafKey, with chain
// embedded as the PCK chain.
type quoteSpec struct {
	body     func(b []byte) // modifies the 584-byte TD quote body
	qeReport func(r []byte) // modifies the QE report before it is bound and signed
	leafKey  *ecdsa.PrivateKey
	chain    []*x509.Certificate
}

// TD quote body offsets.
const (
	bodyTEETCBSVN    = 0
	bodyMRSignerSeam = 64
	bodySeamAttrs    = 112
	bodyTDAttributes = 120
)

func buildQuote(s quoteSpec) []byte {
	r := recorded()
	raw := testdata.TDXQuote
	header := bytes.Clone(raw[:headerSize])
	body := bytes.Clone(raw[headerSize:signedOffset])
	if s.body != nil {
		s.body(body)
	}
	attKey := newKey()
	pub, err := attKey.PublicKey.Bytes()
	if err != nil {
		panic(err)
	}
	attPub := pub[1:]
	sig := signRaw(attKey, append(bytes.Clone(header), body...))

	qeReport := bytes.Clone(r.q.qeReport)
	if s.qeReport != nil {
		s.qeReport(qeReport)
	}
	auth := bytes.Clone(r.q.qeAuthData)
	h := sha256.Sum256(append(bytes.Clone(attPub), auth...))
	copy(qeReport[qeReportSize-64:], h[:])
	clear(qeReport[qeReportSize-32:])
	qeSig := signRaw(s.leafKey, qeReport)
	chain := pemCerts(s.chain...)

	var cert []byte
	cert = append(cert, qeReport...)
	cert = append(cert, qeSig...)
	cert = binary.LittleEndian.AppendUint16(cert, uint16(len(auth)))
	cert = append(cert, auth...)
	cert = binary.LittleEndian.AppendUint16(cert, certTypePCKChain)
	cert = binary.LittleEndian.AppendUint32(cert, uint32(len(chain)))
	cert = append(cert, chain...)

	var signed []byte
	signed = append(signed, sig...)
	signed = append(signed, attPub...)
	signed = binary.LittleEndian.AppendUint16(signed, certTypeQEReport)
	signed = binary.LittleEndian.AppendUint32(signed, uint32(len(cert)))
	signed = append(signed, cert...)

	out := append(header, body...)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(signed)))
	return append(out, signed...)
}

// synthQuote is a quote whose PCK chain is the synthetic platform chain.
func (p *testPKI) quote(body func([]byte)) []byte {
	return buildQuote(quoteSpec{body: body, leafKey: p.pckKey, chain: []*x509.Certificate{p.pck, p.ca, p.root}})
}

// platformLevel is a TCB level with exactly the recorded platform's values:
// SGX components and PCESVN from the PCK certificate, TDX components from
// the quote's TEE_TCB_SVN.
func platformLevel(status string, advisories ...string) tcbLevelJSON {
	r := recorded()
	return level(r.ext.TCB.CPUSvnComponents, int(r.ext.TCB.PCESvn), r.q.proto.GetTdQuoteBody().GetTeeTcbSvn(), status, advisories...)
}

func level(sgx []byte, pcesvn int, tdx []byte, status string, advisories ...string) tcbLevelJSON {
	l := tcbLevelJSON{TCBDate: "2023-02-15T00:00:00Z", TCBStatus: status, AdvisoryIDs: advisories}
	for _, s := range sgx {
		l.TCB.SGXComponents = append(l.TCB.SGXComponents, tcbComponentJSON{SVN: int(s)})
	}
	for _, s := range tdx {
		l.TCB.TDXComponents = append(l.TCB.TDXComponents, tcbComponentJSON{SVN: int(s)})
	}
	l.TCB.PCESVN = pcesvn
	return l
}

// with returns a copy of b with b[i] set to v.
func with(b []byte, i int, v byte) []byte {
	b = bytes.Clone(b)
	b[i] = v
	return b
}

// collSpec is synthetic collateral for the recorded platform, valid around
// testNow, signed by the synthetic TCB signing key.
type collSpec struct {
	tcb                 tcbInfoJSON
	qe                  qeIdentityJSON
	tcbKey, qeKey       *ecdsa.PrivateKey
	tcbChain, qeChain   []*x509.Certificate
	pckCRL, rootCRL     []byte
	tamperTCB, tamperQE func(body []byte) []byte
}

func defaultColl(p *testPKI) collSpec {
	r := recorded()
	qe := r.q.qeReport
	return collSpec{
		tcb: tcbInfoJSON{
			ID: tcbInfoID, Version: tcbInfoVersion,
			IssueDate: testNow.Add(-24 * time.Hour), NextUpdate: testNow.Add(30 * 24 * time.Hour),
			FMSPC: r.ext.FMSPC, PCEID: r.ext.PCEID, TCBEvaluationDataNumber: 17,
			TDXModule: &tdxModuleJSON{MRSigner: hex.EncodeToString(make([]byte, 48)), Attributes: "0000000000000000", AttributesMask: "FFFFFFFFFFFFFFFF"},
			TCBLevels: []tcbLevelJSON{platformLevel(attestation.TCBStatusUpToDate)},
		},
		qe: qeIdentityJSON{
			ID: qeIdentityID, Version: qeIdentityVersion,
			IssueDate: testNow.Add(-24 * time.Hour), NextUpdate: testNow.Add(20 * 24 * time.Hour),
			MiscSelect: "00000000", MiscSelectMask: "FFFFFFFF",
			Attributes: "11000000000000000000000000000000", AttributesMask: "FBFFFFFFFFFFFFFF0000000000000000",
			MRSigner:  hex.EncodeToString(qe[qeMRSignerOff : qeMRSignerOff+32]),
			ISVProdID: 2,
			TCBLevels: []tcbLevelJSON{{TCB: tcbJSON{ISVSVN: 4}, TCBDate: "2023-02-15T00:00:00Z", TCBStatus: attestation.TCBStatusUpToDate}},
		},
		tcbKey: p.tcbKey, qeKey: p.tcbKey,
		tcbChain: []*x509.Certificate{p.tcb, p.root}, qeChain: []*x509.Certificate{p.tcb, p.root},
	}
}

// signedBody returns {"<field>":<inner>,"signature":"<hex>"}.
func signedBody(field string, inner any, key *ecdsa.PrivateKey) []byte {
	raw, err := json.Marshal(inner)
	if err != nil {
		panic(err)
	}
	name, _ := json.Marshal(field)
	body := []byte("{" + string(name) + ":")
	body = append(body, raw...)
	return append(body, []byte(`,"signature":"`+hex.EncodeToString(signRaw(key, raw))+`"}`)...)
}

func (c collSpec) collateral() *Collateral {
	out := &Collateral{
		TCBInfo:               signedBody("tcbInfo", c.tcb, c.tcbKey),
		TCBInfoIssuerChain:    pemCerts(c.tcbChain...),
		QEIdentity:            signedBody("enclaveIdentity", c.qe, c.qeKey),
		QEIdentityIssuerChain: pemCerts(c.qeChain...),
		PCKCRL:                c.pckCRL,
		RootCRL:               c.rootCRL,
	}
	if c.tamperTCB != nil {
		out.TCBInfo = c.tamperTCB(out.TCBInfo)
	}
	if c.tamperQE != nil {
		out.QEIdentity = c.tamperQE(out.QEIdentity)
	}
	return out
}

// staticSource serves fixed collateral and records what it was asked for.
type staticSource struct {
	c   *Collateral
	err error

	mu    sync.Mutex
	fmspc []byte
	ca    string
}

func (s *staticSource) Collateral(_ context.Context, fmspc []byte, ca string) (*Collateral, error) {
	s.mu.Lock()
	s.fmspc, s.ca = bytes.Clone(fmspc), ca
	s.mu.Unlock()
	return s.c, s.err
}

// crlSpec describes a synthetic CRL.
type crlSpec struct {
	this, next time.Time
	revoked    []*x509.Certificate
}

func makeCRL(s crlSpec, issuer *x509.Certificate, key *ecdsa.PrivateKey) []byte {
	if s.this.IsZero() {
		s.this = testNow.Add(-24 * time.Hour)
	}
	if s.next.IsZero() {
		s.next = testNow.Add(10 * 24 * time.Hour)
	}
	tmpl := &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: s.this, NextUpdate: s.next}
	for _, c := range s.revoked {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries,
			x509.RevocationListEntry{SerialNumber: c.SerialNumber, RevocationTime: s.this})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, issuer, key)
	if err != nil {
		panic(err)
	}
	return der
}

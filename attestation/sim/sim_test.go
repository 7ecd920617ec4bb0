package sim

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"math/big"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	"github.com/google/go-sev-guest/validate"
	"github.com/google/go-sev-guest/verify"
	"github.com/google/go-sev-guest/verify/trust"

	"github.com/greatjail/cvm/testdata"
)

// created is the creation time of the shared test authority.
var created = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// verifyAt is a verification time inside every sim certificate's validity.
var verifyAt = created.Add(24 * time.Hour)

var shared struct {
	once sync.Once
	a    *Authority
	err  error
}

// testAuthority returns one Authority per test binary: RSA-4096 key
// generation takes seconds.
func testAuthority(tb testing.TB) *Authority {
	tb.Helper()
	shared.once.Do(func() { shared.a, shared.err = New(rand.Reader, created) })
	if shared.err != nil {
		tb.Fatalf("New() = %v", shared.err)
	}
	return shared.a
}

var other struct {
	once sync.Once
	a    *Authority
	err  error
}

// otherAuthority is a second, independent authority.
func otherAuthority(tb testing.TB) *Authority {
	tb.Helper()
	other.once.Do(func() { other.a, other.err = New(rand.Reader, created) })
	if other.err != nil {
		tb.Fatalf("New() = %v", other.err)
	}
	return other.a
}

func testRequest(debug bool) Request {
	var req Request
	for i := range req.Measurement {
		req.Measurement[i] = byte(i + 1)
	}
	for i := range req.ReportData {
		req.ReportData[i] = byte(0xA0 + i)
	}
	for i := range req.HostData {
		req.HostData[i] = byte(0x50 + i)
	}
	req.Debug = debug
	return req
}

func mustReport(tb testing.TB, a *Authority, req Request) []byte {
	tb.Helper()
	r, err := a.Report(req)
	if err != nil {
		tb.Fatalf("Report(%+v) = %v", req, err)
	}
	return r
}

// goSevGuestVerify checks report with go-sev-guest's own verify and
// validate packages, trusting rootPEM (ARK then ASK) if given, AMD's
// embedded roots otherwise.
func goSevGuestVerify(report, certTable, rootPEM []byte, vopts *validate.Options) error {
	att, err := abi.ReportCertsToProto(append(bytes.Clone(report), certTable...))
	if err != nil {
		return err
	}
	opts := &verify.Options{DisableCertFetching: true, Now: verifyAt}
	if rootPEM != nil {
		certs, err := parseCertsPEM(rootPEM)
		if err != nil {
			return err
		}
		root := trust.AMDRootCertsProduct(Product)
		if err := root.Decode(certs[1].Raw, certs[0].Raw); err != nil {
			return err
		}
		opts.TrustedRoots = map[string][]*trust.AMDRootCerts{Product: {root}}
	}
	if err := verify.SnpAttestation(att, opts); err != nil {
		return err
	}
	if vopts != nil {
		return validate.SnpAttestation(att, vopts)
	}
	return nil
}

// TestReportGoSevGuest: a sim report passes go-sev-guest's verify (chain,
// KDS certificate profile, signature) and validate (fields, TCB and chip id
// consistency with the VCEK) with the sim root, for every request shape.
func TestReportGoSevGuest(t *testing.T) {
	a := testAuthority(t)
	table, err := a.CertTable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		req  Request
	}{
		{"zero", Request{}},
		{"production", testRequest(false)},
		{"debug", testRequest(true)},
		{"vmpl3 svn7", func() Request { r := testRequest(false); r.VMPL, r.GuestSVN = 3, 7; return r }()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			report := mustReport(t, a, tc.req)
			vmpl := int(tc.req.VMPL)
			chip := a.ChipID()
			tcb := kds.DecomposeTCBVersion(kds.TCBVersion(a.TCB().Raw))
			vopts := &validate.Options{
				GuestPolicy:      abi.SnpPolicy{SMT: true, Debug: tc.req.Debug},
				MinimumGuestSvn:  tc.req.GuestSVN,
				ReportData:       tc.req.ReportData[:],
				HostData:         tc.req.HostData[:],
				Measurement:      tc.req.Measurement[:],
				ChipID:           chip[:],
				ReportIDMA:       bytes.Repeat([]byte{0xFF}, 32),
				VMPL:             &vmpl,
				MinimumBuild:     firmwareBuild,
				MinimumVersion:   firmwareMajor<<8 | firmwareMinor,
				MinimumTCB:       tcb,
				MinimumLaunchTCB: tcb,
				PlatformInfo:     &abi.SnpPlatformInfo{SMTEnabled: true},
			}
			if err := goSevGuestVerify(report, table, a.RootPEM(), vopts); err != nil {
				t.Fatalf("go-sev-guest verify/validate of sim report = %v, want nil", err)
			}
			if !tc.req.Debug {
				return
			}
			vopts.GuestPolicy.Debug = false
			if err := goSevGuestVerify(report, table, a.RootPEM(), vopts); err == nil {
				t.Fatal("validate with Debug disallowed accepted a debug report")
			}
		})
	}
}

// TestReportFields: every field of the report, as go-sev-guest's abi
// parser reads it (which also checks every must-be-zero range).
func TestReportFields(t *testing.T) {
	a := testAuthority(t)
	req := testRequest(true)
	req.VMPL, req.GuestSVN = 2, 9
	report := mustReport(t, a, req)
	if len(report) != abi.ReportSize {
		t.Fatalf("len(report) = %d, want %d", len(report), abi.ReportSize)
	}
	p, err := abi.ReportToProto(report)
	if err != nil {
		t.Fatalf("abi.ReportToProto(report) = %v", err)
	}
	chip := a.ChipID()
	tcb := a.TCB().Raw
	type fields struct {
		Version, GuestSVN, VMPL, SigAlgo, SignerInfo uint32
		Policy, PlatformInfo                         uint64
		Current, Committed, Launch, Reported         uint64
		CPUID                                        uint32
		ReportData, Measurement, HostData, ChipID    []byte
		ReportIDMA, FamilyID, ImageID, IDKey, Author []byte
		CurBuild, CurMinor, CurMajor                 uint32
		ComBuild, ComMinor, ComMajor                 uint32
	}
	got := fields{
		p.Version, p.GuestSvn, p.Vmpl, p.SignatureAlgo, p.SignerInfo,
		p.Policy, p.PlatformInfo,
		p.CurrentTcb, p.CommittedTcb, p.LaunchTcb, p.ReportedTcb,
		p.Cpuid1EaxFms,
		p.ReportData, p.Measurement, p.HostData, p.ChipId,
		p.ReportIdMa, p.FamilyId, p.ImageId, p.IdKeyDigest, p.AuthorKeyDigest,
		p.CurrentBuild, p.CurrentMinor, p.CurrentMajor,
		p.CommittedBuild, p.CommittedMinor, p.CommittedMajor,
	}
	want := fields{
		3, 9, 2, 1, 0,
		0xB0000, 1,
		tcb, tcb, tcb, tcb,
		0x00A00F11, // Milan B1
		req.ReportData[:], req.Measurement[:], req.HostData[:], chip[:],
		bytes.Repeat([]byte{0xFF}, 32), make([]byte, 16), make([]byte, 16), make([]byte, 48), make([]byte, 48),
		21, 55, 1,
		21, 55, 1,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("report fields (-want +got):\n%s", diff)
	}
	if got, want := kds.ProductLineFromFms(p.Cpuid1EaxFms), Product; got != want {
		t.Errorf("product line from CPUID = %q, want %q", got, want)
	}
	if bytes.Equal(p.ReportId, make([]byte, 32)) {
		t.Error("REPORT_ID is all zero, want random")
	}
	// Production policy: no DEBUG bit.
	p2, err := abi.ReportToProto(mustReport(t, a, testRequest(false)))
	if err != nil {
		t.Fatal(err)
	}
	if p2.Policy != 0x30000 {
		t.Errorf("policy without Debug = %#x, want 0x30000", p2.Policy)
	}
	if bytes.Equal(p.ReportId, p2.ReportId) {
		t.Error("two reports share a REPORT_ID")
	}
}

// TestReportSignature: R and S are little-endian in the ABI layout and
// verify with the VCEK over SHA-384 of bytes 0..0x2A0.
func TestReportSignature(t *testing.T) {
	a := testAuthority(t)
	report := mustReport(t, a, testRequest(false))
	vcek, err := x509.ParseCertificate(a.VCEK())
	if err != nil {
		t.Fatal(err)
	}
	if err := verify.SnpReportSignature(report, vcek); err != nil {
		t.Fatalf("verify.SnpReportSignature = %v", err)
	}
	sig := report[offSignature:]
	r := leInt(sig[:sigComponentSize])
	s := leInt(sig[sigComponentSize : 2*sigComponentSize])
	digest := sha512.Sum384(report[:offSignature])
	if !ecdsa.Verify(vcek.PublicKey.(*ecdsa.PublicKey), digest[:], r, s) {
		t.Error("ecdsa.Verify(R, S little-endian) = false")
	}
	if !bytes.Equal(sig[2*sigComponentSize:], make([]byte, len(sig)-2*sigComponentSize)) {
		t.Error("signature area beyond R, S is not zero")
	}
}

// TestReportErrors: bad requests and a failing random source are errors.
func TestReportErrors(t *testing.T) {
	a := testAuthority(t)
	if _, err := a.Report(Request{VMPL: 4}); err == nil {
		t.Error("Report(VMPL 4) = nil error, want error")
	}
	broken := &Authority{
		arkKey: a.arkKey, askKey: a.askKey, vcekKey: a.vcekKey,
		ark: a.ark, ask: a.ask, vcek: a.vcek, chipID: a.chipID, tcb: a.tcb,
		rand: failingReader{},
	}
	if _, err := broken.Report(Request{}); !errors.Is(err, errNoEntropy) {
		t.Errorf("Report with failing rand = %v, want %v", err, errNoEntropy)
	}
	if _, err := New(failingReader{}, created); !errors.Is(err, errNoEntropy) {
		t.Errorf("New(failing rand) = %v, want %v", err, errNoEntropy)
	}
	if _, err := New(nil, created); err == nil {
		t.Error("New(nil rand) = nil error")
	}
}

// TestReportConcurrent: concurrent Report calls (run with -race) each get
// a valid signature and their own REPORT_ID.
func TestReportConcurrent(t *testing.T) {
	a := testAuthority(t)
	vcek, err := x509.ParseCertificate(a.VCEK())
	if err != nil {
		t.Fatal(err)
	}
	const n = 8
	reports := make([][]byte, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			req := testRequest(i%2 == 0)
			req.GuestSVN = uint32(i)
			if reports[i], errs[i] = a.Report(req); errs[i] == nil {
				errs[i] = verify.SnpReportSignature(reports[i], vcek)
			}
		})
	}
	wg.Wait()
	ids := map[string]bool{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("report %d: %v", i, errs[i])
		}
		ids[string(reports[i][offReportID:offReportID+32])] = true
	}
	if len(ids) != n {
		t.Errorf("%d distinct REPORT_IDs in %d reports", len(ids), n)
	}
}

var errNoEntropy = errors.New("no entropy")

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errNoEntropy }

// TestCertificateProfile: the sim chain has AMD's certificate profile,
// compared with AMD's real Milan ASK/ARK and a real VCEK (testdata), plus
// the sim marker.
func TestCertificateProfile(t *testing.T) {
	a := testAuthority(t)
	real, err := parseCertsPEM(testdata.SNPMilanASKARK) // ASK, ARK
	if err != nil {
		t.Fatal(err)
	}
	realVCEK, err := x509.ParseCertificate(testdata.SNPMilanVCEK)
	if err != nil {
		t.Fatal(err)
	}
	type profile struct {
		CommonName, Marker   string
		Version              int
		SigAlg               x509.SignatureAlgorithm
		PubAlg               x509.PublicKeyAlgorithm
		KeyBits              int
		KeyUsage             x509.KeyUsage
		IsCA, PathLenZero    bool
		MaxPathLen           int
		CRL                  []string
		NameRDNs, IssuerRDNs []string // attribute types and string tags, in order
		ExtensionOIDs        []string
		Years                int
	}
	prof := func(c *x509.Certificate) profile {
		p := profile{
			CommonName: c.Subject.CommonName, Marker: c.Subject.SerialNumber,
			Version: c.Version, SigAlg: c.SignatureAlgorithm, PubAlg: c.PublicKeyAlgorithm,
			KeyUsage: c.KeyUsage, IsCA: c.IsCA, PathLenZero: c.MaxPathLenZero, MaxPathLen: c.MaxPathLen,
			CRL: c.CRLDistributionPoints, NameRDNs: rdnShape(t, c.RawSubject), IssuerRDNs: rdnShape(t, c.RawIssuer),
			Years: c.NotAfter.Year() - c.NotBefore.Year(),
		}
		switch k := c.PublicKey.(type) {
		case *rsa.PublicKey:
			p.KeyBits = k.N.BitLen()
		case *ecdsa.PublicKey:
			p.KeyBits = k.Curve.Params().BitSize
		}
		for _, e := range c.Extensions {
			p.ExtensionOIDs = append(p.ExtensionOIDs, e.Id.String())
		}
		return p
	}
	// AMD's real certificates plus the marker RDN in subject (and issuer).
	withMarker := func(p profile) profile {
		p.Marker = marker
		p.NameRDNs = append(p.NameRDNs, "2.5.4.5/19")
		p.IssuerRDNs = append(p.IssuerRDNs, "2.5.4.5/19")
		return p
	}
	wantARK := withMarker(prof(real[1]))
	wantASK := withMarker(prof(real[0]))
	wantVCEK := withMarker(prof(realVCEK))
	// Go orders the extensions of the CAs its own way; compare as sets.
	sortOpt := cmp.Transformer("sort", func(p profile) profile {
		if p.IsCA {
			p.ExtensionOIDs = slices.Sorted(slices.Values(p.ExtensionOIDs))
		}
		return p
	})
	for _, tc := range []struct {
		name      string
		got, want profile
	}{
		{"ARK", prof(a.ark), wantARK},
		{"ASK", prof(a.ask), wantASK},
		{"VCEK", prof(a.vcek), wantVCEK},
	} {
		if diff := cmp.Diff(tc.want, tc.got, sortOpt); diff != "" {
			t.Errorf("%s profile vs AMD's (-want +got):\n%s", tc.name, diff)
		}
	}
	if !a.ark.NotBefore.Equal(created.Add(-time.Hour)) || !a.vcek.NotAfter.Equal(created.Add(-time.Hour).AddDate(7, 0, 0)) {
		t.Errorf("validity ARK %v.., VCEK ..%v, want from %v, VCEK 7 years", a.ark.NotBefore, a.vcek.NotAfter, created.Add(-time.Hour))
	}

	exts, err := kds.VcekCertificateExtensions(a.vcek)
	if err != nil {
		t.Fatalf("kds.VcekCertificateExtensions = %v", err)
	}
	chip := a.ChipID()
	want := &kds.Extensions{StructVersion: 0, ProductName: "Milan-B1", HWID: chip[:], TCBVersion: kds.TCBVersion(a.TCB().Raw)}
	if diff := cmp.Diff(want, exts); diff != "" {
		t.Errorf("VCEK KDS extensions (-want +got):\n%s", diff)
	}
	// The verifier sees the subject values AMD's have.
	for _, c := range []*x509.Certificate{a.ark, a.ask, a.vcek} {
		s := c.Subject
		got := []any{s.Country, s.Locality, s.Province, s.Organization, s.OrganizationalUnit}
		wantName := []any{[]string{"US"}, []string{"Santa Clara"}, []string{"CA"}, []string{"Advanced Micro Devices"}, []string{"Engineering"}}
		if diff := cmp.Diff(wantName, got); diff != "" {
			t.Errorf("%s subject (-want +got):\n%s", s.CommonName, diff)
		}
	}
}

// rdnShape returns, for each RDN of a DER name, "type/tag" of its single
// attribute (tag 12 UTF8String, 19 PrintableString).
func rdnShape(t *testing.T, der []byte) []string {
	t.Helper()
	var rdns []asn1.RawValue
	if _, err := asn1.Unmarshal(der, &rdns); err != nil {
		t.Fatalf("name: %v", err)
	}
	var out []string
	for _, set := range rdns {
		var atvs []struct {
			Type  asn1.ObjectIdentifier
			Value asn1.RawValue
		}
		if _, err := asn1.UnmarshalWithParams(set.FullBytes, &atvs, "set"); err != nil {
			t.Fatalf("rdn: %v", err)
		}
		for _, atv := range atvs {
			out = append(out, atv.Type.String()+"/"+strconv.Itoa(atv.Value.Tag))
		}
	}
	return out
}

// TestCertTable: go-sev-guest's parser finds VCEK, ASK and ARK.
func TestCertTable(t *testing.T) {
	a := testAuthority(t)
	table, err := a.CertTable()
	if err != nil {
		t.Fatal(err)
	}
	var ct abi.CertTable
	if err := ct.Unmarshal(table); err != nil {
		t.Fatalf("abi.CertTable.Unmarshal = %v", err)
	}
	chain := ct.Proto()
	got := [][]byte{chain.VcekCert, chain.AskCert, chain.ArkCert}
	want := [][]byte{a.vcek.Raw, a.ask.Raw, a.ark.Raw}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("certificate table entries (-want +got):\n%s", diff)
	}
	if n := len(ct.Entries); n != 3 {
		t.Errorf("certificate table has %d entries, want 3", n)
	}
}

// TestRootPEM: ARK then ASK, PEM, and VCEK() is the VCEK's DER.
func TestRootPEM(t *testing.T) {
	a := testAuthority(t)
	var names []string
	rest := a.RootPEM()
	for {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, b.Type+" "+c.Subject.CommonName)
	}
	if diff := cmp.Diff([]string{"CERTIFICATE ARK-Milan", "CERTIFICATE SEV-Milan"}, names); diff != "" {
		t.Errorf("RootPEM() blocks (-want +got):\n%s", diff)
	}
	if !bytes.Equal(a.VCEK(), a.vcek.Raw) {
		t.Error("VCEK() is not the VCEK certificate")
	}
}

// TestGoSevGuestAttacks: what go-sev-guest itself does with sim reports
// an attacker presents.
func TestGoSevGuestAttacks(t *testing.T) {
	a := testAuthority(t)
	table, err := a.CertTable()
	if err != nil {
		t.Fatal(err)
	}
	report := mustReport(t, a, testRequest(false))
	flipped := bytes.Clone(report)
	flipped[offMeasurement] ^= 1
	for _, tc := range []struct {
		name            string
		report, rootPEM []byte
	}{
		{"sim report, AMD's embedded roots", report, nil},
		{"sim report, another authority's root", report, otherAuthority(t).RootPEM()},
		{"flipped measurement bit", flipped, a.RootPEM()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := goSevGuestVerify(tc.report, table, tc.rootPEM, nil); err == nil {
				t.Fatal("go-sev-guest accepted the report")
			}
		})
	}
}

// leInt decodes a little-endian unsigned integer.
func leInt(b []byte) *big.Int {
	r := bytes.Clone(b)
	slices.Reverse(r)
	return new(big.Int).SetBytes(r)
}

// BenchmarkReport measures signing one report (what the launcher does per
// guest request).
func BenchmarkReport(b *testing.B) {
	a := testAuthority(b)
	req := testRequest(false)
	for b.Loop() {
		if _, err := a.Report(req); err != nil {
			b.Fatal(err)
		}
	}
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

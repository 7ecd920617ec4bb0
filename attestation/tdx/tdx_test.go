package tdx

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/testdata"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

// repoTDX is the repository's recorded TDX collateral in the DirCollateral
// layout.
const repoTDX = "../../testdata/tdx"

func newVerifier(t testing.TB, opts Options) *Verifier {
	t.Helper()
	v, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func tdxEvidence(report []byte) *attestation.Evidence {
	return &attestation.Evidence{TEE: attestation.TEETDX, Report: report}
}

func TestNewRequiresNow(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Fatal("New without Now succeeded")
	}
}

func TestIntelRoot(t *testing.T) {
	root, err := intelRoot()
	if err != nil {
		t.Fatal(err)
	}
	// The root embedded in the recorded quote is Intel's.
	if !root.Equal(recorded().leafChain()[2]) {
		t.Errorf("embedded root %q is not the root in the recorded quote", root.Subject)
	}
	if got, want := root.Subject.CommonName, "Intel SGX Root CA"; got != want {
		t.Errorf("root CN = %q, want %q", got, want)
	}
}

func (r *realValues) leafChain() []*x509.Certificate {
	certs, err := parseCanonicalPEM(r.q.pckChain)
	if err != nil {
		panic(err)
	}
	return certs
}

// TestRealQuoteNoCollateral verifies the recorded quote offline, at the
// time of the sample collateral and three years later (the PCK leaf is
// valid 2022-09-20..2029-09-20), and compares the claims with the golden
// file.
func TestRealQuoteNoCollateral(t *testing.T) {
	golden := filepath.Join("testdata", "spr-e4-claims.golden.json")
	for _, now := range []time.Time{testNow, testLate} {
		t.Run(now.Format(time.DateOnly), func(t *testing.T) {
			v := newVerifier(t, Options{Now: fixed(now)})
			claims, err := v.Verify(context.Background(), tdxEvidence(testdata.TDXQuote))
			if err != nil {
				t.Fatal(err)
			}
			if got := claims.TDX.TCBStatus; got != attestation.TCBStatusUnknown {
				t.Errorf("TCB status = %q, want %q", got, attestation.TCBStatusUnknown)
			}
			if diff := cmp.Diff([]string{"tdx collateral", "crl"}, claims.Unchecked); diff != "" {
				t.Errorf("Unchecked (-want +got):\n%s", diff)
			}
			if !claims.VerifiedAt.Equal(now) {
				t.Errorf("VerifiedAt = %v, want %v", claims.VerifiedAt, now)
			}
			// The golden file holds the claims at testNow.
			claims.VerifiedAt = testNow
			got, err := json.MarshalIndent(claims, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			if *update && now.Equal(testNow) {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("claims (-golden +got):\n%s", diff)
			}
		})
	}
}

// TestRealQuoteClaims spells out the claims that matter, independently of
// the golden file.
func TestRealQuoteClaims(t *testing.T) {
	v := newVerifier(t, Options{Now: fixed(testNow)})
	c, err := v.Verify(context.Background(), tdxEvidence(testdata.TDXQuote))
	if err != nil {
		t.Fatal(err)
	}
	b := recorded().q.proto.GetTdQuoteBody()
	type summary struct {
		TEE            attestation.TEE
		Product        string
		Measurement    []byte
		RTMRs          int
		ReportData     []byte
		Debug          bool
		MigrationAgent bool
		TDAttributes   []byte
		TEETCBSVN      []byte
		FMSPC          []byte
	}
	got := summary{c.TEE, c.Product, c.Measurement, len(c.RTMRs), c.ReportData, c.Debug, c.MigrationAgent,
		c.TDX.TDAttributes, c.TDX.TEETCBSVN, c.TDX.FMSPC}
	want := summary{attestation.TEETDX, "TDX", b.GetMrTd(), 4, b.GetReportData(), false, false,
		[]byte{0, 0, 0, 0x40, 0, 0, 0, 0}, with(make([]byte, 16), 0, 3), []byte{0x50, 0x80, 0x6f, 0, 0, 0}}
	want.TEETCBSVN[2] = 4
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("claims (-want +got):\n%s", diff)
	}
	if c.CollateralExpiry != nil || c.TDX.TCBDate != nil || c.TDX.QETCBStatus != "" {
		t.Errorf("collateral fields set without collateral: %v %v %q", c.CollateralExpiry, c.TDX.TCBDate, c.TDX.QETCBStatus)
	}
}

// TestTDAttributes checks the DEBUG (bit 0) and MIGRATABLE (bit 29) bits of
// the little-endian TD_ATTRIBUTES.
func TestTDAttributes(t *testing.T) {
	p := synth()
	v := newVerifier(t, Options{Now: fixed(testNow), Roots: p.roots(t)})
	for _, tc := range []struct {
		name            string
		attrs           [8]byte
		debug, migrates bool
	}{
		{"none", [8]byte{}, false, false},
		{"debug", [8]byte{0x01}, true, false},
		{"sept ve disable", [8]byte{0, 0, 0, 0x10}, false, false},
		{"migratable", [8]byte{0, 0, 0, 0x20}, false, true},
		{"pks", [8]byte{0, 0, 0, 0x40}, false, false},
		{"debug and migratable", [8]byte{0x01, 0, 0, 0x20}, true, true},
		{"perfmon", [8]byte{7: 0x80}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q := p.quote(func(b []byte) { copy(b[bodyTDAttributes:], tc.attrs[:]) })
			c, err := v.Verify(context.Background(), tdxEvidence(q))
			if err != nil {
				t.Fatal(err)
			}
			if c.Debug != tc.debug || c.MigrationAgent != tc.migrates {
				t.Errorf("debug, migration = %v, %v; want %v, %v", c.Debug, c.MigrationAgent, tc.debug, tc.migrates)
			}
			if !bytes.Equal(c.TDX.TDAttributes, tc.attrs[:]) {
				t.Errorf("TD attributes = %x, want %x", c.TDX.TDAttributes, tc.attrs)
			}
		})
	}
}

func TestPCKValidity(t *testing.T) {
	for _, now := range []time.Time{
		time.Date(2022, 9, 20, 13, 20, 30, 0, time.UTC), // a second before the leaf's notBefore
		time.Date(2029, 9, 20, 13, 20, 32, 0, time.UTC), // a second after its notAfter
	} {
		v := newVerifier(t, Options{Now: fixed(now)})
		_, err := v.Verify(context.Background(), tdxEvidence(testdata.TDXQuote))
		checkErr(t, err, attestation.ErrExpired, "pck validity", nil)
	}
}

// TestRealCollateral runs the recorded sample collateral against the
// recorded quote. The sample TCB info is newer than the quote's platform
// (its levels need SGX components 5,5,2,2,3,1,0,3 where the PCK certificate
// has 3,3,2,2,2,1,0,2), so go-tdx-guest's own test expects "no matching TCB
// level found"; every check before that passes, CRLs included.
func TestRealCollateral(t *testing.T) {
	sources := map[string]CollateralSource{
		"dir": DirCollateral{Dir: repoTDX},
		"embedded": &staticSource{c: &Collateral{
			TCBInfo: testdata.TDXTCBInfo, TCBInfoIssuerChain: testdata.TDXTCBInfoIssuerChain,
			QEIdentity: testdata.TDXQEIdentity, QEIdentityIssuerChain: testdata.TDXQEIdentityIssuerChain,
			PCKCRL: testdata.TDXPCKCRLPlatform, PCKCRLIssuerChain: testdata.TDXPCKCRLIssuerChain,
			RootCRL: testdata.TDXRootCRL,
		}},
	}
	for name, src := range sources {
		for _, crl := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/crl=%v", name, crl), func(t *testing.T) {
				v := newVerifier(t, Options{Now: fixed(testNow), Collateral: src, CheckRevocations: crl})
				_, err := v.Verify(context.Background(), tdxEvidence(testdata.TDXQuote))
				checkErr(t, err, attestation.ErrCollateral, "tcb level", ErrNoMatchingTCBLevel)
			})
		}
		t.Run(name+"/late", func(t *testing.T) {
			// In 2026 both the Intel TCB signing certificate of the sample
			// (2018-05-21..2025-05-21) and the TCB info (to 2023-07-18) are
			// expired; the issuer chain is checked first.
			v := newVerifier(t, Options{Now: fixed(testLate), Collateral: src})
			_, err := v.Verify(context.Background(), tdxEvidence(testdata.TDXQuote))
			checkErr(t, err, attestation.ErrExpired, "tcb info chain", nil)
		})
	}
	t.Run("tcb info expired", func(t *testing.T) {
		// 2023-07-20: signing certificate valid, TCB info (to 07-18) not.
		v := newVerifier(t, Options{Now: fixed(time.Date(2023, 7, 20, 0, 0, 0, 0, time.UTC)), Collateral: sources["dir"]})
		_, err := v.Verify(context.Background(), tdxEvidence(testdata.TDXQuote))
		checkErr(t, err, attestation.ErrExpired, "tcb info validity", nil)
	})
}

// TestStatuses maps every TCB level status through to the claims, with the
// matched level's advisories and date, the QE status, and the collateral
// expiry.
func TestStatuses(t *testing.T) {
	p := synth()
	for _, status := range tcbStatuses {
		t.Run(status, func(t *testing.T) {
			spec := defaultColl(p)
			spec.tcb.TCBLevels = []tcbLevelJSON{
				// Newer than the platform: does not match.
				level(with(recorded().ext.TCB.CPUSvnComponents, 0, 9), 11, recorded().q.proto.GetTdQuoteBody().GetTeeTcbSvn(), attestation.TCBStatusUpToDate),
				platformLevel(status, "INTEL-SA-00001", "INTEL-SA-00002"),
				platformLevel(attestation.TCBStatusRevoked, "INTEL-SA-99999"),
			}
			spec.tcb.TCBLevels[1].TCBDate = "2022-11-09T00:00:00Z"
			spec.qe.TCBLevels = []tcbLevelJSON{
				{TCB: tcbJSON{ISVSVN: 5}, TCBDate: "2023-06-01T00:00:00Z", TCBStatus: attestation.TCBStatusUpToDate},
				{TCB: tcbJSON{ISVSVN: 4}, TCBDate: "2023-02-15T00:00:00Z", TCBStatus: attestation.TCBStatusOutOfDate, AdvisoryIDs: []string{"INTEL-SA-00003", "INTEL-SA-00001"}},
			}
			src := &staticSource{c: spec.collateral()}
			v := newVerifier(t, Options{Now: fixed(testNow), Roots: p.roots(t), Collateral: src})
			c, err := v.Verify(context.Background(), tdxEvidence(testdata.TDXQuote))
			if err != nil {
				t.Fatal(err)
			}
			date := time.Date(2022, 11, 9, 0, 0, 0, 0, time.UTC)
			expiry := spec.qe.NextUpdate
			want := &attestation.TDXClaims{
				TCBStatus:    status,
				QETCBStatus:  attestation.TCBStatusOutOfDate,
				AdvisoryIDs:  []string{"INTEL-SA-00001", "INTEL-SA-00002", "INTEL-SA-00003"},
				TCBDate:      &date,
				TEETCBSVN:    c.TDX.TEETCBSVN,
				MRSEAM:       c.TDX.MRSEAM,
				TDAttributes: c.TDX.TDAttributes,
				XFAM:         c.TDX.XFAM,
				FMSPC:        []byte{0x50, 0x80, 0x6f, 0, 0, 0},
			}
			if diff := cmp.Diff(want, c.TDX); diff != "" {
				t.Errorf("TDX claims (-want +got):\n%s", diff)
			}
			if c.CollateralExpiry == nil || !c.CollateralExpiry.Equal(expiry) {
				t.Errorf("collateral expiry = %v, want %v", c.CollateralExpiry, expiry)
			}
			// This table runs without CheckRevocations, so the CRLs are
			// named as not checked.
			if diff := cmp.Diff([]string{"crl"}, c.Unchecked); diff != "" {
				t.Errorf("Unchecked (-want +got):\n%s", diff)
			}
			if !bytes.Equal(src.fmspc, c.TDX.FMSPC) || src.ca != "platform" {
				t.Errorf("collateral requested for %x/%s, want %x/platform", src.fmspc, src.ca, c.TDX.FMSPC)
			}
		})
	}
}

// collateralCase is one change to the synthetic collateral and the error it
// must produce.
type collateralCase struct {
	name     string
	change   func(*collSpec)
	sentinel error
	check    string
	cause    error
}

func runCollateralCases(t *testing.T, quote []byte, base func() collSpec, opts Options, cases []collateralCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			spec := base()
			tc.change(&spec)
			o := opts
			o.Collateral = &staticSource{c: spec.collateral()}
			v := newVerifier(t, o)
			_, err := v.Verify(context.Background(), tdxEvidence(quote))
			checkErr(t, err, tc.sentinel, tc.check, tc.cause)
		})
	}
}

func TestCollateralFailures(t *testing.T) {
	p := synth()
	r := recorded()
	tee := r.q.proto.GetTdQuoteBody().GetTeeTcbSvn()
	cpu := r.ext.TCB.CPUSvnComponents
	replace := func(old, new string) func([]byte) []byte {
		return func(b []byte) []byte { return bytes.Replace(b, []byte(old), []byte(new), 1) }
	}
	expiredTCB := makeCert(certSpec{cn: tcbSigningCN, notAfter: testNow.Add(-time.Hour)}, p.tcbKey, p.root, p.rootKey)
	wrongCN := makeCert(certSpec{cn: "Intel SGX PCK Platform CA"}, p.tcbKey, p.root, p.rootKey)
	// A TCB signing certificate issued under the synthetic PCK CA: chains
	// to a trusted root, but not directly.
	indirect := makeCert(certSpec{cn: tcbSigningCN}, p.tcbKey, p.ca, p.caKey)
	cases := []collateralCase{
		{"tcb info expired", func(s *collSpec) { s.tcb.NextUpdate = testNow.Add(-time.Minute) }, attestation.ErrExpired, "tcb info validity", nil},
		{"tcb info not yet valid", func(s *collSpec) { s.tcb.IssueDate = testNow.Add(time.Minute) }, attestation.ErrExpired, "tcb info validity", nil},
		{"qe identity expired", func(s *collSpec) { s.qe.NextUpdate = testNow.Add(-time.Minute) }, attestation.ErrExpired, "qe identity validity", nil},
		{"fmspc", func(s *collSpec) { s.tcb.FMSPC = "00906ED50000" }, attestation.ErrCollateral, "tcb info platform", nil},
		{"pceid", func(s *collSpec) { s.tcb.PCEID = "0001" }, attestation.ErrCollateral, "tcb info platform", nil},
		{"tdx module mrsigner", func(s *collSpec) { s.tcb.TDXModule.MRSigner = "01" + s.tcb.TDXModule.MRSigner[2:] }, attestation.ErrMismatch, "tdx module", nil},
		{"tdx module attributes", func(s *collSpec) { s.tcb.TDXModule.Attributes = "0100000000000000" }, attestation.ErrMismatch, "tdx module", nil},
		{"no tdx module", func(s *collSpec) { s.tcb.TDXModule = nil }, attestation.ErrCollateral, "tdx module", nil},
		{"sgx component newer", func(s *collSpec) {
			s.tcb.TCBLevels = []tcbLevelJSON{level(with(cpu, 7, cpu[7]+1), 11, tee, "UpToDate")}
		}, attestation.ErrCollateral, "tcb level", ErrNoMatchingTCBLevel},
		{"pcesvn newer", func(s *collSpec) { s.tcb.TCBLevels = []tcbLevelJSON{level(cpu, 12, tee, "UpToDate")} }, attestation.ErrCollateral, "tcb level", ErrNoMatchingTCBLevel},
		{"tdx component newer", func(s *collSpec) {
			s.tcb.TCBLevels = []tcbLevelJSON{level(cpu, 11, with(tee, 2, 5), "UpToDate")}
		}, attestation.ErrCollateral, "tcb level", ErrNoMatchingTCBLevel},
		{"tdx module major version differs", func(s *collSpec) {
			s.tcb.TCBLevels = []tcbLevelJSON{level(cpu, 11, with(tee, 1, 1), "UpToDate")}
		}, attestation.ErrCollateral, "tcb level", ErrNoMatchingTCBLevel},
		{"qe mrsigner", func(s *collSpec) { s.qe.MRSigner = "00" + s.qe.MRSigner[2:] }, attestation.ErrMismatch, "qe identity", nil},
		{"qe isvprodid", func(s *collSpec) { s.qe.ISVProdID = 1 }, attestation.ErrMismatch, "qe identity", nil},
		{"qe miscselect", func(s *collSpec) { s.qe.MiscSelect = "01000000" }, attestation.ErrMismatch, "qe identity", nil},
		{"qe attributes", func(s *collSpec) { s.qe.AttributesMask = "FFFFFFFFFFFFFFFF0000000000000000" }, attestation.ErrMismatch, "qe identity", nil},
		{"qe isvsvn too old", func(s *collSpec) { s.qe.TCBLevels[0].TCB.ISVSVN = 5 }, attestation.ErrCollateral, "qe tcb level", ErrNoMatchingTCBLevel},
		{"tcb info from untrusted root", func(s *collSpec) {
			s.tcbKey, s.tcbChain = p.otherTCBKey, []*x509.Certificate{p.otherTCB, p.otherRoot}
		}, attestation.ErrChain, "tcb info chain", nil},
		{"qe identity from untrusted root", func(s *collSpec) {
			s.qeKey, s.qeChain = p.otherTCBKey, []*x509.Certificate{p.otherTCB, p.otherRoot}
		}, attestation.ErrChain, "qe identity chain", nil},
		{"tcb info signed by another key", func(s *collSpec) { s.tcbKey = p.otherTCBKey }, attestation.ErrSignature, "tcb info signature", nil},
		{"qe identity signed by another key", func(s *collSpec) { s.qeKey = p.pckKey }, attestation.ErrSignature, "qe identity signature", nil},
		{"tcb info tampered", func(s *collSpec) { s.tamperTCB = replace(`"tcbStatus":"UpToDate"`, `"tcbStatus":"UpToDatE"`) }, attestation.ErrSignature, "tcb info signature", nil},
		{"tcb info tampered, same meaning", func(s *collSpec) { s.tamperTCB = replace(`"tcbType":0`, `"tcbType": 0`) }, attestation.ErrSignature, "tcb info signature", nil},
		{"qe identity tampered", func(s *collSpec) { s.tamperQE = replace(`"isvprodid":2`, `"isvprodid":3`) }, attestation.ErrSignature, "qe identity signature", nil},
		{"signature not hex", func(s *collSpec) { s.tamperTCB = replace(`"signature":"`, `"signature":"zz`) }, attestation.ErrCollateral, "tcb info body", nil},
		{"body not json", func(s *collSpec) { s.tamperTCB = func([]byte) []byte { return []byte("<html>") } }, attestation.ErrCollateral, "tcb info body", nil},
		{"no tcb info", func(s *collSpec) { s.tamperTCB = func([]byte) []byte { return nil } }, attestation.ErrMissing, "tcb info body", nil},
		{"tcb info too large", func(s *collSpec) {
			s.tamperTCB = func([]byte) []byte { return make([]byte, maxCollateralSize+1) }
		}, attestation.ErrTooLarge, "tcb info body", nil},
		{"tcb info version 2", func(s *collSpec) { s.tcb.Version = 2 }, attestation.ErrCollateral, "tcb info body", nil},
		{"tcb info for sgx", func(s *collSpec) { s.tcb.ID = "SGX" }, attestation.ErrCollateral, "tcb info body", nil},
		{"unknown status", func(s *collSpec) { s.tcb.TCBLevels[0].TCBStatus = "Fine" }, attestation.ErrCollateral, "tcb info body", nil},
		{"15 sgx components", func(s *collSpec) {
			s.tcb.TCBLevels[0].TCB.SGXComponents = s.tcb.TCBLevels[0].TCB.SGXComponents[1:]
		}, attestation.ErrCollateral, "tcb info body", nil},
		{"no tcb levels", func(s *collSpec) { s.tcb.TCBLevels = nil }, attestation.ErrCollateral, "tcb info body", nil},
		{"qe identity for sgx qe", func(s *collSpec) { s.qe.ID = "QE" }, attestation.ErrCollateral, "qe identity body", nil},
		{"signing cert expired", func(s *collSpec) { s.tcbChain = []*x509.Certificate{expiredTCB, p.root} }, attestation.ErrExpired, "tcb info chain", nil},
		{"signer is not a tcb signing cert", func(s *collSpec) { s.tcbChain = []*x509.Certificate{wrongCN, p.root} }, attestation.ErrChain, "tcb info chain", nil},
		{"signer not issued by a root", func(s *collSpec) {
			s.tcbChain = []*x509.Certificate{indirect, p.ca, p.root}
		}, attestation.ErrChain, "tcb info chain", nil},
		{"empty issuer chain", func(s *collSpec) { s.tcbChain = nil }, attestation.ErrMissing, "tcb info chain", nil},
	}
	runCollateralCases(t, testdata.TDXQuote, func() collSpec { return defaultColl(p) }, Options{Now: fixed(testNow), Roots: p.roots(t)}, cases)

	t.Run("source error", func(t *testing.T) {
		src := &staticSource{err: errors.New("pcs unreachable")}
		v := newVerifier(t, Options{Now: fixed(testNow), Roots: p.roots(t), Collateral: src})
		_, err := v.Verify(context.Background(), tdxEvidence(testdata.TDXQuote))
		checkErr(t, err, attestation.ErrMissing, "tdx collateral", src.err)
	})
	t.Run("source returns nothing", func(t *testing.T) {
		v := newVerifier(t, Options{Now: fixed(testNow), Roots: p.roots(t), Collateral: &staticSource{}})
		_, err := v.Verify(context.Background(), tdxEvidence(testdata.TDXQuote))
		checkErr(t, err, attestation.ErrMissing, "tdx collateral", nil)
	})
}

// TestTDXModuleIdentity uses synthetic quotes from a TDX module with major
// version 1 (TEE_TCB_SVN[1] = 1, minor SVN TEE_TCB_SVN[0] = 3), which are
// judged by the TCB info's tdxModuleIdentities.
func TestTDXModuleIdentity(t *testing.T) {
	p := synth()
	r := recorded()
	tee := with(r.q.proto.GetTdQuoteBody().GetTeeTcbSvn(), 1, 1)
	tee[0] = 3
	q := p.quote(func(b []byte) { copy(b[bodyTEETCBSVN:], tee) })
	cpu := r.ext.TCB.CPUSvnComponents
	zeros48 := "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
	base := func(moduleStatus string) func() collSpec {
		return func() collSpec {
			s := defaultColl(p)
			// As in Intel's TCB info for TDX 1.5 platforms: the platform
			// levels list TDX module SVNs 0.x that the quote's 3.1 does not
			// reach, and the module is judged by TDX_01.
			s.tcb.TCBLevels = []tcbLevelJSON{level(cpu, 11, with(with(tee, 0, 5), 1, 0), attestation.TCBStatusSWHardeningNeeded, "INTEL-SA-00010")}
			s.tcb.TDXModuleIdentities = []tdxModuleIdentityJSON{
				{ID: "TDX_03", MRSigner: zeros48, Attributes: "0000000000000000", AttributesMask: "FFFFFFFFFFFFFFFF",
					TCBLevels: []tcbLevelJSON{{TCB: tcbJSON{ISVSVN: 0}, TCBDate: "2024-01-01T00:00:00Z", TCBStatus: "Revoked"}}},
				{ID: "tdx_01", MRSigner: zeros48, Attributes: "0000000000000000", AttributesMask: "FFFFFFFFFFFFFFFF",
					TCBLevels: []tcbLevelJSON{
						{TCB: tcbJSON{ISVSVN: 4}, TCBDate: "2024-03-13T00:00:00Z", TCBStatus: "UpToDate"},
						{TCB: tcbJSON{ISVSVN: 2}, TCBDate: "2022-08-09T00:00:00Z", TCBStatus: moduleStatus, AdvisoryIDs: []string{"INTEL-SA-00020"}},
					}},
			}
			return s
		}
	}
	opts := Options{Now: fixed(testNow), Roots: p.roots(t)}
	for _, tc := range []struct {
		module, want string
	}{
		{attestation.TCBStatusUpToDate, attestation.TCBStatusSWHardeningNeeded},
		{attestation.TCBStatusOutOfDate, attestation.TCBStatusOutOfDate},
		{attestation.TCBStatusRevoked, attestation.TCBStatusRevoked},
	} {
		t.Run("module "+tc.module, func(t *testing.T) {
			spec := base(tc.module)()
			v := newVerifier(t, Options{Now: opts.Now, Roots: opts.Roots, Collateral: &staticSource{c: spec.collateral()}})
			c, err := v.Verify(context.Background(), tdxEvidence(q))
			if err != nil {
				t.Fatal(err)
			}
			date := time.Date(2022, 8, 9, 0, 0, 0, 0, time.UTC) // the module level's, earlier than the platform's
			type got struct {
				Status     string
				Advisories []string
				Date       time.Time
			}
			want := got{tc.want, []string{"INTEL-SA-00010", "INTEL-SA-00020"}, date}
			if diff := cmp.Diff(want, got{c.TDX.TCBStatus, c.TDX.AdvisoryIDs, *c.TDX.TCBDate}); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	runCollateralCases(t, q, base(attestation.TCBStatusUpToDate), opts, []collateralCase{
		{"no identity for major version", func(s *collSpec) { s.tcb.TDXModuleIdentities = s.tcb.TDXModuleIdentities[:1] }, attestation.ErrCollateral, "tdx module", nil},
		{"module mrsigner", func(s *collSpec) { s.tcb.TDXModuleIdentities[1].MRSigner = "ff" + zeros48[2:] }, attestation.ErrMismatch, "tdx module", nil},
		{"module minor svn too old", func(s *collSpec) {
			s.tcb.TDXModuleIdentities[1].TCBLevels[1].TCB.ISVSVN = 4
		}, attestation.ErrCollateral, "tcb level", ErrNoMatchingTCBLevel},
		{"platform level newer beyond the module bytes", func(s *collSpec) {
			s.tcb.TCBLevels[0] = level(cpu, 11, with(tee, 2, tee[2]+1), "UpToDate")
		}, attestation.ErrCollateral, "tcb level", ErrNoMatchingTCBLevel},
	})
}

func TestConvergeModuleStatus(t *testing.T) {
	for _, tc := range []struct{ platform, module, want string }{
		{"UpToDate", "UpToDate", "UpToDate"},
		{"SWHardeningNeeded", "UpToDate", "SWHardeningNeeded"},
		{"UpToDate", "OutOfDate", "OutOfDate"},
		{"SWHardeningNeeded", "OutOfDate", "OutOfDate"},
		{"ConfigurationNeeded", "OutOfDate", "OutOfDateConfigurationNeeded"},
		{"ConfigurationAndSWHardeningNeeded", "OutOfDate", "OutOfDateConfigurationNeeded"},
		{"OutOfDate", "OutOfDate", "OutOfDate"},
		{"OutOfDateConfigurationNeeded", "OutOfDate", "OutOfDateConfigurationNeeded"},
		{"Revoked", "OutOfDate", "Revoked"},
		{"UpToDate", "Revoked", "Revoked"},
		{"ConfigurationNeeded", "Revoked", "Revoked"},
	} {
		if got := convergeModuleStatus(tc.platform, tc.module); got != tc.want {
			t.Errorf("convergeModuleStatus(%q, %q) = %q, want %q", tc.platform, tc.module, got, tc.want)
		}
	}
}

// TestRevocation uses a synthetic quote whose PCK chain ends in the
// synthetic root, so that the test can sign CRLs for it.
func TestRevocation(t *testing.T) {
	p := synth()
	q := p.quote(nil)
	base := func() collSpec {
		s := defaultColl(p)
		s.pckCRL = makeCRL(crlSpec{}, p.ca, p.caKey)
		s.rootCRL = makeCRL(crlSpec{next: testNow.Add(5 * 24 * time.Hour)}, p.root, p.rootKey)
		return s
	}
	opts := Options{Now: fixed(testNow), Roots: p.roots(t), CheckRevocations: true}

	t.Run("not revoked", func(t *testing.T) {
		o := opts
		o.Collateral = &staticSource{c: base().collateral()}
		c, err := newVerifier(t, o).Verify(context.Background(), tdxEvidence(q))
		if err != nil {
			t.Fatal(err)
		}
		if len(c.Unchecked) != 0 {
			t.Errorf("Unchecked = %q, want none", c.Unchecked)
		}
		if want := testNow.Add(5 * 24 * time.Hour); c.CollateralExpiry == nil || !c.CollateralExpiry.Equal(want) {
			t.Errorf("collateral expiry = %v, want the root CRL's nextUpdate %v", c.CollateralExpiry, want)
		}
	})
	for _, tc := range []struct {
		name    string
		pck     []byte
		root    []byte
		check   bool
		want    []string
		wantErr bool
	}{
		{name: "no crls", check: true, want: []string{"crl"}},
		{name: "no root crl", pck: base().pckCRL, check: true, want: []string{"crl"}},
		{name: "revocation not requested", pck: makeCRL(crlSpec{revoked: []*x509.Certificate{p.pck}}, p.ca, p.caKey), check: false, want: []string{"crl"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := base()
			s.pckCRL, s.rootCRL = tc.pck, tc.root
			o := opts
			o.CheckRevocations = tc.check
			o.Collateral = &staticSource{c: s.collateral()}
			c, err := newVerifier(t, o).Verify(context.Background(), tdxEvidence(q))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, c.Unchecked); diff != "" {
				t.Errorf("Unchecked (-want +got):\n%s", diff)
			}
		})
	}
	otherCAKey := newKey()
	runCollateralCases(t, q, base, opts, []collateralCase{
		{"pck revoked", func(s *collSpec) {
			s.pckCRL = makeCRL(crlSpec{revoked: []*x509.Certificate{p.procPCK, p.pck}}, p.ca, p.caKey)
		}, attestation.ErrRevoked, "crl", nil},
		{"pck ca revoked", func(s *collSpec) {
			s.rootCRL = makeCRL(crlSpec{revoked: []*x509.Certificate{p.ca}}, p.root, p.rootKey)
		}, attestation.ErrRevoked, "crl", nil},
		{"tcb signing cert revoked", func(s *collSpec) {
			s.rootCRL = makeCRL(crlSpec{revoked: []*x509.Certificate{p.tcb}}, p.root, p.rootKey)
		}, attestation.ErrRevoked, "crl", nil},
		{"pck crl expired", func(s *collSpec) {
			s.pckCRL = makeCRL(crlSpec{next: testNow.Add(-time.Second)}, p.ca, p.caKey)
		}, attestation.ErrExpired, "pck crl validity", nil},
		{"root crl expired", func(s *collSpec) {
			s.rootCRL = makeCRL(crlSpec{this: testNow.Add(-48 * time.Hour), next: testNow.Add(-time.Second)}, p.root, p.rootKey)
		}, attestation.ErrExpired, "root crl validity", nil},
		{"pck crl not yet valid", func(s *collSpec) {
			s.pckCRL = makeCRL(crlSpec{this: testNow.Add(time.Hour)}, p.ca, p.caKey)
		}, attestation.ErrExpired, "pck crl validity", nil},
		{"pck crl forged", func(s *collSpec) {
			// Same issuer name and key identifier, another key.
			forger := *p.ca
			s.pckCRL = makeCRL(crlSpec{}, &forger, otherCAKey)
		}, attestation.ErrSignature, "pck crl signature", nil},
		{"pck crl of another ca", func(s *collSpec) {
			s.pckCRL = makeCRL(crlSpec{}, p.procCA, p.procCAKey)
		}, attestation.ErrCollateral, "pck crl", nil},
		{"root crl forged", func(s *collSpec) {
			// otherRoot has the synthetic root's name but another key.
			s.rootCRL = makeCRL(crlSpec{}, p.otherRoot, p.otherRootKey)
		}, attestation.ErrSignature, "root crl signature", nil},
		{"root crl of intel's root", func(s *collSpec) { s.rootCRL = testdata.TDXRootCRL }, attestation.ErrCollateral, "root crl", nil},
		{"pck crl garbage", func(s *collSpec) { s.pckCRL = []byte{0x30, 0x03, 0x02, 0x01, 0x01} }, attestation.ErrCollateral, "pck crl", nil},
	})
}

// TestProcessorCA verifies a synthetic quote whose PCK certificate was
// issued by a PCK Processor CA; collateral is requested for "processor".
func TestProcessorCA(t *testing.T) {
	p := synth()
	q := buildQuote(quoteSpec{leafKey: p.procPCKKey, chain: []*x509.Certificate{p.procPCK, p.procCA, p.root}})
	src := &staticSource{c: defaultColl(p).collateral()}
	v := newVerifier(t, Options{Now: fixed(testNow), Roots: p.roots(t), Collateral: src})
	c, err := v.Verify(context.Background(), tdxEvidence(q))
	if err != nil {
		t.Fatal(err)
	}
	if c.TDX.TCBStatus != attestation.TCBStatusUpToDate || src.ca != "processor" {
		t.Errorf("status %q, collateral CA %q; want UpToDate, processor", c.TDX.TCBStatus, src.ca)
	}
}

func TestPlatform(t *testing.T) {
	v, err := New(Options{Now: func() time.Time { return time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC) }})
	if err != nil {
		t.Fatal(err)
	}
	fmspc, ca, err := v.Platform(testdata.TDXQuote)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]any{"50806f000000", "platform"}, []any{hex.EncodeToString(fmspc), ca}); diff != "" {
		t.Errorf("Platform() mismatch (-want +got):\n%s", diff)
	}
	if _, _, err := v.Platform(testdata.TDXQuote[:100]); !errors.Is(err, attestation.ErrMalformed) {
		t.Errorf("Platform(truncated) = %v, want ErrMalformed", err)
	}
	late, _ := New(Options{Now: func() time.Time { return time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC) }})
	if _, _, err := late.Platform(testdata.TDXQuote); !errors.Is(err, attestation.ErrExpired) {
		t.Errorf("Platform(after PCK expiry) = %v, want ErrExpired", err)
	}
}

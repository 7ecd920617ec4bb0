package sim

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha512"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/attestation/sevsnp"
	"github.com/greatjail/cvm/testdata"
)

func at(t time.Time) func() time.Time { return func() time.Time { return t } }

func simVerifier(tb testing.TB, a *Authority) attestation.Verifier {
	tb.Helper()
	v, err := NewVerifier(a.RootPEM(), at(verifyAt))
	if err != nil {
		tb.Fatalf("NewVerifier(sim root) = %v", err)
	}
	return v
}

func simEvidence(tb testing.TB, a *Authority, req Request) *attestation.Evidence {
	tb.Helper()
	table, err := a.CertTable()
	if err != nil {
		tb.Fatal(err)
	}
	return &attestation.Evidence{TEE: attestation.TEESim, Report: mustReport(tb, a, req), CertTable: table}
}

func ptr[T any](v T) *T { return &v }

// TestRoundTrip: New → Report → the sevsnp verifier in simulated mode
// (NewVerifier) gives the claims of the request, tee "sim", for each way
// the host can hand over the certificates.
func TestRoundTrip(t *testing.T) {
	a := testAuthority(t)
	v := simVerifier(t, a)
	tcb := a.TCB()
	chip := a.ChipID()
	vmpl3 := testRequest(true)
	vmpl3.VMPL, vmpl3.GuestSVN = 3, 5
	for _, tc := range []struct {
		name  string
		req   Request
		shape func(ev *attestation.Evidence)
	}{
		{"production, cert table", testRequest(false), func(*attestation.Evidence) {}},
		{"debug, cert table", testRequest(true), func(*attestation.Evidence) {}},
		{"vmpl3 svn5", vmpl3, func(*attestation.Evidence) {}},
		{"zero request", Request{}, func(*attestation.Evidence) {}},
		{"report with appended cert table", testRequest(false), func(ev *attestation.Evidence) {
			ev.Report = append(ev.Report, ev.CertTable...)
			ev.CertTable = nil
		}},
		{"vcek in Certificates", testRequest(false), func(ev *attestation.Evidence) {
			ev.CertTable = nil
			ev.Certificates = [][]byte{a.VCEK()}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := simEvidence(t, a, tc.req)
			tc.shape(ev)
			got, err := v.Verify(context.Background(), ev)
			if err != nil {
				t.Fatalf("Verify = %v", err)
			}
			policy := uint64(0x30000)
			if tc.req.Debug {
				policy |= 0x80000
			}
			want := &attestation.Claims{
				TEE:         attestation.TEESim,
				Product:     "Milan",
				Measurement: tc.req.Measurement[:],
				ReportData:  tc.req.ReportData[:],
				HostData:    tc.req.HostData[:],
				Debug:       tc.req.Debug,
				SMT:         true,
				VMPL:        ptr(int(tc.req.VMPL)),
				GuestSVN:    ptr(tc.req.GuestSVN),
				Policy:      &policy,
				TCB:         &attestation.SNPTCB{Current: tcb, Committed: tcb, Launch: tcb, Reported: tcb},
				Signer:      "vcek",
				ChipID:      chip[:],
				// sevsnp lists the CRL whenever it did not check one; a
				// sim chain has no CRL.
				Unchecked:  []string{"crl"},
				VerifiedAt: verifyAt,
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("claims (-want +got):\n%s", diff)
			}
		})
	}
}

// TestAttacks: each way of passing off, altering or re-rooting a sim
// report fails with its own sentinel and check.
func TestAttacks(t *testing.T) {
	a, o := testAuthority(t), otherAuthority(t)
	simV := simVerifier(t, a)
	amdV, err := sevsnp.New(sevsnp.Options{Now: at(verifyAt)})
	if err != nil {
		t.Fatalf("sevsnp.New(default) = %v", err)
	}
	otherV := simVerifier(t, o)
	good := simEvidence(t, a, testRequest(false))
	edit := func(f func(ev *attestation.Evidence)) *attestation.Evidence {
		ev := &attestation.Evidence{
			TEE: good.TEE, Report: bytes.Clone(good.Report), CertTable: bytes.Clone(good.CertTable),
		}
		f(ev)
		return ev
	}
	otherTable, err := o.CertTable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		v        attestation.Verifier
		ev       *attestation.Evidence
		sentinel error
		check    string
	}{
		{"sim report relabelled snp, default AMD verifier", amdV,
			edit(func(ev *attestation.Evidence) { ev.TEE = attestation.TEESEVSNP }), attestation.ErrChain, "simulated root"},
		{"sim report relabelled snp, vcek only, default AMD verifier", amdV,
			edit(func(ev *attestation.Evidence) {
				ev.TEE, ev.CertTable, ev.Certificates = attestation.TEESEVSNP, nil, [][]byte{a.VCEK()}
			}), attestation.ErrChain, "simulated root"},
		{"sim report, default AMD verifier", amdV, good, attestation.ErrUnsupported, "tee"},
		{"another authority's root", otherV, good, attestation.ErrChain, "vcek chain"},
		{"another chip's vcek, this root", simV,
			edit(func(ev *attestation.Evidence) { ev.CertTable = otherTable }), attestation.ErrMismatch, "chip id"},
		{"another chip's vcek and root", otherV,
			edit(func(ev *attestation.Evidence) { ev.CertTable = otherTable }), attestation.ErrMismatch, "chip id"},
		{"flipped measurement bit", simV,
			edit(func(ev *attestation.Evidence) { ev.Report[offMeasurement+7] ^= 0x10 }), attestation.ErrSignature, "report signature"},
		{"flipped report data bit", simV,
			edit(func(ev *attestation.Evidence) { ev.Report[offReportData] ^= 1 }), attestation.ErrSignature, "report signature"},
		{"flipped signature bit", simV,
			edit(func(ev *attestation.Evidence) { ev.Report[offSignature+3] ^= 1 }), attestation.ErrSignature, "report signature"},
		{"debug bit set without re-signing", simV,
			edit(func(ev *attestation.Evidence) { ev.Report[offPolicy+2] |= 0x08 }), attestation.ErrSignature, "report signature"},
		{"real AMD report to the sim verifier", simV,
			&attestation.Evidence{TEE: attestation.TEESim, Report: testdata.SNPMilanReport, Certificates: [][]byte{testdata.SNPMilanVCEK}},
			attestation.ErrChain, "simulated root"},
		{"no vcek", simV,
			edit(func(ev *attestation.Evidence) { ev.CertTable = nil }), attestation.ErrMissing, "vcek"},
		{"vcek expired (8 years on)", mustSimVerifier(t, a, created.AddDate(8, 0, 0)), good, attestation.ErrExpired, "vcek validity"},
		{"before the chain existed", mustSimVerifier(t, a, created.Add(-2*time.Hour)), good, attestation.ErrExpired, "vcek validity"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			claims, err := tc.v.Verify(context.Background(), tc.ev)
			if err == nil {
				t.Fatalf("Verify = %+v, nil error; want %v", claims, tc.sentinel)
			}
			var ae *attestation.Error
			if !errors.Is(err, tc.sentinel) || !errors.As(err, &ae) || ae.Check != tc.check {
				t.Errorf("Verify error = %v; want %v with check %q", err, tc.sentinel, tc.check)
			}
		})
	}
}

// TestRelabelledSimStaysSim: sim evidence labelled "snp" and given to the
// sim verifier is still reported as tee "sim" (sevsnp in simulated mode
// accepts either label; the claims, not the label, carry the TEE).
func TestRelabelledSimStaysSim(t *testing.T) {
	a := testAuthority(t)
	ev := simEvidence(t, a, testRequest(false))
	ev.TEE = attestation.TEESEVSNP
	claims, err := simVerifier(t, a).Verify(context.Background(), ev)
	if err != nil {
		// Refusing the mislabelled evidence is fine too.
		var ae *attestation.Error
		if !errors.Is(err, attestation.ErrUnsupported) || !errors.As(err, &ae) || ae.Check != "tee" {
			t.Fatalf("Verify(sim evidence labelled snp) = %v; want success with tee sim, or ErrUnsupported check \"tee\"", err)
		}
		return
	}
	if claims.TEE != attestation.TEESim {
		t.Fatalf("claims.TEE = %q, want %q", claims.TEE, attestation.TEESim)
	}
}

func mustSimVerifier(tb testing.TB, a *Authority, now time.Time) attestation.Verifier {
	tb.Helper()
	v, err := NewVerifier(a.RootPEM(), at(now))
	if err != nil {
		tb.Fatalf("NewVerifier = %v", err)
	}
	return v
}

// TestNewVerifierRefuses: NewVerifier trusts only a sim root.
func TestNewVerifierRefuses(t *testing.T) {
	a := testAuthority(t)
	for _, tc := range []struct {
		name     string
		root     []byte
		sentinel error
	}{
		{"AMD's real Milan ASK and ARK", testdata.SNPMilanASKARK, attestation.ErrChain},
		{"sim root plus AMD's ARK", append(a.RootPEM(), testdata.SNPMilanASKARK...), attestation.ErrChain},
		{"VCEK instead of the root", pemCert(a.VCEK()), attestation.ErrChain},
		{"empty", nil, attestation.ErrMissing},
		{"garbage", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), attestation.ErrMalformed},
		{"not PEM", a.VCEK(), attestation.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := NewVerifier(tc.root, at(verifyAt))
			var ae *attestation.Error
			if !errors.Is(err, tc.sentinel) || !errors.As(err, &ae) || ae.Check != "simulated root" {
				t.Fatalf("NewVerifier = %v, %v; want %v with check \"simulated root\"", v, err, tc.sentinel)
			}
		})
	}
}

// BenchmarkVerify measures full verification of a sim report by the
// simulated-mode sevsnp verifier (certificate table in the evidence).
func BenchmarkVerify(b *testing.B) {
	a := testAuthority(b)
	v := simVerifier(b, a)
	ev := simEvidence(b, a, testRequest(false))
	ctx := context.Background()
	for b.Loop() {
		if _, err := v.Verify(ctx, ev); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSignatureBound measures only the ECDSA P-384 verification of
// the report signature that bounds BenchmarkVerify.
func BenchmarkSignatureBound(b *testing.B) {
	a := testAuthority(b)
	report := mustReport(b, a, testRequest(false))
	pub := &a.vcekKey.PublicKey
	r := leInt(report[offSignature : offSignature+sigComponentSize])
	s := leInt(report[offSignature+sigComponentSize : offSignature+2*sigComponentSize])
	for b.Loop() {
		digest := sha512.Sum384(report[:offSignature])
		if !ecdsa.Verify(pub, digest[:], r, s) {
			b.Fatal("signature does not verify")
		}
	}
}

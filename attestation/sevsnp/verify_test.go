package sevsnp

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	"github.com/google/go-sev-guest/verify/trust"
	"github.com/google/uuid"
	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/testdata"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.json from the current output")

const goldenClaims = "testdata/milan-claims.golden.json"

// TestVerifyMilan verifies the real Milan report offline with AMD's pinned
// roots at two dates inside the VCEK's validity, and compares the claims
// with the golden file.
func TestVerifyMilan(t *testing.T) {
	for _, now := range []time.Time{jan2024, nov2026} {
		t.Run(now.Format(time.DateOnly), func(t *testing.T) {
			v := mustNew(t, Options{Now: at(now)})
			got, err := v.Verify(context.Background(), milanEvidence())
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			// Facts about the recorded report that hold independently of
			// the golden file.
			if got.TEE != attestation.TEESEVSNP || got.Product != "Milan" || got.Signer != "vcek" || !got.Debug || !got.SMT || got.MigrationAgent {
				t.Errorf("claims tee=%s product=%s signer=%s debug=%v smt=%v ma=%v, want snp Milan vcek true true false",
					got.TEE, got.Product, got.Signer, got.Debug, got.SMT, got.MigrationAgent)
			}
			if diff := cmp.Diff([]string{"crl"}, got.Unchecked); diff != "" {
				t.Errorf("Unchecked (-want +got):\n%s", diff)
			}
			if !got.VerifiedAt.Equal(now) {
				t.Errorf("VerifiedAt = %v, want %v", got.VerifiedAt, now)
			}
			// The golden file holds the claims at 2024-01-01.
			got.VerifiedAt = jan2024
			b, err := json.MarshalIndent(got, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			b = append(b, '\n')
			if *update && now.Equal(jan2024) {
				if err := os.WriteFile(goldenClaims, b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(goldenClaims)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), string(b)); diff != "" {
				t.Errorf("claims differ from %s (-want +got):\n%s", goldenClaims, diff)
			}
		})
	}
}

// platformInfoTable returns a certificate table with only the extra
// platform info entry for CPUID(1).EAX, plus extra entries.
func platformInfoTable(t testing.TB, eax uint32, extra ...abi.CertTableEntry) []byte {
	t.Helper()
	blob, err := (&abi.ExtraPlatformInfo{Size: abi.ExtraPlatformInfoV0Size, Cpuid1Eax: eax}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	entries := append([]abi.CertTableEntry{{GUID: uuid.MustParse(abi.ExtraPlatformInfoGUID), RawCert: blob}}, extra...)
	return (&abi.CertTable{Entries: entries}).Marshal()
}

const milanB0EAX = 0x00A00F10

// TestVerifySources checks that the VCEK and the product line are found
// wherever the evidence may carry them.
func TestVerifySources(t *testing.T) {
	milanURL := kds.VCEKCertURL("Milan", testdata.SNPMilanReport[offChipID:offChipID+64], kds.TCBVersion(binary.LittleEndian.Uint64(testdata.SNPMilanReport[offReportedTCB:])))
	vcekEntry := abi.CertTableEntry{GUID: uuid.MustParse(abi.VcekGUID), RawCert: testdata.SNPMilanVCEK}
	for _, tc := range []struct {
		name    string
		ev      func() *attestation.Evidence
		fetcher *mapFetcher
	}{
		{name: "vcek in certificates", ev: milanEvidence},
		{name: "vcek in table appended to report", ev: func() *attestation.Evidence {
			ev := milanEvidence()
			ev.Report = append(ev.Report, (&abi.CertTable{Entries: []abi.CertTableEntry{vcekEntry}}).Marshal()...)
			ev.Certificates = nil
			return ev
		}},
		{name: "vcek in separate table", ev: func() *attestation.Evidence {
			ev := milanEvidence()
			ev.CertTable = (&abi.CertTable{Entries: []abi.CertTableEntry{vcekEntry}}).Marshal()
			ev.Certificates = nil
			return ev
		}},
		{name: "same table twice", ev: func() *attestation.Evidence {
			ev := milanEvidence()
			ev.CertTable = (&abi.CertTable{Entries: []abi.CertTableEntry{vcekEntry}}).Marshal()
			ev.Report = append(ev.Report, ev.CertTable...)
			return ev
		}},
		{name: "evidence ark and ask are ignored", ev: func() *attestation.Evidence {
			ev := milanEvidence()
			ask, ark, err := kds.ParseProductCertChain(testdata.SNPMilanASKARK)
			if err != nil {
				t.Fatal(err)
			}
			ev.Certificates = append(ev.Certificates, ark, ask, testdata.SNPMilanVCEK)
			return ev
		}},
		{name: "vcek fetched, product from platform info", ev: func() *attestation.Evidence {
			ev := milanEvidence()
			ev.Report = append(ev.Report, platformInfoTable(t, milanB0EAX)...)
			ev.Certificates = nil
			return ev
		}, fetcher: &mapFetcher{body: map[string][]byte{milanURL: testdata.SNPMilanVCEK}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := Options{Now: at(jan2024)}
			if tc.fetcher != nil {
				o.Fetcher = tc.fetcher
			}
			got, err := mustNew(t, o).Verify(context.Background(), tc.ev())
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if got.Product != "Milan" || got.Signer != "vcek" {
				t.Errorf("product %q signer %q, want Milan vcek", got.Product, got.Signer)
			}
			if tc.fetcher != nil && tc.fetcher.count(milanURL) != 1 {
				t.Errorf("fetched %s %d times, want 1", milanURL, tc.fetcher.count(milanURL))
			}
		})
	}
}

// TestVerifyFake covers paths the single real report cannot: version 3
// reports, Genoa, VLEK, the simulated TEE and CRLs, with go-sev-guest's
// test-only AMD chain (published test keys) as the trusted roots.
func TestVerifyFake(t *testing.T) {
	milan := fakeOpts{hwid: testHWID, tcb: milanTCB}
	genoa := fakeOpts{productName: "Genoa-B1", hwid: testHWID, tcb: milanTCB}
	marked := fakeOpts{hwid: testHWID, tcb: milanTCB, marked: true}
	fm, fg, fs := newFake(t, milan), newFake(t, genoa), newFake(t, marked)
	crlURL := "https://kdsintf.amd.com/vcek/v1/Milan/crl"
	nextUpdate := jan2024.Add(7 * 24 * time.Hour)
	goodCRL := fm.crl(t, jan2024.Add(-time.Hour), nextUpdate, big.NewInt(12345))

	for _, tc := range []struct {
		name          string
		opts          func() Options
		ev            func() *attestation.Evidence
		wantTEE       attestation.TEE
		wantProduct   string
		wantSigner    string
		wantUnchecked []string
		wantExpiry    *time.Time
	}{
		{
			name: "milan v3 vcek",
			opts: func() Options { return Options{Roots: fm.roots(t)} },
			ev: func() *attestation.Evidence {
				return &attestation.Evidence{TEE: attestation.TEESEVSNP, Report: fm.report(t, vcekKind, milan, setV3(0x19, 0x01, 0x01)), Certificates: [][]byte{fm.signer.Vcek.Raw}}
			},
			wantTEE: attestation.TEESEVSNP, wantProduct: "Milan", wantSigner: "vcek", wantUnchecked: []string{"crl"},
		},
		{
			name: "milan v2 vcek product from issuer",
			opts: func() Options { return Options{Roots: fm.roots(t)} },
			ev: func() *attestation.Evidence {
				return &attestation.Evidence{TEE: attestation.TEESEVSNP, Report: fm.report(t, vcekKind, milan, nil), Certificates: [][]byte{fm.signer.Vcek.Raw}}
			},
			wantTEE: attestation.TEESEVSNP, wantProduct: "Milan", wantSigner: "vcek", wantUnchecked: []string{"crl"},
		},
		{
			name: "genoa v3 vcek",
			opts: func() Options { return Options{Roots: fg.roots(t)} },
			ev: func() *attestation.Evidence {
				return &attestation.Evidence{TEE: attestation.TEESEVSNP, Report: fg.report(t, vcekKind, genoa, setV3(0x19, 0x11, 0x01)), Certificates: [][]byte{fg.signer.Vcek.Raw}}
			},
			wantTEE: attestation.TEESEVSNP, wantProduct: "Genoa", wantSigner: "vcek", wantUnchecked: []string{"crl"},
		},
		{
			name: "vlek with asvk roots",
			opts: func() Options { return Options{Roots: fm.roots(t)} },
			ev: func() *attestation.Evidence {
				return &attestation.Evidence{TEE: attestation.TEESEVSNP, Report: fm.report(t, vlekKind, milan, nil), Certificates: [][]byte{fm.signer.Vlek.Raw, fm.signer.Asvk.Raw}}
			},
			wantTEE: attestation.TEESEVSNP, wantProduct: "Milan", wantSigner: "vlek", wantUnchecked: []string{"crl"},
		},
		{
			name: "vlek in cert table",
			opts: func() Options { return Options{Roots: fm.roots(t)} },
			ev: func() *attestation.Evidence {
				table, err := fm.signer.CertTableBytes()
				if err != nil {
					t.Fatal(err)
				}
				return &attestation.Evidence{TEE: attestation.TEESEVSNP, Report: append(fm.report(t, vlekKind, milan, nil), table...)}
			},
			wantTEE: attestation.TEESEVSNP, wantProduct: "Milan", wantSigner: "vlek", wantUnchecked: []string{"crl"},
		},
		{
			name: "simulated",
			opts: func() Options { return Options{Roots: fs.roots(t), Simulated: true} },
			ev: func() *attestation.Evidence {
				return &attestation.Evidence{TEE: attestation.TEESim, Report: fs.report(t, vcekKind, marked, setV3(0x19, 0x01, 0x01)), Certificates: [][]byte{fs.signer.Vcek.Raw}}
			},
			wantTEE: attestation.TEESim, wantProduct: "Milan", wantSigner: "vcek", wantUnchecked: []string{"crl"},
		},
		{
			name: "simulated evidence labelled snp is still sim",
			opts: func() Options { return Options{Roots: fs.roots(t), Simulated: true} },
			ev: func() *attestation.Evidence {
				return &attestation.Evidence{TEE: attestation.TEESEVSNP, Report: fs.report(t, vcekKind, marked, nil), Certificates: [][]byte{fs.signer.Vcek.Raw}}
			},
			wantTEE: attestation.TEESim, wantProduct: "Milan", wantSigner: "vcek", wantUnchecked: []string{"crl"},
		},
		{
			name: "fresh crl",
			opts: func() Options {
				return Options{Roots: fm.roots(t), CheckRevocations: true, Fetcher: &mapFetcher{body: map[string][]byte{crlURL: goodCRL}}}
			},
			ev: func() *attestation.Evidence {
				return &attestation.Evidence{TEE: attestation.TEESEVSNP, Report: fm.report(t, vcekKind, milan, nil), Certificates: [][]byte{fm.signer.Vcek.Raw}}
			},
			wantTEE: attestation.TEESEVSNP, wantProduct: "Milan", wantSigner: "vcek", wantExpiry: &nextUpdate,
		},
		{
			name: "crl unavailable is recorded",
			opts: func() Options {
				return Options{Roots: fm.roots(t), CheckRevocations: true, Fetcher: &mapFetcher{err: errors.New("kds down")}}
			},
			ev: func() *attestation.Evidence {
				return &attestation.Evidence{TEE: attestation.TEESEVSNP, Report: fm.report(t, vcekKind, milan, nil), Certificates: [][]byte{fm.signer.Vcek.Raw}}
			},
			wantTEE: attestation.TEESEVSNP, wantProduct: "Milan", wantSigner: "vcek", wantUnchecked: []string{"crl"},
		},
		{
			name: "crl without fetcher is recorded",
			opts: func() Options { return Options{Roots: fm.roots(t), CheckRevocations: true} },
			ev: func() *attestation.Evidence {
				return &attestation.Evidence{TEE: attestation.TEESEVSNP, Report: fm.report(t, vcekKind, milan, nil), Certificates: [][]byte{fm.signer.Vcek.Raw}}
			},
			wantTEE: attestation.TEESEVSNP, wantProduct: "Milan", wantSigner: "vcek", wantUnchecked: []string{"crl"},
		},
		{
			name: "stale crl is recorded",
			opts: func() Options {
				stale := fm.crl(t, jan2024.Add(-30*24*time.Hour), jan2024.Add(-time.Hour))
				return Options{Roots: fm.roots(t), CheckRevocations: true, Fetcher: &mapFetcher{body: map[string][]byte{crlURL: stale}}}
			},
			ev: func() *attestation.Evidence {
				return &attestation.Evidence{TEE: attestation.TEESEVSNP, Report: fm.report(t, vcekKind, milan, nil), Certificates: [][]byte{fm.signer.Vcek.Raw}}
			},
			wantTEE: attestation.TEESEVSNP, wantProduct: "Milan", wantSigner: "vcek", wantUnchecked: []string{"crl"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.opts()
			o.Now = at(jan2024)
			got, err := mustNew(t, o).Verify(context.Background(), tc.ev())
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if got.TEE != tc.wantTEE || got.Product != tc.wantProduct || got.Signer != tc.wantSigner {
				t.Errorf("tee %q product %q signer %q, want %q %q %q", got.TEE, got.Product, got.Signer, tc.wantTEE, tc.wantProduct, tc.wantSigner)
			}
			if diff := cmp.Diff(tc.wantUnchecked, got.Unchecked); diff != "" {
				t.Errorf("Unchecked (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantExpiry, got.CollateralExpiry); diff != "" {
				t.Errorf("CollateralExpiry (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(attestation.Hex(testHWID[:]), got.ChipID); diff != "" {
				t.Errorf("ChipID (-want +got):\n%s", diff)
			}
		})
	}
}

// selfSigned returns a throwaway self-signed certificate with subject CN cn.
func selfSigned(t testing.TB, cn string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, NotBefore: jan2024, NotAfter: jan2030}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// forgedCRL returns a CRL naming f's ARK as issuer but signed by another
// key.
func forgedCRL(t testing.TB, f *fake) []byte {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), RawSubject: f.signer.Ark.RawSubject, NotBefore: jan2024.Add(-time.Hour), NotAfter: jan2030,
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCRLSign | x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	issuer, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(2), ThisUpdate: jan2024.Add(-time.Hour), NextUpdate: jan2030}, issuer, key)
	if err != nil {
		t.Fatal(err)
	}
	return crl
}

// TestVerifyAttacks checks that each attack or defect fails with its own
// reason: the sentinel error and the check name.
func TestVerifyAttacks(t *testing.T) {
	milan := fakeOpts{hwid: testHWID, tcb: milanTCB}
	fm := newFake(t, milan)
	fs := newFake(t, fakeOpts{hwid: testHWID, tcb: milanTCB, marked: true})
	otherChip := milan
	otherChip.hwid[0] ^= 0xFF
	otherTCB := milan
	otherTCB.tcb.SnpSpl++
	expiredASK := newFake(t, fakeOpts{hwid: testHWID, tcb: milanTCB, arkCreated: time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), askCreated: time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)})
	expiredARK := newFake(t, fakeOpts{hwid: testHWID, tcb: milanTCB, arkCreated: time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), askCreated: time.Date(2010, 1, 1, 0, 0, 0, 0, time.UTC)})
	crlURL := "https://kdsintf.amd.com/vcek/v1/Milan/crl"

	fakeEv := func(f *fake, o fakeOpts, edit func([]byte), certs ...[]byte) func() *attestation.Evidence {
		return func() *attestation.Evidence {
			if certs == nil {
				certs = [][]byte{f.signer.Vcek.Raw}
			}
			return &attestation.Evidence{TEE: attestation.TEESEVSNP, Report: f.report(t, vcekKind, o, edit), Certificates: certs}
		}
	}
	withMilan := func(edit func(*attestation.Evidence)) func() *attestation.Evidence {
		return func() *attestation.Evidence {
			ev := milanEvidence()
			edit(ev)
			return ev
		}
	}
	pinned := func() Options { return Options{} }
	fakeRoots := func() Options { return Options{Roots: fm.roots(t)} }
	genoaOnly, err := ParseRoots(trust.AskArkGenoaVcekBytes)
	if err != nil {
		t.Fatal(err)
	}
	fakeMilanPinnedGenoa, err := ParseRoots(fm.signer.Ark.Raw, fm.signer.Ask.Raw, trust.AskArkGenoaVcekBytes)
	if err != nil {
		t.Fatal(err)
	}
	noASVK, err := ParseRoots(fm.signer.Ark.Raw, fm.signer.Ask.Raw)
	if err != nil {
		t.Fatal(err)
	}
	vcekProfile := newFakeCustom(t, milan, func(b *fakeBuilder) { b.VcekCustom.SignatureAlgorithm = x509.SHA384WithRSA })

	for _, tc := range []struct {
		name      string
		opts      func() Options
		ev        func() *attestation.Evidence
		now       time.Time // zero: 2024-01-01
		sentinel  error
		check     string
		detailHas string
	}{
		// Sizes and parsing.
		{name: "nil evidence", opts: pinned, ev: func() *attestation.Evidence { return nil }, sentinel: attestation.ErrMalformed, check: "evidence"},
		{name: "tdx evidence", opts: pinned, ev: withMilan(func(ev *attestation.Evidence) { ev.TEE = attestation.TEETDX }), sentinel: attestation.ErrUnsupported, check: "tee"},
		{name: "sim evidence to real verifier", opts: pinned, ev: withMilan(func(ev *attestation.Evidence) { ev.TEE = attestation.TEESim }), sentinel: attestation.ErrUnsupported, check: "tee"},
		{name: "truncated report", opts: pinned, ev: withMilan(func(ev *attestation.Evidence) { ev.Report = ev.Report[:abi.ReportSize-1] }), sentinel: attestation.ErrMalformed, check: "report"},
		{name: "empty report", opts: pinned, ev: withMilan(func(ev *attestation.Evidence) { ev.Report = nil }), sentinel: attestation.ErrMalformed, check: "report"},
		{name: "oversized report", opts: pinned, ev: withMilan(func(ev *attestation.Evidence) {
			ev.Report = append(ev.Report, make([]byte, attestation.MaxEvidenceSize)...)
		}), sentinel: attestation.ErrTooLarge, check: "report"},
		{name: "oversized cert table", opts: pinned, ev: withMilan(func(ev *attestation.Evidence) { ev.CertTable = make([]byte, attestation.MaxEvidenceSize+1) }), sentinel: attestation.ErrTooLarge, check: "cert table"},
		{name: "too many certificates", opts: pinned, ev: withMilan(func(ev *attestation.Evidence) {
			for range maxCertificates {
				ev.Certificates = append(ev.Certificates, testdata.SNPMilanVCEK)
			}
		}), sentinel: attestation.ErrTooLarge, check: "certificates"},
		{name: "oversized certificates", opts: pinned, ev: withMilan(func(ev *attestation.Evidence) {
			ev.Certificates = append(ev.Certificates, make([]byte, attestation.MaxEvidenceSize))
		}), sentinel: attestation.ErrTooLarge, check: "certificates"},
		{name: "report version 1", opts: pinned, ev: withMilan(func(ev *attestation.Evidence) { ev.Report[offVersion] = 1 }), sentinel: attestation.ErrMalformed, check: "report"},
		{name: "report version 6", opts: pinned, ev: withMilan(func(ev *attestation.Evidence) { ev.Report[offVersion] = 6 }), sentinel: attestation.ErrMalformed, check: "report"},
		{name: "unknown signature algorithm", opts: pinned, ev: withMilan(func(ev *attestation.Evidence) { ev.Report[0x34] = 2 }), sentinel: attestation.ErrMalformed, check: "report"},
		{name: "reserved guest policy bit", opts: pinned, ev: withMilan(func(ev *attestation.Evidence) { ev.Report[offPolicy+7] = 0x80 }), sentinel: attestation.ErrMalformed, check: "report"},
		{name: "garbage cert table", opts: pinned, ev: withMilan(func(ev *attestation.Evidence) { ev.Report = append(ev.Report, 1, 2, 3) }), sentinel: attestation.ErrMalformed, check: "cert table"},
		{name: "cert table offset wraps around", opts: pinned, ev: withMilan(func(ev *attestation.Evidence) {
			table := make([]byte, 3*abi.CertTableEntrySize)
			copy(table, guidVCEK[:])
			binary.LittleEndian.PutUint32(table[16:], 0xFFFFFFF0)
			binary.LittleEndian.PutUint32(table[20:], 0x20)
			ev.CertTable = table
		}), sentinel: attestation.ErrMalformed, check: "cert table"},
		{name: "two different cert tables", opts: pinned, ev: withMilan(func(ev *attestation.Evidence) {
			ev.Report = append(ev.Report, platformInfoTable(t, milanB0EAX)...)
			ev.CertTable = platformInfoTable(t, 0x00A10F10)
		}), sentinel: attestation.ErrMalformed, check: "cert table"},
		{name: "bad platform info", opts: pinned, ev: withMilan(func(ev *attestation.Evidence) {
			ev.CertTable = (&abi.CertTable{Entries: []abi.CertTableEntry{{GUID: uuid.MustParse(abi.ExtraPlatformInfoGUID), RawCert: []byte{1, 2, 3}}}}).Marshal()
		}), sentinel: attestation.ErrMalformed, check: "cert table"},
		{name: "garbage certificate", opts: pinned, ev: withMilan(func(ev *attestation.Evidence) { ev.Certificates = append(ev.Certificates, []byte("not a certificate")) }), sentinel: attestation.ErrMalformed, check: "certificates"},
		{name: "foreign certificate", opts: pinned, ev: withMilan(func(ev *attestation.Evidence) {
			ev.Certificates = append(ev.Certificates, selfSigned(t, "example.com"))
		}), sentinel: attestation.ErrMalformed, check: "certificates"},
		{name: "two different vceks", opts: pinned, ev: withMilan(func(ev *attestation.Evidence) { ev.Certificates = append(ev.Certificates, fm.signer.Vcek.Raw) }), sentinel: attestation.ErrMalformed, check: "certificates"},
		{name: "non-canonical report", opts: fakeRoots, ev: fakeEv(fm, milan, setV3(0x19, 0x01, 0x11)), sentinel: attestation.ErrMalformed, check: "report", detailHas: ""},

		// Signatures.
		{name: "flipped measurement bit", opts: pinned, ev: withMilan(func(ev *attestation.Evidence) { ev.Report[0x90] ^= 1 }), sentinel: attestation.ErrSignature, check: "report signature"},
		{name: "flipped report data bit", opts: pinned, ev: withMilan(func(ev *attestation.Evidence) { ev.Report[0x50] ^= 0x80 }), sentinel: attestation.ErrSignature, check: "report signature"},
		{name: "signed by another key", opts: fakeRoots, ev: func() *attestation.Evidence {
			ev := fakeEv(fm, milan, nil)()
			signReport(t, ev.Report, fm.signer.Keys.Vlek)
			return ev
		}, sentinel: attestation.ErrSignature, check: "report signature"},
		{name: "unsigned report", opts: pinned, ev: withMilan(func(ev *attestation.Evidence) {
			binary.LittleEndian.PutUint32(ev.Report[offSignerInfo:], abi.ComposeSignerInfo(abi.SignerInfo{SigningKey: abi.NoneReportSigner}))
		}), sentinel: attestation.ErrSignature, check: "report signature"},

		// Chain and trust anchors.
		{name: "self-made root under pinned roots", opts: pinned,
			ev:       fakeEv(fm, milan, nil, fm.signer.Vcek.Raw, fm.signer.Ask.Raw, fm.signer.Ark.Raw),
			sentinel: attestation.ErrChain, check: "vcek chain", detailHas: "self-made"},
		{name: "self-made root v3 under pinned roots", opts: pinned,
			ev:       fakeEv(fm, milan, setV3(0x19, 0x01, 0x01), fm.signer.Vcek.Raw, fm.signer.Ask.Raw, fm.signer.Ark.Raw),
			sentinel: attestation.ErrChain, check: "vcek chain"},
		{name: "real vcek under foreign roots", opts: fakeRoots, ev: milanEvidence, sentinel: attestation.ErrChain, check: "vcek chain"},
		{name: "vcek not in kds profile", opts: func() Options { return Options{Roots: vcekProfile.roots(t)} },
			ev: fakeEv(vcekProfile, milan, nil), sentinel: attestation.ErrChain, check: "vcek chain", detailHas: "profile"},
		{name: "genoa roots only", opts: func() Options { return Options{Roots: genoaOnly} }, ev: milanEvidence,
			sentinel: attestation.ErrMismatch, check: "product", detailHas: "no Milan roots are trusted"},
		{name: "genoa report with milan vcek", opts: func() Options { return Options{Roots: fakeMilanPinnedGenoa} },
			ev: fakeEv(fm, milan, setV3(0x19, 0x11, 0x01)), sentinel: attestation.ErrMismatch, check: "product"},
		{name: "milan v3 report, genoa roots only", opts: func() Options { return Options{Roots: genoaOnly} },
			ev: fakeEv(fm, milan, setV3(0x19, 0x01, 0x01)), sentinel: attestation.ErrMismatch, check: "product", detailHas: "Milan chip"},
		{name: "unknown cpu", opts: fakeRoots, ev: fakeEv(fm, milan, setV3(0x17, 0x31, 0x00)), sentinel: attestation.ErrUnsupported, check: "product"},

		// Binding of the VCEK to the report.
		{name: "vcek for another chip", opts: fakeRoots, ev: fakeEv(fm, otherChip, nil), sentinel: attestation.ErrMismatch, check: "chip id"},
		{name: "vcek for another tcb", opts: fakeRoots, ev: fakeEv(fm, otherTCB, nil), sentinel: attestation.ErrMismatch, check: "tcb"},
		{name: "real report with fake vcek", opts: pinned, ev: withMilan(func(ev *attestation.Evidence) { ev.Certificates = [][]byte{fm.signer.Vcek.Raw} }),
			sentinel: attestation.ErrMismatch, check: "chip id"},

		// Validity periods.
		{name: "vcek expired", opts: pinned, ev: milanEvidence, now: jan2030, sentinel: attestation.ErrExpired, check: "vcek validity"},
		{name: "vcek not yet valid", opts: pinned, ev: milanEvidence, now: time.Date(2021, 1, 1, 0, 0, 0, 0, time.UTC), sentinel: attestation.ErrExpired, check: "vcek validity"},
		{name: "ask expired", opts: func() Options { return Options{Roots: expiredASK.roots(t)} }, ev: fakeEv(expiredASK, milan, nil),
			now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), sentinel: attestation.ErrExpired, check: "ask validity"},
		{name: "ark expired", opts: func() Options { return Options{Roots: expiredARK.roots(t)} }, ev: fakeEv(expiredARK, milan, nil),
			now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), sentinel: attestation.ErrExpired, check: "ark validity"},

		// Missing material.
		{name: "missing vcek offline v2", opts: pinned, ev: withMilan(func(ev *attestation.Evidence) { ev.Certificates = nil }),
			sentinel: attestation.ErrMissing, check: "vcek", detailHas: "--certs"},
		{name: "missing vcek offline v3", opts: fakeRoots, ev: fakeEv(fm, milan, setV3(0x19, 0x01, 0x01), [][]byte{}...),
			sentinel: attestation.ErrMissing, check: "vcek", detailHas: "seed the certificate cache"},
		{name: "missing vcek, fetch fails", opts: func() Options { return Options{Roots: fm.roots(t), Fetcher: &mapFetcher{}} },
			ev: fakeEv(fm, milan, setV3(0x19, 0x01, 0x01), [][]byte{}...), sentinel: attestation.ErrMissing, check: "vcek"},
		{name: "missing vcek, chip id masked", opts: func() Options { return Options{Roots: fm.roots(t), Fetcher: &mapFetcher{}} },
			ev: fakeEv(fm, milan, func(r []byte) {
				setV3(0x19, 0x01, 0x01)(r)
				clear(r[offChipID : offChipID+64])
			}, [][]byte{}...), sentinel: attestation.ErrMissing, check: "vcek", detailHas: "masked"},
		{name: "missing vlek", opts: fakeRoots, ev: func() *attestation.Evidence {
			return &attestation.Evidence{TEE: attestation.TEESEVSNP, Report: fm.report(t, vlekKind, milan, nil), Certificates: [][]byte{fm.signer.Vcek.Raw}}
		}, sentinel: attestation.ErrMissing, check: "vlek"},
		{name: "vlek without trusted asvk", opts: func() Options { return Options{Roots: noASVK} }, ev: func() *attestation.Evidence {
			return &attestation.Evidence{TEE: attestation.TEESEVSNP, Report: fm.report(t, vlekKind, milan, nil), Certificates: [][]byte{fm.signer.Vlek.Raw, fm.signer.Asvk.Raw}}
		}, sentinel: attestation.ErrMissing, check: "asvk", detailHas: "VLEK cert_chain"},

		// The simulated TEE.
		{name: "simulated chain refused", opts: pinned, ev: fakeEv(fs, milan, nil), sentinel: attestation.ErrChain, check: "simulated root", detailHas: "never accepted as SEV-SNP"},
		{name: "simulated ark in evidence refused", opts: pinned, ev: withMilan(func(ev *attestation.Evidence) {
			ev.Certificates = append(ev.Certificates, fs.signer.Ark.Raw)
		}), sentinel: attestation.ErrChain, check: "simulated root"},
		{name: "simulated vcek fetched refused", opts: func() Options {
			return Options{Roots: fm.roots(t), Fetcher: &mapFetcher{body: map[string][]byte{vcekURL("Milan", testHWID[:], uint64(mustCompose(t, milanTCB))): fs.signer.Vcek.Raw}}}
		}, ev: fakeEv(fm, milan, setV3(0x19, 0x01, 0x01), [][]byte{}...), sentinel: attestation.ErrChain, check: "simulated root"},
		{name: "real chain refused by simulated verifier", opts: func() Options { return Options{Roots: fs.roots(t), Simulated: true} },
			ev: milanEvidence, sentinel: attestation.ErrChain, check: "simulated root", detailHas: "lacks"},

		// Revocation.
		{name: "ask revoked", opts: func() Options {
			crl := fm.crl(t, jan2024.Add(-time.Hour), jan2030, fm.signer.Ask.SerialNumber)
			return Options{Roots: fm.roots(t), CheckRevocations: true, Fetcher: &mapFetcher{body: map[string][]byte{crlURL: crl}}}
		}, ev: fakeEv(fm, milan, nil), sentinel: attestation.ErrRevoked, check: "crl"},
		{name: "crl forged", opts: func() Options {
			return Options{Roots: fm.roots(t), CheckRevocations: true, Fetcher: &mapFetcher{body: map[string][]byte{crlURL: forgedCRL(t, fm)}}}
		}, ev: fakeEv(fm, milan, nil), sentinel: attestation.ErrSignature, check: "crl"},
		{name: "crl required offline", opts: func() Options { return Options{Roots: fm.roots(t), RequireRevocationCheck: true} },
			ev: fakeEv(fm, milan, nil), sentinel: attestation.ErrMissing, check: "crl"},
		{name: "crl required, unavailable", opts: func() Options {
			return Options{Roots: fm.roots(t), RequireRevocationCheck: true, Fetcher: &mapFetcher{err: errors.New("kds down")}}
		}, ev: fakeEv(fm, milan, nil), sentinel: attestation.ErrMissing, check: "crl"},
		{name: "crl required, garbage", opts: func() Options {
			return Options{Roots: fm.roots(t), RequireRevocationCheck: true, Fetcher: &mapFetcher{body: map[string][]byte{crlURL: []byte("<html>")}}}
		}, ev: fakeEv(fm, milan, nil), sentinel: attestation.ErrMissing, check: "crl"},
		{name: "crl required, stale", opts: func() Options {
			stale := fm.crl(t, jan2024.Add(-30*24*time.Hour), jan2024.Add(-time.Hour))
			return Options{Roots: fm.roots(t), RequireRevocationCheck: true, Fetcher: &mapFetcher{body: map[string][]byte{crlURL: stale}}}
		}, ev: fakeEv(fm, milan, nil), sentinel: attestation.ErrExpired, check: "crl"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.opts()
			o.Now = at(jan2024)
			if !tc.now.IsZero() {
				o.Now = at(tc.now)
			}
			got, err := mustNew(t, o).Verify(context.Background(), tc.ev())
			if got != nil {
				t.Errorf("got claims %+v with error %v, want nil claims", got, err)
			}
			wantErr(t, err, tc.sentinel, tc.check)
			var ae *attestation.Error
			errors.As(err, &ae)
			if ae.Detail == "" && ae.Cause == nil {
				t.Errorf("error %v has neither detail nor cause", err)
			}
			if !strings.Contains(ae.Detail, tc.detailHas) {
				t.Errorf("detail %q does not mention %q", ae.Detail, tc.detailHas)
			}
			if wantTEE := map[bool]attestation.TEE{false: attestation.TEESEVSNP, true: attestation.TEESim}[o.Simulated]; ae.TEE != wantTEE {
				t.Errorf("error TEE %q, want %q", ae.TEE, wantTEE)
			}
		})
	}
}

// TestVerifyFlippedBits flips one bit in every byte of the real report,
// signed region and signature alike, and expects every variant to fail
// with a reason that fits the field.
func TestVerifyFlippedBits(t *testing.T) {
	v := mustNew(t, Options{Now: at(jan2024)})
	type reason struct {
		sentinel error
		check    string
	}
	name := func(r reason) string { return fmt.Sprintf("%v/%s", r.sentinel, r.check) }
	var (
		signature = reason{attestation.ErrSignature, "report signature"}
		malformed = reason{attestation.ErrMalformed, "report"}
	)
	allowed := func(off int) []reason {
		switch {
		case off >= offChipID && off < offChipID+64:
			// The VCEK names the chip; the binding check sees it first.
			return []reason{{attestation.ErrMismatch, "chip id"}}
		case off >= offReportedTCB && off < offReportedTCB+8:
			return []reason{{attestation.ErrMismatch, "tcb"}, malformed}
		case off == offSignerInfo:
			// SIGNING_KEY=VLEK: there is no VLEK certificate.
			return []reason{signature, malformed, {attestation.ErrMissing, "vlek"}}
		}
		return []reason{signature, malformed}
	}
	seen := map[reason]int{}
	for off := range abi.ReportSize {
		ev := milanEvidence()
		ev.Report[off] ^= 1 << (off % 8)
		c, err := v.Verify(context.Background(), ev)
		if err == nil {
			t.Fatalf("offset 0x%03X: flipped report verified: %+v", off, c)
		}
		var ae *attestation.Error
		if !errors.As(err, &ae) {
			t.Fatalf("offset 0x%03X: %T %v, want *attestation.Error", off, err, err)
		}
		r := reason{ae.Err, ae.Check}
		if !slices.Contains(allowed(off), r) {
			var want []string
			for _, a := range allowed(off) {
				want = append(want, name(a))
			}
			t.Errorf("offset 0x%03X: %v, want one of %q", off, err, want)
		}
		seen[r]++
	}
	for r, n := range seen {
		t.Logf("%s: %d of %d flips", name(r), n, abi.ReportSize)
	}
	if seen[signature] == 0 || seen[malformed] == 0 {
		t.Errorf("reasons %v: want both signature and malformed failures", seen)
	}
}

// TestVerifyConcurrent shares one Verifier between goroutines (run with
// -race).
func TestVerifyConcurrent(t *testing.T) {
	v := mustNew(t, Options{Now: at(jan2024), CheckRevocations: true, Fetcher: &mapFetcher{}})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Go(func() {
			ev := milanEvidence()
			if i%2 == 1 {
				ev.Report[0x90] ^= 1
			}
			_, err := v.Verify(context.Background(), ev)
			if (err == nil) != (i%2 == 0) {
				errs <- fmt.Errorf("goroutine %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestNew(t *testing.T) {
	marked := newFake(t, fakeOpts{hwid: testHWID, tcb: milanTCB, marked: true})
	plain := newFake(t, fakeOpts{hwid: testHWID, tcb: milanTCB})
	for _, tc := range []struct {
		name     string
		opts     Options
		sentinel error // nil: any error
		check    string
	}{
		{name: "no clock", opts: Options{}},
		{name: "simulated without roots", opts: Options{Now: at(jan2024), Simulated: true}, sentinel: attestation.ErrMissing, check: "simulated root"},
		{name: "simulated with real roots", opts: Options{Now: at(jan2024), Simulated: true, Roots: PinnedRoots()}, sentinel: attestation.ErrChain, check: "simulated root"},
		{name: "simulated with unmarked fake roots", opts: Options{Now: at(jan2024), Simulated: true, Roots: plain.roots(t)}, sentinel: attestation.ErrChain, check: "simulated root"},
		{name: "marked roots without simulated", opts: Options{Now: at(jan2024), Roots: marked.roots(t)}, sentinel: attestation.ErrChain, check: "simulated root"},
		{name: "empty roots", opts: Options{Now: at(jan2024), Roots: &Roots{}}, sentinel: attestation.ErrMissing, check: "roots"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := New(tc.opts)
			if err == nil {
				t.Fatalf("New = %v, want error", v)
			}
			if tc.sentinel != nil {
				wantErr(t, err, tc.sentinel, tc.check)
			}
		})
	}
	if _, err := New(Options{Now: at(jan2024), Simulated: true, Roots: marked.roots(t)}); err != nil {
		t.Errorf("New(simulated, marked roots): %v", err)
	}
}

// TestGoldenFileIsClean guards against a golden file written from a
// broken run: it must hold the measurement of the recorded report.
func TestGoldenFileIsClean(t *testing.T) {
	b, err := os.ReadFile(filepath.Clean(goldenClaims))
	if err != nil {
		t.Fatal(err)
	}
	var c attestation.Claims
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(attestation.Hex(testdata.SNPMilanReport[0x90:0xC0]), c.Measurement); diff != "" {
		t.Errorf("golden measurement (-report +golden):\n%s", diff)
	}
}

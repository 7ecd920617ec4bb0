package sevsnp

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	sevtest "github.com/google/go-sev-guest/testing"
	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/testdata"
)

// Times used by the tests.
var (
	jan2024 = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	nov2026 = time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
	jan2030 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
)

func at(t time.Time) func() time.Time { return func() time.Time { return t } }

// milanEvidence returns the real Milan report with its VCEK.
func milanEvidence() *attestation.Evidence {
	return &attestation.Evidence{
		TEE:          attestation.TEESEVSNP,
		Report:       slices.Clone(testdata.SNPMilanReport),
		Certificates: [][]byte{testdata.SNPMilanVCEK},
	}
}

// Report field offsets the tests edit (SEV-SNP ABI ATTESTATION_REPORT).
const (
	offVersion     = 0x00
	offPolicy      = 0x08
	offSignerInfo  = 0x48
	offReportedTCB = 0x180
	offFamily      = 0x188
	offChipID      = 0x1A0
	offSignature   = 0x2A0
)

// testHWID is the chip identifier of fake chains (not the real report's).
var testHWID = func() [64]byte {
	var h [64]byte
	for i := range h {
		h[i] = byte(0xA0 + i)
	}
	return h
}()

// milanTCB is the real report's REPORTED_TCB split into parts.
var milanTCB = kds.TCBParts{BlSpl: 2, TeeSpl: 0, SnpSpl: 5, UcodeSpl: 68}

// fakeOpts shape a go-sev-guest fake AMD chain. Fake chains exist only in
// tests; their keys are go-sev-guest's published test keys.
type fakeOpts struct {
	productName string // VCEK productName, e.g. "Milan-B1"
	hwid        [64]byte
	tcb         kds.TCBParts
	marked      bool      // every certificate carries SimulatedMarker
	arkCreated  time.Time // zero: 2023-01-01
	askCreated  time.Time // zero: 2023-01-01
}

// fake is a go-sev-guest test-only AMD chain (ARK, ASK, ASVK, VCEK, VLEK).
type fake struct {
	signer *sevtest.AmdSigner
	line   string
}

// fakeMu serializes the fake builder, which signs with a shared
// math/rand source.
var fakeMu sync.Mutex

// fakeBuilder is go-sev-guest's fake chain builder.
type fakeBuilder = sevtest.AmdSignerBuilder

func newFake(t testing.TB, o fakeOpts) *fake {
	t.Helper()
	return newFakeCustom(t, o, nil)
}

// newFakeCustom is newFake with a hook to change the builder (certificate
// overrides) before the chain is made.
func newFakeCustom(t testing.TB, o fakeOpts, custom func(*fakeBuilder)) *fake {
	t.Helper()
	if o.productName == "" {
		o.productName = "Milan-B1"
	}
	created := time.Date(2023, 1, 1, 0, 0, 0, 0, time.UTC)
	if o.arkCreated.IsZero() {
		o.arkCreated = created
	}
	if o.askCreated.IsZero() {
		o.askCreated = created
	}
	line := kds.ProductLineOfProductName(o.productName)
	b := &sevtest.AmdSignerBuilder{
		Keys:             sevtest.DefaultAmdKeys(),
		ProductName:      o.productName,
		CSPID:            "cvm-test",
		HWID:             o.hwid,
		TCB:              mustCompose(t, o.tcb),
		ArkCreationTime:  o.arkCreated,
		AskCreationTime:  o.askCreated,
		AsvkCreationTime: o.askCreated,
		VcekCreationTime: created,
		VlekCreationTime: created,
		VcekCustom:       sevtest.CertOverride{Extensions: sevtest.CustomExtensions(o.tcb, o.hwid[:], "", o.productName)},
		VlekCustom:       sevtest.CertOverride{Extensions: sevtest.CustomExtensions(o.tcb, nil, "cvm-test", o.productName)},
	}
	if o.marked {
		b.ArkCustom.Subject = amdName("ARK-"+line, SimulatedMarker)
		b.AskCustom.Subject = amdName("SEV-"+line, SimulatedMarker)
		b.AsvkCustom.Subject = amdName("SEV-VLEK-"+line, SimulatedMarker)
		b.VcekCustom.Subject = amdName("SEV-VCEK", SimulatedMarker)
		b.VlekCustom.Subject = amdName("SEV-VLEK", SimulatedMarker)
	}
	if custom != nil {
		custom(b)
	}
	fakeMu.Lock()
	s, err := b.TestOnlyCertChain()
	fakeMu.Unlock()
	if err != nil {
		t.Fatalf("TestOnlyCertChain: %v", err)
	}
	return &fake{signer: s, line: line}
}

func amdName(cn, serial string) *pkix.Name {
	return &pkix.Name{
		Country:            []string{"US"},
		Locality:           []string{"Santa Clara"},
		Province:           []string{"CA"},
		Organization:       []string{"Advanced Micro Devices"},
		OrganizationalUnit: []string{"Engineering"},
		CommonName:         cn,
		SerialNumber:       serial,
	}
}

func mustCompose(t testing.TB, p kds.TCBParts) kds.TCBVersion {
	t.Helper()
	v, err := kds.ComposeTCBParts(p)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// roots returns the fake ARK with its ASK and ASVK as Roots.
func (f *fake) roots(t testing.TB) *Roots {
	t.Helper()
	r, err := ParseRoots(f.signer.Ark.Raw, f.signer.Ask.Raw, f.signer.Asvk.Raw)
	if err != nil {
		t.Fatalf("ParseRoots(fake): %v", err)
	}
	return r
}

// report returns the real Milan report edited to come from f's chip at
// f's TCB (plus edit), signed by f's VCEK or VLEK.
func (f *fake) report(t testing.TB, kind keyKind, o fakeOpts, edit func([]byte)) []byte {
	t.Helper()
	r := slices.Clone(testdata.SNPMilanReport)
	copy(r[offChipID:offChipID+64], o.hwid[:])
	binary.LittleEndian.PutUint64(r[offReportedTCB:], uint64(mustCompose(t, o.tcb)))
	if kind == vlekKind {
		binary.LittleEndian.PutUint32(r[offSignerInfo:], abi.ComposeSignerInfo(abi.SignerInfo{SigningKey: abi.VlekReportSigner}))
	}
	if edit != nil {
		edit(r)
	}
	key := f.signer.Keys.Vcek
	if kind == vlekKind {
		key = f.signer.Keys.Vlek
	}
	signReport(t, r, key)
	return r
}

// signReport signs r in place as the AMD secure processor does.
func signReport(t testing.TB, r []byte, key *ecdsa.PrivateKey) {
	t.Helper()
	clear(r[offSignature:])
	digest := sha512.Sum384(r[:offSignature])
	sr, ss, err := ecdsa.Sign(rand.Reader, key, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	if err := abi.SetSignature(sr, ss, r); err != nil {
		t.Fatal(err)
	}
}

// setV3 makes r a version 3 report from a CPU of the given family, model
// and stepping.
func setV3(family, model, stepping byte) func([]byte) {
	return func(r []byte) {
		binary.LittleEndian.PutUint32(r[offVersion:], 3)
		r[offFamily], r[offFamily+1], r[offFamily+2] = family, model, stepping
	}
}

// crl returns a DER CRL signed by f's ARK revoking the given serials.
func (f *fake) crl(t testing.TB, thisUpdate, nextUpdate time.Time, revoked ...*big.Int) []byte {
	t.Helper()
	tmpl := &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: thisUpdate, NextUpdate: nextUpdate}
	for _, s := range revoked {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: thisUpdate})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, f.signer.Ark, f.signer.Keys.Ark)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// mapFetcher serves fixed answers by URL and counts requests.
type mapFetcher struct {
	mu    sync.Mutex
	body  map[string][]byte
	err   error // returned for every request when set
	calls map[string]int
}

func (m *mapFetcher) Fetch(_ context.Context, url string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.calls == nil {
		m.calls = map[string]int{}
	}
	m.calls[url]++
	if m.err != nil {
		return nil, m.err
	}
	b, ok := m.body[url]
	if !ok {
		return nil, fmt.Errorf("mapFetcher: no %s: %w", url, attestation.ErrMissing)
	}
	return slices.Clone(b), nil
}

func (m *mapFetcher) count(url string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.calls[url]
}

// wantErr fails t unless err is an *attestation.Error wrapping sentinel
// with the given check.
func wantErr(t testing.TB, err, sentinel error, check string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got success, want %v (check %q)", sentinel, check)
	}
	var ae *attestation.Error
	if !errors.As(err, &ae) {
		t.Fatalf("got %T %v, want *attestation.Error", err, err)
	}
	if !errors.Is(err, sentinel) || ae.Check != check {
		t.Fatalf("got %v (check %q), want %v (check %q)", err, ae.Check, sentinel, check)
	}
}

func mustNew(t testing.TB, o Options) *Verifier {
	t.Helper()
	v, err := New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return v
}

package attestation

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	attestationv1 "github.com/greatjail/cvm/proto/cvm/attestation/v1"
)

func TestParseTEE(t *testing.T) {
	tests := []struct {
		in      string
		want    TEE
		wantErr error
	}{
		{"snp", TEESEVSNP, nil},
		{"tdx", TEETDX, nil},
		{"tpm", TEETPM, nil},
		{"sim", TEESim, nil},
		{"SNP", "", ErrUnsupported},
		{"", "", ErrUnsupported},
		{"sgx", "", ErrUnsupported},
	}
	for _, tc := range tests {
		got, err := ParseTEE(tc.in)
		if got != tc.want || !errors.Is(err, tc.wantErr) {
			t.Errorf("ParseTEE(%q) = %q, %v; want %q, %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestErrorUnwrap(t *testing.T) {
	cause := errors.New("x509: boom")
	err := Wrap(TEESEVSNP, "vcek chain", ErrChain, cause)
	if !errors.Is(err, ErrChain) || !errors.Is(err, cause) || errors.Is(err, ErrSignature) {
		t.Errorf("errors.Is on %v: want ErrChain and cause only", err)
	}
	var ae *Error
	if !errors.As(error(err), &ae) || ae.Check != "vcek chain" {
		t.Errorf("errors.As(%v) failed or wrong check", err)
	}
	want := "attestation snp: vcek chain: certificate chain untrusted: x509: boom"
	if got := err.Error(); got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if got := Errorf(TEETDX, "tcb level", ErrCollateral, "level %d", 3).Error(); got != "attestation tdx: tcb level: collateral invalid: level 3" {
		t.Errorf("Errorf().Error() = %q", got)
	}
	if err := CheckSize(TEETPM, "event log", make([]byte, 11), 10); !errors.Is(err, ErrTooLarge) {
		t.Errorf("CheckSize(11 > 10) = %v, want ErrTooLarge", err)
	}
	if err := CheckSize(TEETPM, "event log", make([]byte, 10), 10); err != nil {
		t.Errorf("CheckSize(10 <= 10) = %v, want nil", err)
	}
}

func TestHexJSON(t *testing.T) {
	b, err := json.Marshal(struct{ H Hex }{Hex{0xAB, 0x01}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), `{"H":"ab01"}`; got != want {
		t.Errorf("Marshal = %s, want %s", got, want)
	}
	var v struct{ H Hex }
	if err := json.Unmarshal([]byte(`{"H":"AB01"}`), &v); err != nil || !cmp.Equal(v.H, Hex{0xab, 0x01}) {
		t.Errorf("Unmarshal = %x, %v", v.H, err)
	}
	for _, bad := range []string{`{"H":"abc"}`, `{"H":"zz"}`, `{"H":12}`} {
		if err := json.Unmarshal([]byte(bad), &v); err == nil {
			t.Errorf("Unmarshal(%s) succeeded, want error", bad)
		}
	}
}

func TestEvidenceProtoRoundTrip(t *testing.T) {
	ev := &Evidence{
		TEE: TEETPM, Report: []byte{1}, Signature: []byte{2}, CertTable: []byte{3},
		Certificates: [][]byte{{4}, {5}}, EventLog: []byte{6}, AKPublic: []byte{7},
		PCRs: map[int][]byte{0: {8}, 23: {9}},
	}
	m, err := EvidenceToProto(ev)
	if err != nil {
		t.Fatal(err)
	}
	got, err := EvidenceFromProto(m)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(ev, got); diff != "" {
		t.Errorf("round trip mismatch (-want +got):\n%s", diff)
	}
}

func TestEvidenceFromProtoRejects(t *testing.T) {
	tests := []struct {
		name string
		m    *attestationv1.Evidence
		want error
	}{
		{"nil", nil, ErrMalformed},
		{"unspecified tee", &attestationv1.Evidence{Report: []byte{1}}, ErrUnsupported},
		{"unknown tee", &attestationv1.Evidence{Tee: 99}, ErrUnsupported},
		{"oversized", &attestationv1.Evidence{Tee: attestationv1.Tee_TEE_SNP, Report: make([]byte, MaxEvidenceSize+1)}, ErrTooLarge},
		{"oversized in sum", &attestationv1.Evidence{Tee: attestationv1.Tee_TEE_TPM, Report: make([]byte, MaxEvidenceSize/2+1), EventLog: make([]byte, MaxEvidenceSize/2)}, ErrTooLarge},
		{"pcr index", &attestationv1.Evidence{Tee: attestationv1.Tee_TEE_TPM, Pcrs: map[uint32][]byte{24: {1}}}, ErrMalformed},
	}
	for _, tc := range tests {
		if _, err := EvidenceFromProto(tc.m); !errors.Is(err, tc.want) {
			t.Errorf("%s: EvidenceFromProto() = %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestClaimsToProto(t *testing.T) {
	vmpl, svn, pol := 0, uint32(3), uint64(0x30000)
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	c := &Claims{
		TEE: TEESEVSNP, Product: "Milan", Measurement: Hex{1}, ReportData: Hex{2}, HostData: Hex{3},
		Debug: true, SMT: true, VMPL: &vmpl, GuestSVN: &svn, Policy: &pol, Signer: "vcek", ChipID: Hex{4},
		TCB:        &SNPTCB{Reported: TCBVersion{Raw: 0x4405000000000002, Bootloader: 2, SNP: 5, Microcode: 0x44}},
		RTMRs:      []Hex{{5}, {6}},
		PCRs:       &PCRs{Hash: "sha256", Values: map[int]Hex{7: {7}}},
		TDX:        &TDXClaims{TCBStatus: TCBStatusUnknown},
		Unchecked:  []string{"crl"},
		VerifiedAt: now,
	}
	m, err := ClaimsToProto(c)
	if err != nil {
		t.Fatal(err)
	}
	got := []any{m.GetTee(), m.GetProduct(), m.GetDebug(), m.GetVmpl(), m.GetGuestSvn(), m.GetPolicy(),
		m.GetTcb().GetReported().GetMicrocode(), len(m.GetRtmrs()), m.GetPcrs().GetValues()[7], m.GetTdx().GetTcbStatus(),
		m.GetUnchecked(), m.GetVerifiedAt().AsTime()}
	want := []any{attestationv1.Tee_TEE_SNP, "Milan", true, uint32(0), uint32(3), uint64(0x30000),
		uint32(0x44), 2, []byte{7}, "unknown", []string{"crl"}, now}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ClaimsToProto mismatch (-want +got):\n%s", diff)
	}
	if _, err := ClaimsToProto(&Claims{TEE: "x"}); err == nil || !strings.Contains(err.Error(), "unknown TEE") {
		t.Errorf("ClaimsToProto(unknown TEE) = %v, want error", err)
	}
}

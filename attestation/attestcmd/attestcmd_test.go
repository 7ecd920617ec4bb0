package attestcmd

import (
	"context"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/testdata"
)

func TestParseCertificates(t *testing.T) {
	vcekPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: testdata.SNPMilanVCEK})
	tests := []struct {
		name    string
		in      []byte
		want    int
		wantErr bool
	}{
		{"der", testdata.SNPMilanVCEK, 1, false},
		{"pem", vcekPEM, 1, false},
		{"pem bundle", testdata.SNPMilanASKARK, 2, false},
		{"pem key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}}), 0, true},
		{"garbage", []byte("hello"), 0, true},
		{"bad pem cert", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2}}), 0, true},
		{"empty", nil, 0, true},
	}
	for _, tc := range tests {
		got, err := ParseCertificates(tc.in)
		if (err != nil) != tc.wantErr || len(got) != tc.want {
			t.Errorf("%s: ParseCertificates() = %d certs, %v; want %d certs, error %v", tc.name, len(got), err, tc.want, tc.wantErr)
		}
	}
}

func TestHexInto(t *testing.T) {
	tests := []struct {
		in      string
		exact   bool
		want    []byte
		wantErr bool
	}{
		{"0102", false, []byte{1, 2, 0, 0}, false},
		{"0x0102", false, []byte{1, 2, 0, 0}, false},
		{"", false, []byte{0, 0, 0, 0}, false},
		{"01020304", true, []byte{1, 2, 3, 4}, false},
		{"0102", true, nil, true},
		{"", true, nil, true},
		{"0102030405", false, nil, true},
		{"zz", false, nil, true},
	}
	for _, tc := range tests {
		dst := make([]byte, 4)
		err := hexInto(dst, "--x", tc.in, tc.exact)
		if tc.wantErr {
			if !errors.Is(err, ErrUsage) {
				t.Errorf("hexInto(%q, exact=%v) = %v, want a usage error", tc.in, tc.exact, err)
			}
			continue
		}
		if err != nil || !cmp.Equal(dst, tc.want) {
			t.Errorf("hexInto(%q, exact=%v) = %x, %v; want %x", tc.in, tc.exact, dst, err, tc.want)
		}
	}
}

func TestVerifyUsage(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	report := filepath.Join(t.TempDir(), "r.bin")
	if err := os.WriteFile(report, testdata.SNPMilanReport, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		opts VerifyOptions
	}{
		{"no tee", VerifyOptions{Report: report, Now: now}},
		{"no time", VerifyOptions{TEE: "snp", Report: report}},
		{"no report", VerifyOptions{TEE: "snp", Now: now}},
		{"missing collateral dir", VerifyOptions{TEE: "tdx", Report: report, Now: now, Collateral: "/nonexistent"}},
		{"cert file missing", VerifyOptions{TEE: "snp", Report: report, Now: now, Certs: []string{"/nonexistent"}}},
	}
	for _, tc := range tests {
		if _, err := Verify(context.Background(), tc.opts); !errors.Is(err, ErrUsage) {
			t.Errorf("%s: Verify() = %v, want a usage error", tc.name, err)
		}
	}
	// Evidence that fails verification is not a usage error.
	_, err := Verify(context.Background(), VerifyOptions{TEE: "snp", Report: report, Now: now, Offline: true})
	if !errors.Is(err, attestation.ErrMissing) || errors.Is(err, ErrUsage) {
		t.Errorf("Verify(no VCEK, offline) = %v, want ErrMissing and not a usage error", err)
	}
}

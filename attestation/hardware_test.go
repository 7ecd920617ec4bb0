package attestation_test

// The tee tier: a fresh report from real SEV-SNP or TDX guest hardware,
// verified by our own code against the pinned vendor roots. These tests run
// only inside a confidential guest; elsewhere they skip and name what is
// missing.

import (
	"context"
	"crypto/rand"
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	sevclient "github.com/google/go-sev-guest/client"
	tdxclient "github.com/google/go-tdx-guest/client"
	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/attestation/sevsnp"
	"github.com/greatjail/cvm/attestation/tdx"
)

// tsmProvider returns the configfs-tsm report provider name, or "".
func tsmProvider(t *testing.T) string {
	dir, err := os.MkdirTemp("/sys/kernel/config/tsm/report", "cvm-test-")
	if err != nil {
		return ""
	}
	defer os.Remove(dir)
	b, err := os.ReadFile(dir + "/provider")
	if err != nil {
		t.Logf("configfs-tsm entry without provider: %v", err)
		return ""
	}
	return string(b)
}

func freshReportData(t *testing.T) [64]byte {
	var rd [64]byte
	if _, err := rand.Read(rd[:]); err != nil {
		t.Fatal(err)
	}
	return rd
}

func TestHardwareSEVSNP(t *testing.T) {
	_, devErr := os.Stat("/dev/sev-guest")
	if devErr != nil && tsmProvider(t) != "sev_guest\n" {
		t.Skip("tier tee: not an SEV-SNP guest (no /dev/sev-guest and no configfs-tsm report provider sev_guest)")
	}
	qp, err := sevclient.GetQuoteProvider()
	if err != nil {
		t.Fatalf("SEV-SNP guest device present but no quote provider: %v", err)
	}
	rd := freshReportData(t)
	raw, err := qp.GetRawQuote(rd)
	if err != nil {
		t.Fatalf("GetRawQuote: %v", err)
	}
	// The host normally supplies the VCEK in the extended report's table;
	// if it does not, fetch it from AMD's key service.
	v, err := sevsnp.New(sevsnp.Options{Now: time.Now, Fetcher: &sevsnp.HTTPFetcher{}})
	if err != nil {
		t.Fatal(err)
	}
	claims, err := v.Verify(context.Background(), &attestation.Evidence{TEE: attestation.TEESEVSNP, Report: raw})
	if err != nil {
		t.Fatalf("fresh hardware report did not verify: %v", err)
	}
	if diff := cmp.Diff(attestation.Hex(rd[:]), claims.ReportData); diff != "" {
		t.Errorf("report_data mismatch (-want +got):\n%s", diff)
	}
}

func TestHardwareTDX(t *testing.T) {
	_, devErr := os.Stat("/dev/tdx_guest")
	if devErr != nil && tsmProvider(t) != "tdx_guest\n" {
		t.Skip("tier tee: not a TDX guest (no /dev/tdx_guest and no configfs-tsm report provider tdx_guest)")
	}
	qp, err := tdxclient.GetQuoteProvider()
	if err != nil {
		t.Fatalf("TDX guest device present but no quote provider: %v", err)
	}
	rd := freshReportData(t)
	raw, err := tdxclient.GetRawQuote(qp, rd)
	if err != nil {
		t.Fatalf("GetRawQuote: %v", err)
	}
	v, err := tdx.New(tdx.Options{Now: time.Now})
	if err != nil {
		t.Fatal(err)
	}
	claims, err := v.Verify(context.Background(), &attestation.Evidence{TEE: attestation.TEETDX, Report: raw})
	if err != nil {
		t.Fatalf("fresh hardware quote did not verify: %v", err)
	}
	if diff := cmp.Diff(attestation.Hex(rd[:]), claims.ReportData); diff != "" {
		t.Errorf("report_data mismatch (-want +got):\n%s", diff)
	}
}

package evidence

import (
	"context"
	"fmt"

	sevclient "github.com/google/go-sev-guest/client"
	tdxclient "github.com/google/go-tdx-guest/client"
	"github.com/greatjail/cvm/attestation"
)

// SevGuest gets an extended SNP report (report and certificate table) from
// /dev/sev-guest, for kernels without configfs-tsm.
type SevGuest struct {
	// VMPL is the privilege level asked for (0 unless set).
	VMPL int
}

// TEE returns attestation.TEESEVSNP.
func (SevGuest) TEE() attestation.TEE { return attestation.TEESEVSNP }

// Evidence opens the device, asks for the report and closes it.
func (s SevGuest) Evidence(ctx context.Context, reportData [64]byte) (*attestation.Evidence, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	d, err := sevclient.OpenDevice()
	if err != nil {
		return nil, fmt.Errorf("evidence: %s: %w", SevGuestDevice, err)
	}
	defer d.Close()
	// The leveled quote provider would return report and table joined and
	// the table rewritten; the broker wants them apart, as the kernel
	// gives them.
	//lint:ignore SA1019 the replacement joins report and certificate table
	report, certs, err := sevclient.GetRawExtendedReportAtVmpl(d, reportData, s.VMPL)
	if err != nil {
		return nil, fmt.Errorf("evidence: %s: extended report: %w", SevGuestDevice, err)
	}
	return &attestation.Evidence{TEE: attestation.TEESEVSNP, Report: report, CertTable: certs}, nil
}

// TdxGuest gets a TDX quote from /dev/tdx_guest, for kernels without
// configfs-tsm.
type TdxGuest struct{}

// TEE returns attestation.TEETDX.
func (TdxGuest) TEE() attestation.TEE { return attestation.TEETDX }

// Evidence opens the device, asks for a quote and closes it.
func (TdxGuest) Evidence(ctx context.Context, reportData [64]byte) (*attestation.Evidence, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	d, err := tdxclient.OpenDevice()
	if err != nil {
		return nil, fmt.Errorf("evidence: %s: %w", TdxGuestDevice, err)
	}
	defer d.Close()
	quote, err := tdxclient.GetRawQuote(d, reportData)
	if err != nil {
		return nil, fmt.Errorf("evidence: %s: quote: %w", TdxGuestDevice, err)
	}
	return &attestation.Evidence{TEE: attestation.TEETDX, Report: quote}, nil
}

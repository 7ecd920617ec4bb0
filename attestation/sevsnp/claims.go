package sevsnp

import (
	"slices"
	"time"

	spb "github.com/google/go-sev-guest/proto/sevsnp"
	"github.com/greatjail/cvm/attestation"
)

// Guest policy bits (SEV-SNP ABI, GUEST_POLICY).
const (
	policySMT       = 1 << 16
	policyMigrateMA = 1 << 18
	policyDebug     = 1 << 19
)

// claims returns the claims of a verified report. unchecked lists the
// assurance checks that were not run; crlExpiry is the NextUpdate of the
// CRL that was checked, if any.
func claims(tee attestation.TEE, line string, kind keyKind, r *spb.Report, now time.Time, unchecked []string, crlExpiry *time.Time) *attestation.Claims {
	vmpl := int(r.GetVmpl())
	svn := r.GetGuestSvn()
	policy := r.GetPolicy()
	return &attestation.Claims{
		TEE:            tee,
		Product:        line,
		Measurement:    slices.Clone(r.GetMeasurement()),
		ReportData:     slices.Clone(r.GetReportData()),
		HostData:       slices.Clone(r.GetHostData()),
		Debug:          policy&policyDebug != 0,
		MigrationAgent: policy&policyMigrateMA != 0,
		SMT:            policy&policySMT != 0,
		VMPL:           &vmpl,
		GuestSVN:       &svn,
		Policy:         &policy,
		TCB: &attestation.SNPTCB{
			Current:   tcbVersion(line, r.GetCurrentTcb()),
			Committed: tcbVersion(line, r.GetCommittedTcb()),
			Launch:    tcbVersion(line, r.GetLaunchTcb()),
			Reported:  tcbVersion(line, r.GetReportedTcb()),
		},
		Signer:           kind.String(),
		ChipID:           slices.Clone(r.GetChipId()),
		CollateralExpiry: crlExpiry,
		Unchecked:        unchecked,
		VerifiedAt:       now,
	}
}

func tcbVersion(line string, raw uint64) attestation.TCBVersion {
	p := splitTCB(line, raw)
	return attestation.TCBVersion{
		Raw:        raw,
		Bootloader: p.bootloader,
		TEE:        p.tee,
		SNP:        p.snp,
		Microcode:  p.microcode,
		FMC:        p.fmc,
	}
}

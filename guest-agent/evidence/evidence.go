// Package evidence produces the guest's attestation evidence for the key
// broker: the kbs/client.Provider implementations the agent chooses from.
//
//   - Sim asks the host's simulated PSP over a psp link stream (tee sim).
//   - ConfigfsTSM reads a report from the kernel's configfs-tsm interface
//     (/sys/kernel/config/tsm/report; SNP and TDX on Linux 6.7+).
//   - SevGuest asks /dev/sev-guest for an extended SNP report.
//   - TdxGuest asks /dev/tdx_guest for a TDX quote.
//   - TPM quotes PCRs with an attestation key over /dev/tpmrm0 (go-tpm);
//     the launch configuration has no tee that selects it yet.
//
// ForConfig picks one from the measured launch configuration's tee and
// nothing else: the host cannot choose what the guest attests as. This
// package produces evidence and never verifies it.
package evidence

import (
	"errors"
	"fmt"
	"os"

	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/guest-agent/launchconfig"
	"github.com/greatjail/cvm/kbs/client"
)

// The kernel interfaces the hardware providers use.
const (
	TSMReportDir   = "/sys/kernel/config/tsm/report"
	SevGuestDevice = "/dev/sev-guest"
	TdxGuestDevice = "/dev/tdx_guest"
)

// ErrNoDevice means the TEE's report interface is absent: the kernel lacks
// the driver, or the guest does not run in that TEE.
var ErrNoDevice = errors.New("evidence: no report device")

// ForConfig returns the provider for cfg.TEE: Sim over opener for sim;
// for snp and tdx, ConfigfsTSM when TSMReportDir exists, else the TEE's
// guest device (which must exist).
func ForConfig(cfg *launchconfig.Config, opener Opener) (client.Provider, error) {
	return forTEE(cfg.TEE, opener, exists)
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func forTEE(tee attestation.TEE, opener Opener, exists func(string) bool) (client.Provider, error) {
	switch tee {
	case attestation.TEESim:
		if opener == nil {
			return nil, errors.New("evidence: tee sim needs the link to the host")
		}
		return &Sim{Link: opener}, nil
	case attestation.TEESEVSNP, attestation.TEETDX:
		if exists(TSMReportDir) {
			return NewConfigfsTSM(tee)
		}
		if tee == attestation.TEESEVSNP {
			if !exists(SevGuestDevice) {
				return nil, fmt.Errorf("%w: neither %s nor %s exists (is sev-guest loaded, and is this an SEV-SNP guest?)", ErrNoDevice, TSMReportDir, SevGuestDevice)
			}
			return SevGuest{}, nil
		}
		if !exists(TdxGuestDevice) {
			return nil, fmt.Errorf("%w: neither %s nor %s exists (is tdx-guest loaded, and is this a TDX guest?)", ErrNoDevice, TSMReportDir, TdxGuestDevice)
		}
		return TdxGuest{}, nil
	}
	return nil, fmt.Errorf("evidence: no provider for tee %q", tee)
}

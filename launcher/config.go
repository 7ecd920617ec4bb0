package launcher

import (
	"fmt"

	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/guest-agent/launchconfig"
)

// cmdline is the measured kernel command line.
const cmdline = launchconfig.Cmdline

// workloadEnv is the workload's environment (measured).
var workloadEnv = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/"}

// launchConfig returns the measured launch configuration of s (canonical
// JSON), with the broker CA certificates ca.
func launchConfig(s Spec, ca []byte) ([]byte, error) {
	args := s.Args
	if args == nil {
		args = []string{}
	}
	c := &launchconfig.Config{
		Version:    launchconfig.Version,
		TEE:        attestation.TEE(s.TEE),
		KBSCAPEM:   string(ca),
		Resource:   s.Resource,
		Entrypoint: s.Entrypoint,
		Args:       args,
		Env:        workloadEnv,
		Disk:       launchconfig.Disk{Device: "/dev/vda", FS: "ext4"},
	}
	b, err := c.Marshal()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return b, nil
}

// modulesFor returns the modules an initramfs for tee carries.
func modulesFor(tee string) (required, optional []string) {
	return launchconfig.Modules(attestation.TEE(tee))
}

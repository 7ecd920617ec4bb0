package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/greatjail/cvm/launcher"
)

// newMeasurePod is `cvm measure pod`: the measurement of a confidential
// pod VM as containerd-shim-cvm-v2 starts it.
func newMeasurePod() *cobra.Command {
	var s launcher.PodSpec
	var memory string
	var asJSON bool
	c := &cobra.Command{
		Use:   "pod --kbs-ca FILE --resource NAME [flags]",
		Short: "The measurement of a confidential pod VM (containerd-shim-cvm-v2) with the simulated TEE",
		Long: `Measure pod builds the pod VM's initramfs exactly as containerd-shim-cvm-v2 does
for a confidential pod (the guest agent in pod mode, the launch configuration with
the tee, the broker's CA and the resource, the pod kernel modules) and prints the
launch digest the simulated TEE reports for it: 96 hex digits. With --json it
prints a reference-value document for 'cvm kbs refvalue import'.

Give the same kernel, agent ($CVM_AGENT), vCPUs and memory as the node's shim
options and the pod's annotations (io.cvm.kernel, io.cvm.vcpus, io.cvm.memory),
and the same CA file and resource (io.cvm.kbs-ca, io.cvm.resource). The
containers, their images and the broker address are not measured.`,
		Example: `  cvm measure pod --kbs-ca ca.pem --resource pods/accepted
  cvm measure pod --kernel vmlinuz --kbs-ca ca.pem --resource pods/accepted --vcpus 2 --memory 1G --json > m.json`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			m, err := parseSize(memory)
			if err != nil {
				return usageError{fmt.Errorf("%w: --memory: %w", launcher.ErrInvalid, err)}
			}
			s.Memory = m
			s.Agent = os.Getenv("CVM_AGENT")
			meas, err := launcher.MeasurePod(s)
			if err != nil {
				if errors.Is(err, launcher.ErrInvalid) {
					return usageError{err}
				}
				return err
			}
			return printMeasurement(c, meas, asJSON)
		},
	}
	f := c.Flags()
	f.StringVar(&s.Kernel, "kernel", "", "guest kernel `FILE` (bzImage); default: the Debian 13 cloud kernel installed with cvm ($CVM_KERNEL)")
	f.StringVar(&s.KBSCA, "kbs-ca", "", "the key broker's CA certificate `FILE` (PEM), pinned in the pod's measured configuration")
	f.StringVar(&s.Resource, "resource", "", "the broker resource `NAME` the pod fetches")
	f.StringVar(&s.TEE, "tee", "sim", "the pod's TEE: sim (the only one whose launch digest this release computes)")
	f.IntVar(&s.VCPUs, "vcpus", launcher.DefaultVCPUs, "number of vCPUs")
	f.StringVar(&memory, "memory", "512M", "guest memory `SIZE` (bytes, or with a K, M or G suffix; a multiple of 1M)")
	f.BoolVar(&asJSON, "json", false, "print a reference-value document (digest, inputs with SHA-256, parameters)")
	return c
}

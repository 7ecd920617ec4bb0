package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/greatjail/cvm/launcher"
)

// launchFlags are the flags `cvm launch` and `cvm measure launch` share.
type launchFlags struct {
	spec   launcher.Spec
	memory string
}

func (o *launchFlags) measured(c *cobra.Command) {
	f := c.Flags()
	f.StringVar(&o.spec.Kernel, "kernel", "", "guest kernel `FILE` (bzImage); default: the Debian 13 cloud kernel installed with cvm ($CVM_KERNEL)")
	f.StringVar(&o.spec.KBSCA, "kbs-ca", "", "the key broker's CA certificate `FILE` (PEM), pinned in the measured launch")
	f.StringVar(&o.spec.Resource, "resource", "", "the broker resource `NAME` holding the disk key")
	f.StringVar(&o.spec.Entrypoint, "entrypoint", "", "absolute `PATH` of the program to run, inside the disk")
	f.StringArrayVar(&o.spec.Args, "arg", nil, "an argument `A` of the entrypoint (repeatable, in order)")
	f.IntVar(&o.spec.VCPUs, "vcpus", launcher.DefaultVCPUs, "number of vCPUs")
	f.StringVar(&o.memory, "memory", "512M", "guest memory `SIZE` (bytes, or with a K, M or G suffix; a multiple of 1M)")
}

// finish parses what the flags could not.
func (o *launchFlags) finish() error {
	m, err := parseSize(o.memory)
	if err != nil {
		return fmt.Errorf("%w: --memory: %w", launcher.ErrInvalid, err)
	}
	o.spec.Memory = m
	o.spec.Agent = os.Getenv("CVM_AGENT")
	return nil
}

func newLaunch() *cobra.Command {
	var o launchFlags
	c := &cobra.Command{
		Use:   "launch --disk FILE --kbs HOST:PORT --kbs-ca FILE --resource NAME --entrypoint PATH --tee sim|snp|tdx [flags]",
		Short: "Boot a confidential microVM that unlocks its disk with a key from the key broker",
		Long: `Launch builds the measured launch (the guest agent, the launch configuration
with the broker's CA, the resource and the entrypoint, the kernel modules, in a
reproducible initramfs), boots it in a microVM, and serves the guest: its
connection to the key broker (TLS end to end: the host only relays bytes), and
with --tee sim the simulated secure processor that signs its attestation
report. The guest attests, receives the disk key, opens the LUKS2 disk and runs
the entrypoint; its output is streamed here.

Engines: builtin (cvm's own VMM, needs a working /dev/kvm), qemu (QEMU, KVM
when usable, TCG otherwise), auto (builtin when /dev/kvm works, else qemu).

Exit status: the workload's own; 125 when the launch failed (bad input, engine
error, broker unreachable, disk problem, boot timeout); 126 when the key broker
denied the guest (the reasons are in the broker's audit log, never told to the
host). On failure the state directory (console.log, agent.log, engine.log) is
kept and named. The guest agent is found in $CVM_AGENT, next to cvm, or in
../share/cvm/.`,
		Example: `  # Compute and register the measurement, then launch with the simulated TEE
  cvm measure launch --kbs-ca ca.pem --resource disk-key --entrypoint /bin/hello --json > m.json
  cvm kbs --admin-config kbs/admin.yaml refvalue import m.json
  cvm launch --disk disk.img --kbs 127.0.0.1:8443 --kbs-ca ca.pem --resource disk-key \
      --entrypoint /bin/hello --tee sim --sim-dir ./sim

  # Arguments, a chosen kernel and engine, logs kept in ./run
  cvm launch --kernel vmlinuz --disk disk.img --kbs kbs.example:443 --kbs-ca ca.pem --resource disk-key \
      --entrypoint /bin/app --arg --verbose --arg in.txt --tee sim --sim-dir ./sim \
      --engine qemu --vcpus 2 --memory 1G --state-dir ./run`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			var res *launcher.Result
			err := o.finish()
			if err == nil {
				res, err = launcher.Run(c.Context(), o.spec, launcher.IO{Stdout: c.OutOrStdout(), Stderr: c.ErrOrStderr()})
			}
			if err != nil {
				fmt.Fprintln(c.ErrOrStderr(), "cvm launch:", err)
				os.Exit(launcher.ExitCode(err))
			}
			if res.ExitCode != 0 {
				os.Exit(res.ExitCode)
			}
			return nil
		},
	}
	o.measured(c)
	f := c.Flags()
	f.StringVar(&o.spec.Disk, "disk", "", "the encrypted disk image `FILE` (LUKS2, from 'cvm image encrypt')")
	f.StringVar(&o.spec.KBS, "kbs", "", "the key broker, `HOST:PORT`")
	f.StringVar(&o.spec.TEE, "tee", "", "the TEE the guest attests with: sim, snp or tdx (measured)")
	f.StringVar(&o.spec.SimDir, "sim-dir", "", "the simulated TEE `DIR` (from 'cvm attest sim init'), for --tee sim")
	f.StringVar(&o.spec.Engine, "engine", launcher.DefaultEngine, "auto, builtin or qemu")
	f.BoolVar(&o.spec.Quiet, "quiet", false, "no progress lines on stderr")
	f.StringVar(&o.spec.StateDir, "state-dir", "", "keep the launch's logs in `DIR` (default: a temporary directory, removed on success)")
	return c
}

func newMeasureLaunch() *cobra.Command {
	var o launchFlags
	var asJSON bool
	c := &cobra.Command{
		Use:   "launch --kbs-ca FILE --resource NAME --entrypoint PATH [--arg A]... [flags]",
		Short: "The measurement of a 'cvm launch' with the simulated TEE",
		Long: `Measure launch builds the launch exactly as 'cvm launch' does (the same kernel,
agent, launch configuration, modules, initramfs, command line, vCPUs and
memory) and prints the launch digest the simulated TEE reports for it: 96 hex
digits. With --json it prints a reference-value document for
'cvm kbs refvalue import'. The disk, the broker address and the engine are not
measured.`,
		Example: `  cvm measure launch --kbs-ca ca.pem --resource disk-key --entrypoint /bin/hello
  cvm measure launch --kernel vmlinuz --kbs-ca ca.pem --resource disk-key --entrypoint /bin/app \
      --arg --verbose --vcpus 2 --memory 1G --json > m.json && cvm kbs --admin-config kbs/admin.yaml refvalue import m.json`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := o.finish(); err != nil {
				return usageError{err}
			}
			m, err := launcher.Measure(o.spec)
			if err != nil {
				if errors.Is(err, launcher.ErrInvalid) {
					return usageError{err}
				}
				return err
			}
			return printMeasurement(c, m, asJSON)
		},
	}
	o.measured(c)
	c.Flags().StringVar(&o.spec.TEE, "tee", "sim", "the TEE the measured configuration names: sim (the only one whose launch digest this release computes)")
	c.Flags().BoolVar(&asJSON, "json", false, "print a reference-value document (digest, inputs with SHA-256, parameters)")
	return c
}

package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/greatjail/cvm/attestation/attestcmd"
	"github.com/spf13/cobra"
)

func newMeasure() *cobra.Command {
	c := &cobra.Command{
		Use:   "measure",
		Short: "Compute the launch measurement the hardware will report",
		Long: `A tenant who does not trust the host computes, on their own machine, the
exact measurement the hardware will report for their firmware, kernel,
initrd, command line and vCPU configuration, and registers it with the key
broker ('cvm kbs refvalue import' takes the --json output).`,
		Args: cobra.ArbitraryArgs,
		RunE: groupRun,
	}
	print := printMeasurement
	fail := func(err error) error {
		if errors.Is(err, attestcmd.ErrUsage) {
			return usageError{err}
		}
		return err
	}

	var so attestcmd.MeasureSNPOptions
	var snpJSON bool
	snp := &cobra.Command{
		Use:   "snp --firmware FILE --vcpus N --vcpu-type NAME --guest-features 0xHEX --vmm-type qemu|ec2 [flags]",
		Short: "SEV-SNP launch digest (MEASUREMENT)",
		Long: `Computes the SEV-SNP launch digest: the PAGE_INFO hash chain over the
firmware pages (the image mapped to end at 4 GiB), its SEV metadata sections,
and one VMSA per vCPU for the vCPU model and VMM type. With --kernel, the
kernel, initrd and command line are measured through the SEV hashes table,
which only AmdSev OVMF builds have; other firmware is refused rather than
given a meaningless digest. Names are case-insensitive.`,
		Example: `  cvm measure snp --firmware OVMF.fd --vcpus 4 --vcpu-type EPYC-v4 --guest-features 0x1 --vmm-type qemu
  cvm measure snp --firmware OVMF.amdsev.fd --vcpus 1 --vcpu-type epyc-genoa --guest-features 0x1 --vmm-type QEMU \
      --kernel vmlinuz --initrd initrd.img --cmdline "console=ttyS0" --json > measure.json`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			m, err := attestcmd.MeasureSNP(so)
			if err != nil {
				return fail(err)
			}
			return print(c, m, snpJSON)
		},
	}
	f := snp.Flags()
	f.StringVar(&so.Firmware, "firmware", "", "OVMF image (as passed to QEMU -bios)")
	f.IntVar(&so.VCPUs, "vcpus", 0, "number of vCPUs")
	f.StringVar(&so.VCPUType, "vcpu-type", "", "QEMU vCPU model: EPYC, EPYC-v4, EPYC-Rome, EPYC-Milan, EPYC-Genoa, ...")
	f.StringVar(&so.VCPUSig, "vcpu-sig", "", "explicit vCPU signature, CPUID(1).EAX in hex (instead of --vcpu-type)")
	f.StringVar(&so.GuestFeatures, "guest-features", "", "SEV_FEATURES passed to KVM, hex (e.g. 0x1)")
	f.StringVar(&so.VMMType, "vmm-type", "", "qemu or ec2")
	f.StringVar(&so.Kernel, "kernel", "", "kernel for measured direct boot")
	f.StringVar(&so.Initrd, "initrd", "", "initrd (with --kernel)")
	f.StringVar(&so.Cmdline, "cmdline", "", "kernel command line (with --kernel)")
	f.BoolVar(&snpJSON, "json", false, "print a reference-value document (digest, inputs with SHA-256, parameters)")

	var tdxFirmware string
	var tdxJSON bool
	tdx := &cobra.Command{
		Use:   "tdx --firmware FILE [--json]",
		Short: "TDX MRTD",
		Long: `Computes the MRTD of a TDVF firmware image from its TDVF metadata
(MEM.PAGE.ADD per page, MR.EXTEND in 256-byte chunks, SHA-384). Images whose
metadata does not describe them are refused.`,
		Example: `  cvm measure tdx --firmware OVMF.fd
  cvm measure tdx --firmware OVMF.fd --json > measure.json`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			m, err := attestcmd.MeasureTDX(tdxFirmware)
			if err != nil {
				return fail(err)
			}
			return print(c, m, tdxJSON)
		},
	}
	tdx.Flags().StringVar(&tdxFirmware, "firmware", "", "TDVF/OVMF image")
	tdx.Flags().BoolVar(&tdxJSON, "json", false, "print a reference-value document")
	c.AddCommand(snp, tdx, newMeasureLaunch(), newMeasurePod())
	return c
}

// printMeasurement prints m's digest, or with asJSON the reference-value
// document 'cvm kbs refvalue import' takes.
func printMeasurement(c *cobra.Command, m *attestcmd.Measurement, asJSON bool) error {
	if !asJSON {
		fmt.Fprintln(c.OutOrStdout(), m.Digest())
		return nil
	}
	enc := json.NewEncoder(c.OutOrStdout())
	enc.SetIndent("", "  ")
	return enc.Encode(m)
}

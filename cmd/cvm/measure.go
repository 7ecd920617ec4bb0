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

	var to attestcmd.MeasureTDXOptions
	var tdxMemory string
	var tdxJSON bool
	tdx := &cobra.Command{
		Use:   "tdx --firmware FILE [--kernel FILE --ovmf-measures patched|raw --stub-measures cc|none [--initrd FILE] [--cmdline STRING] [--memory SIZE]] [--json]",
		Short: "TDX MRTD, and RTMR1/RTMR2 of a direct kernel boot",
		Long: `Computes the MRTD of a TDVF firmware image from its TDVF metadata
(MEM.PAGE.ADD per page, MR.EXTEND in 256-byte chunks, SHA-384). Images whose
metadata does not describe them are refused.

With --kernel (QEMU -kernel/-initrd/-append direct boot with OVMF on q35),
it also computes RTMR1 and RTMR2; each starts at zero and is extended as
SHA-384(RTMR || digest) per event:

  RTMR1  the kernel's Authenticode SHA-384, then the EFI actions "Calling EFI
         Application from Boot Option", a separator, "Exit Boot Services
         Invocation" and "Exit Boot Services Returned with Success".
         --ovmf-measures says which kernel bytes OVMF hashes: "patched" for
         OVMF up to edk2-stable202502 (Debian 12 and 13), which sees the
         kernel after QEMU wrote its setup header (loader type, heap, command
         line pointer and, with an initrd, the initrd's address and size; the
         address depends on --memory below 2.75 GiB), "raw" for later OVMF.
  RTMR2  what the kernel's EFI stub logs: the load options (the command line,
         plus " initrd=initrd" with an initrd, as UTF-16LE with NUL), then the
         initrd's SHA-384. --stub-measures cc for a kernel whose stub uses the
         CC measurement protocol (e.g. Debian 13's 6.12); none for older
         stubs (e.g. Debian 12's 6.1), which leave RTMR2 zero.

Not computed: RTMR0, which holds the TD HOB (memory map), the variable store
and the VMM's ACPI tables, so it depends on the VMM version, machine type,
devices and vCPU count, not on these files; and RTMR3, which is zero at launch
and belongs to the guest OS.

The first output line is the MRTD; with --kernel, "rtmr1 HEX" and "rtmr2 HEX"
follow. --json adds rtmr1, rtmr2, the event lists and the inputs' SHA-256.`,
		Example: `  cvm measure tdx --firmware OVMF.fd
  cvm measure tdx --firmware OVMF.fd --json > measure.json
  cvm measure tdx --firmware OVMF.fd --kernel vmlinuz --initrd initrd.img --cmdline "console=ttyS0" \
      --memory 4G --ovmf-measures patched --stub-measures cc --json`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if c.Flags().Changed("memory") {
				v, err := parseSize(tdxMemory)
				if err != nil {
					return usageError{fmt.Errorf("%w: --memory: %w", attestcmd.ErrUsage, err)}
				}
				to.MemorySize = v
			}
			m, err := attestcmd.MeasureTDX(to)
			if err != nil {
				return fail(err)
			}
			return print(c, m, tdxJSON)
		},
	}
	tf := tdx.Flags()
	tf.StringVar(&to.Firmware, "firmware", "", "TDVF/OVMF image")
	tf.StringVar(&to.Kernel, "kernel", "", "kernel (bzImage with EFI stub) for direct boot: computes RTMR1 and RTMR2")
	tf.StringVar(&to.Initrd, "initrd", "", "initrd (with --kernel)")
	tf.StringVar(&to.Cmdline, "cmdline", "", "kernel command line, ASCII (with --kernel)")
	tf.StringVar(&tdxMemory, "memory", "", "guest memory `SIZE` (QEMU -m; K, M or G suffix): needed with --initrd and --ovmf-measures patched")
	tf.StringVar(&to.KernelImage, "ovmf-measures", "", "patched (OVMF <= edk2-stable202502) or raw (later OVMF): the kernel bytes OVMF hashes")
	tf.StringVar(&to.Stub, "stub-measures", "", "cc (the kernel's EFI stub measures via the CC measurement protocol) or none")
	tf.BoolVar(&tdxJSON, "json", false, "print a reference-value document")
	c.AddCommand(snp, tdx, newMeasureLaunch(), newMeasurePod())
	return c
}

// printMeasurement prints m's digest, or with asJSON the reference-value
// document 'cvm kbs refvalue import' takes.
func printMeasurement(c *cobra.Command, m *attestcmd.Measurement, asJSON bool) error {
	if !asJSON {
		fmt.Fprintln(c.OutOrStdout(), m.Digest())
		if m.RTMR1 != "" {
			fmt.Fprintf(c.OutOrStdout(), "rtmr1 %s\nrtmr2 %s\n", m.RTMR1, m.RTMR2)
		}
		return nil
	}
	enc := json.NewEncoder(c.OutOrStdout())
	enc.SetIndent("", "  ")
	return enc.Encode(m)
}

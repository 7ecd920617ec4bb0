package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/greatjail/cvm/vmm"
)

func newVM() *cobra.Command {
	c := &cobra.Command{
		Use:   "vm",
		Short: "Run microVMs on KVM (no confidential computing yet)",
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRun,
	}
	c.AddCommand(newVMRun())
	return c
}

type vmRunOptions struct {
	kernel, initrd, cmdline string
	memory                  string
	vcpus                   int
	disks                   []string
	vsockUDS                string
	rng                     bool
	noSeccomp               bool
}

func newVMRun() *cobra.Command {
	var o vmRunOptions
	c := &cobra.Command{
		Use:   "run --kernel FILE [flags]",
		Short: "Boot a Linux kernel in a KVM microVM with the serial console on stdout",
		Long: `Run boots a Linux kernel (bzImage, or an ELF vmlinux with a PVH entry) directly,
without firmware, in a KVM microVM: COM1 is the console and is copied to
stdout, disks are virtio-blk devices (the first is /dev/vda), and --vsock-uds
adds a virtio-vsock device reached through a Unix socket (Firecracker's
hybrid vsock). The guest learns its devices from ACPI tables.

Once the VM is set up and before the guest runs, the process confines itself
with a seccomp allowlist (the system calls a running VMM needs; anything else
fails with EPERM); --no-seccomp skips that.

It exits 0 when the guest powers off or reboots (a reboot ends the VM),
1 when the VM cannot start or KVM fails (the message names the cause), and
2 on usage errors. Input is checked before the guest starts.`,
		Example: `  cvm vm run --kernel vmlinuz --initrd initrd.img --cmdline "console=ttyS0 reboot=k panic=1"
  cvm vm run --kernel vmlinuz --memory 1G --vcpus 2 --disk rootfs.ext4 --disk seed.img:ro \
      --cmdline "console=ttyS0 root=/dev/vda" --rng --vsock-uds /run/cvm/v.sock`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error { return runVM(c, o) },
	}
	f := c.Flags()
	f.StringVar(&o.kernel, "kernel", "", "kernel image `FILE` (bzImage or PVH vmlinux)")
	f.StringVar(&o.initrd, "initrd", "", "initial ramdisk `FILE`")
	f.StringVar(&o.cmdline, "cmdline", "console=ttyS0 reboot=k panic=1", "kernel command line")
	f.StringVar(&o.memory, "memory", "256M", "guest memory `SIZE` (bytes, or with a K, M or G suffix)")
	f.IntVar(&o.vcpus, "vcpus", 1, "number of vCPUs (1..255)")
	f.StringArrayVar(&o.disks, "disk", nil, "virtio block device backed by `FILE[:ro]` (repeatable; :ro makes it read-only)")
	f.StringVar(&o.vsockUDS, "vsock-uds", "", "add a virtio-vsock device listening on the Unix socket `PATH`")
	f.BoolVar(&o.rng, "rng", false, "add a virtio entropy device")
	f.BoolVar(&o.noSeccomp, "no-seccomp", false, "do not confine the VMM with its seccomp allowlist once the VM is set up (for debugging)")
	return c
}

func runVM(c *cobra.Command, o vmRunOptions) error {
	usage := func(format string, a ...any) error {
		return usageError{fmt.Errorf("%s (see '%s --help')", fmt.Sprintf(format, a...), c.CommandPath())}
	}
	if o.kernel == "" {
		return usage("--kernel is required")
	}
	mem, err := parseSize(o.memory)
	if err != nil {
		return usage("--memory: %v", err)
	}
	cfg := vmm.Config{Cmdline: o.cmdline, MemorySize: mem, VCPUs: o.vcpus, VsockUDS: o.vsockUDS, RNG: o.rng,
		Console: c.OutOrStdout(), Seccomp: !o.noSeccomp}
	for _, s := range o.disks {
		d, err := parseDisk(s)
		if err != nil {
			return usage("--disk %q: %v", s, err)
		}
		cfg.Disks = append(cfg.Disks, d)
	}
	if cfg.Kernel, err = os.ReadFile(o.kernel); err != nil {
		return fmt.Errorf("kernel: %w", err)
	}
	if o.initrd != "" {
		if cfg.Initrd, err = os.ReadFile(o.initrd); err != nil {
			return fmt.Errorf("initrd: %w", err)
		}
	}
	res, err := vmm.Run(c.Context(), cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.ErrOrStderr(), "cvm: guest stopped: %s\n", res.Reason)
	return nil
}

// parseSize parses a byte count with an optional K, M or G (binary) suffix.
func parseSize(s string) (uint64, error) {
	num, shift := strings.TrimSpace(s), 0
	if n := len(num); n > 0 {
		switch num[n-1] {
		case 'K', 'k':
			shift = 10
		case 'M', 'm':
			shift = 20
		case 'G', 'g':
			shift = 30
		}
		if shift != 0 {
			num = num[:n-1]
		}
	}
	v, err := strconv.ParseUint(num, 10, 64)
	if err != nil || v == 0 {
		return 0, fmt.Errorf("invalid size %q: want a positive number of bytes, optionally with K, M or G", s)
	}
	if v > (^uint64(0))>>shift {
		return 0, fmt.Errorf("size %q overflows", s)
	}
	return v << shift, nil
}

// parseDisk parses FILE[:ro] (":rw" is accepted too).
func parseDisk(s string) (vmm.Disk, error) {
	d := vmm.Disk{Path: s}
	if p, ok := strings.CutSuffix(s, ":ro"); ok {
		d = vmm.Disk{Path: p, ReadOnly: true}
	} else if p, ok := strings.CutSuffix(s, ":rw"); ok {
		d.Path = p
	}
	if d.Path == "" {
		return d, errors.New("empty file name")
	}
	return d, nil
}

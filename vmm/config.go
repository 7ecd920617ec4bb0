package vmm

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/greatjail/cvm/vmm/acpi"
	"github.com/greatjail/cvm/vmm/loader"
	"github.com/greatjail/cvm/vmm/plan"
)

// DefaultKVMPath is Config.KVMPath when empty.
const DefaultKVMPath = "/dev/kvm"

// MaxMemorySize bounds Config.MemorySize (1 TiB).
const MaxMemorySize = 1 << 40

// ErrInvalidConfig is wrapped by every error Validate returns.
var ErrInvalidConfig = errors.New("vmm: invalid config")

// Disk is one virtio block device backed by a regular file.
type Disk struct {
	Path     string
	ReadOnly bool
}

// Config describes a VM to run.
type Config struct {
	Kernel, Initrd []byte // bzImage or ELF vmlinux with PVH; optional initrd
	Cmdline        string
	MemorySize     uint64 // bytes, a multiple of 4 KiB
	VCPUs          int    // 1..255
	Disks          []Disk // first is /dev/vda
	VsockUDS       string // hybrid vsock Unix socket path; empty: no vsock
	RNG            bool   // add a virtio entropy device
	// Slots are disk hot-plug slots (DiskSlot), empty virtio-blk devices
	// after every other device; nil entries are invalid. They are part
	// of the guest's layout and so of the plan; with none, the plan is
	// what it was before slots existed. Not with Seccomp (Attach opens
	// files).
	Slots   []*DiskSlot
	Console io.Writer
	KVMPath string // default DefaultKVMPath
	// Seccomp makes Run confine the whole process with LockDown once the
	// VM is set up, before the first vCPU runs. It is permanent and
	// process-wide: only for a process that runs one VM and exits.
	Seccomp bool
}

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, a...))
}

// Validate checks cfg without touching KVM: the kernel parses, memory
// holds the kernel and initrd, the vCPU count is in range, every disk opens
// with the requested access, and the vsock socket's directory exists.
// Errors wrap ErrInvalidConfig and, where there is one, the cause.
func Validate(cfg Config) error {
	_, _, err := validate(cfg)
	return err
}

// Plan returns the launch plan Run executes for cfg: the value the
// measurement code hashes (attestation/snpmeasure.PlanDigest). Disk paths
// and the vsock socket are not part of the plan, only how many devices
// there are, so Plan does not open them; everything else is checked as
// Validate checks it.
func Plan(cfg Config) (*plan.Plan, error) {
	p, _, err := planFor(cfg)
	return p, err
}

// validate is Validate returning the launch plan and device windows it
// built on the way, so Run lays out the guest once.
func validate(cfg Config) (*plan.Plan, []Window, error) {
	p, wins, err := planFor(cfg)
	if err != nil {
		return nil, nil, err
	}
	for _, d := range cfg.Disks {
		f, err := openDisk(d)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
		}
		f.Close()
	}
	if cfg.Seccomp && len(cfg.Slots) > 0 {
		return nil, nil, invalid("%d disk slots with Seccomp: attaching a disk opens its file, which the seccomp policy forbids", len(cfg.Slots))
	}
	if cfg.VsockUDS != "" {
		dir := filepath.Dir(cfg.VsockUDS)
		fi, err := os.Stat(dir)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: vsock socket %s: directory: %w", ErrInvalidConfig, cfg.VsockUDS, err)
		}
		if !fi.IsDir() {
			return nil, nil, invalid("vsock socket %s: %s is not a directory", cfg.VsockUDS, dir)
		}
	}
	return p, wins, nil
}

// planFor checks the parts of cfg that shape the guest and lays it out.
func planFor(cfg Config) (*plan.Plan, []Window, error) {
	if len(cfg.Kernel) == 0 {
		return nil, nil, invalid("no kernel image")
	}
	if _, err := loader.Parse(cfg.Kernel); err != nil {
		return nil, nil, fmt.Errorf("%w: kernel: %w", ErrInvalidConfig, err)
	}
	if cfg.VCPUs < 1 || cfg.VCPUs > acpi.MaxVCPUs {
		return nil, nil, invalid("%d vCPUs: must be 1..%d", cfg.VCPUs, acpi.MaxVCPUs)
	}
	if cfg.MemorySize == 0 || cfg.MemorySize%plan.PageSize != 0 {
		return nil, nil, invalid("memory size %d: must be a positive multiple of %d bytes", cfg.MemorySize, plan.PageSize)
	}
	if cfg.MemorySize > MaxMemorySize {
		return nil, nil, invalid("memory size %s: at most %s", FormatSize(cfg.MemorySize), FormatSize(MaxMemorySize))
	}
	for i, s := range cfg.Slots {
		if s == nil {
			return nil, nil, invalid("disk slot %d is nil", i)
		}
	}
	if n := deviceCount(cfg); n > maxDevices {
		return nil, nil, invalid("%d virtio devices: at most %d", n, maxDevices)
	}
	p, wins, err := buildPlan(cfg)
	if err != nil {
		if errors.Is(err, loader.ErrTooSmall) {
			return nil, nil, fmt.Errorf("%w: guest memory of %s is too small for the kernel (%d bytes) and initrd (%d bytes): %w",
				ErrInvalidConfig, FormatSize(cfg.MemorySize), len(cfg.Kernel), len(cfg.Initrd), err)
		}
		return nil, nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return p, wins, nil
}

// openDisk opens a disk image with the access its flag asks for and checks
// that it is a regular file holding at least one sector.
func openDisk(d Disk) (*os.File, error) {
	flag := os.O_RDWR
	if d.ReadOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(d.Path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("disk %s: %w", d.Path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("disk %s: %w", d.Path, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("disk %s: not a regular file", d.Path)
	}
	if fi.Size() < 512 {
		f.Close()
		return nil, fmt.Errorf("disk %s: %d bytes, smaller than one 512-byte sector", d.Path, fi.Size())
	}
	return f, nil
}

// FormatSize renders a byte count with a binary unit (K, M, G) when exact.
func FormatSize(n uint64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dG", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dM", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dK", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

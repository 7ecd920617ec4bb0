// Package engine starts a microVM for the launcher: QEMU (KVM when usable,
// TCG otherwise) or the builtin VMM (package vmm, in process, on /dev/kvm).
// An engine turns a Machine (kernel, initramfs, command line, size, one disk,
// the link socket, the console log) into a running guest and gives the
// launcher the guest's end of the link as a byte stream.
//
// The two engines carry the link differently (ARCH.md): QEMU gives the guest
// a virtio-serial port named cvm.link backed by a Unix socket on which the
// engine listens before QEMU starts; the builtin VMM gives it virtio-vsock,
// and the engine reaches the agent's vsock port 1024 through the VMM's
// hybrid-vsock Unix socket ("CONNECT 1024\n" → "OK <port>\n"). Either way,
// Handle.Link returns one connected stream.
package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// Machine is one guest to start. Every file is read by the engine; the
// launcher writes the initramfs before calling Start.
type Machine struct {
	Kernel  string // bzImage file
	Initrd  string // initramfs file
	Cmdline string
	VCPUs   int
	Memory  uint64 // bytes, a multiple of 1 MiB
	Disk    string // the encrypted disk image (raw), the guest's /dev/vda
	// LinkSocket is a Unix socket path in the launch's state directory
	// that carries the link (QEMU: the engine listens on it; builtin: the
	// VMM's hybrid vsock socket).
	LinkSocket string
	// ConsoleLog receives the guest's serial console.
	ConsoleLog string
	// EngineLog receives the engine's own diagnostics (QEMU's stderr).
	EngineLog string
	// QMPSocket, when set, is a Unix socket path on which QEMU serves its
	// monitor protocol (QMP) to one client at a time (server=on,wait=off:
	// QEMU creates it while starting; dial it once Link has returned, and
	// retry while it does not exist yet). The qemu engine only; "" means
	// no monitor.
	QMPSocket string
	// HotplugPorts is how many disks can be hot-plugged at once; 0
	// means none. The qemu engine gives the guest that many empty PCIe
	// root ports for devices added later through QMP (q35's root bus
	// takes no hot-plugged device); port i has the QMP bus id
	// HotplugPortID(i). The builtin engine gives it that many empty
	// virtio-blk devices (media-change slots, vmm.DiskSlot) that its
	// Handle fills and empties through DiskHotplug; they are part of the
	// guest's layout, so a launch to be measured has none.
	HotplugPorts int
}

// MaxHotplugPorts bounds Machine.HotplugPorts.
const MaxHotplugPorts = 32

// HotplugPortID is the QMP bus id of hot-plug port i (device_add
// ...,bus=HotplugPortID(i)).
func HotplugPortID(i int) string { return "cvm.hp" + strconv.Itoa(i) }

// Handle is a started guest.
type Handle interface {
	// Link returns the host end of the link once the guest side is there
	// (QEMU connected; the agent accepted the vsock connection). It fails
	// when ctx ends or the guest stops first. Call it once.
	Link(ctx context.Context) (io.ReadWriteCloser, error)
	// Wait blocks until the guest has stopped and returns how it ended:
	// nil when it powered off.
	Wait() error
	// Exited is closed when the guest has stopped.
	Exited() <-chan struct{}
	// Kill stops the guest now. It is safe to call more than once and
	// after the guest has stopped.
	Kill()
}

// DiskHotplug is implemented by a Handle whose engine can add and remove disks while the guest runs.
type DiskHotplug interface {
	// AttachDisk puts the raw image at path into free hot-plug slot `slot` (0 ≤ slot < Machine.HotplugPorts) as a virtio-blk disk with the given serial (≤ 20 bytes, [A-Za-z0-9._-]), read-only if ro.
	AttachDisk(ctx context.Context, slot int, path, serial string, ro bool) error
	// DetachDisk empties slot; the guest must have stopped using the disk.
	DetachDisk(ctx context.Context, slot int) error
}

// MaxSerial is the longest disk serial: virtio-blk's VIRTIO_BLK_ID_BYTES.
const MaxSerial = 20

// ValidSerial checks a hot-plugged disk's serial: 1 to MaxSerial bytes of
// [A-Za-z0-9._-], what the guest agent accepts.
func ValidSerial(s string) error {
	if s == "" || len(s) > MaxSerial {
		return fmt.Errorf("engine: disk serial %q: want 1 to %d bytes", s, MaxSerial)
	}
	for _, r := range s {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Errorf("engine: disk serial %q: %q is outside [A-Za-z0-9._-]", s, r)
		}
	}
	return nil
}

// Engine starts guests.
type Engine interface {
	// Name is "qemu" or "builtin".
	Name() string
	// Accel describes the acceleration used ("kvm", "tcg").
	Accel() string
	Start(ctx context.Context, m Machine) (Handle, error)
}

// ErrStopped means the guest stopped before its side of the link came up.
var ErrStopped = errors.New("engine: the guest stopped before the link came up")

// Choice is what Select picked and why.
type Choice struct {
	Engine Engine
	// Why explains the choice in one line ("/dev/kvm works: ...").
	Why string
}

// Select returns the engine for name: "qemu", "builtin" or "auto" (builtin
// when /dev/kvm is usable, else qemu). kvm probes /dev/kvm; nil means
// ProbeKVM.
func Select(name string, kvm func() error) (Choice, error) {
	if kvm == nil {
		kvm = ProbeKVM
	}
	kerr := kvm()
	switch name {
	case "qemu":
		q := &QEMU{KVM: kerr == nil}
		return Choice{Engine: q, Why: "requested with --engine qemu" + accelWhy(kerr)}, nil
	case "builtin":
		if kerr != nil {
			return Choice{}, fmt.Errorf("engine builtin needs a usable /dev/kvm: %w (use --engine qemu)", kerr)
		}
		return Choice{Engine: Builtin{}, Why: "requested with --engine builtin"}, nil
	case "auto", "":
		if kerr == nil {
			return Choice{Engine: Builtin{}, Why: "/dev/kvm works"}, nil
		}
		return Choice{Engine: &QEMU{}, Why: fmt.Sprintf("no usable KVM (%v)", kerr)}, nil
	}
	return Choice{}, fmt.Errorf("engine %q: want auto, builtin or qemu", name)
}

func accelWhy(kerr error) string {
	if kerr == nil {
		return ", /dev/kvm works"
	}
	return fmt.Sprintf(", no usable KVM (%v)", kerr)
}

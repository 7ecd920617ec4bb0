package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/greatjail/cvm/vmm"
)

// AgentVsockPort is the guest vsock port the agent listens on.
const AgentVsockPort = 1024

// Builtin is the builtin engine: vmm.Run in this process on /dev/kvm. The
// guest gets the same devices as the measured plan (one disk, entropy,
// vsock), so a builtin launch is the plan the measurement was computed from.
// A Machine with HotplugPorts also gets that many disk hot-plug slots
// (vmm.DiskSlot: empty virtio-blk devices after the others, which change
// the plan); its Handle implements DiskHotplug. There is no QMP monitor.
type Builtin struct {
	// KVMPath overrides vmm.DefaultKVMPath (tests).
	KVMPath string
}

// Name returns "builtin".
func (Builtin) Name() string { return "builtin" }

// Accel returns "kvm".
func (Builtin) Accel() string { return "kvm" }

// Config returns the vmm.Config the builtin engine runs for m, reading the
// kernel and initramfs. Console is left nil.
func (b Builtin) Config(m Machine) (vmm.Config, error) {
	if m.QMPSocket != "" {
		return vmm.Config{}, errors.New("builtin engine: no QMP monitor (Machine.QMPSocket): hot-plug disks through the Handle's DiskHotplug, or use the qemu engine")
	}
	if m.HotplugPorts < 0 || m.HotplugPorts > MaxHotplugPorts {
		return vmm.Config{}, fmt.Errorf("builtin engine: %d hot-plug slots (Machine.HotplugPorts): want 0 to %d", m.HotplugPorts, MaxHotplugPorts)
	}
	kernel, err := os.ReadFile(m.Kernel)
	if err != nil {
		return vmm.Config{}, fmt.Errorf("builtin engine: kernel: %w", err)
	}
	initrd, err := os.ReadFile(m.Initrd)
	if err != nil {
		return vmm.Config{}, fmt.Errorf("builtin engine: initramfs: %w", err)
	}
	var slots []*vmm.DiskSlot
	for range m.HotplugPorts {
		slots = append(slots, vmm.NewDiskSlot())
	}
	return vmm.Config{
		Kernel: kernel, Initrd: initrd, Cmdline: m.Cmdline,
		MemorySize: m.Memory, VCPUs: m.VCPUs,
		Disks:    []vmm.Disk{{Path: m.Disk}},
		VsockUDS: m.LinkSocket, RNG: true,
		Slots:   slots,
		KVMPath: b.KVMPath,
	}, nil
}

// Start validates the configuration and runs the VM on a goroutine.
func (b Builtin) Start(ctx context.Context, m Machine) (Handle, error) {
	cfg, err := b.Config(m)
	if err != nil {
		return nil, err
	}
	if err := vmm.Validate(cfg); err != nil {
		return nil, fmt.Errorf("builtin engine: %w", err)
	}
	console, err := openConsoleLog(m.ConsoleLog, MaxConsoleLog)
	if err != nil {
		return nil, fmt.Errorf("builtin engine: %w", err)
	}
	cfg.Console = console
	// The engine log gets the VM's shape and how it ended, as QEMU's
	// stderr does for the qemu engine: the launcher names it on failure.
	elog := io.Discard
	var elogFile *os.File
	if m.EngineLog != "" {
		if elogFile, err = os.OpenFile(m.EngineLog, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600); err != nil {
			console.Close()
			return nil, fmt.Errorf("builtin engine: %w", err)
		}
		elog = elogFile
	}
	fmt.Fprintf(elog, "builtin engine: %s: %d vCPUs, %d MiB, disk %s, %d hot-plug slots, vsock %s, cmdline %q\n",
		m.Kernel, cfg.VCPUs, cfg.MemorySize>>20, m.Disk, len(cfg.Slots), m.LinkSocket, cfg.Cmdline)
	// The VM lives until Kill or its own power-off, not until ctx ends:
	// the caller shuts it down gracefully first.
	vctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	h := &builtinHandle{uds: m.LinkSocket, cancel: cancel, exited: make(chan struct{}), slots: cfg.Slots, elog: elog}
	go func() {
		defer close(h.exited)
		defer console.Close()
		res, err := vmm.Run(vctx, cfg)
		switch {
		case err != nil && errors.Is(err, context.Canceled):
			h.err = errors.New("builtin engine: the VM was stopped")
		case err != nil:
			h.err = fmt.Errorf("builtin engine: %w", err)
		case res != nil && res.Reason != vmm.ReasonPowerOff:
			h.err = fmt.Errorf("builtin engine: the guest stopped with %s", res.Reason)
		}
		if h.err != nil {
			fmt.Fprintln(elog, h.err)
		} else {
			fmt.Fprintln(elog, "builtin engine: the guest powered off")
		}
		if elogFile != nil {
			elogFile.Close()
		}
	}()
	return h, nil
}

// builtinHandle is a VM running on a goroutine. err is written once before
// exited closes.
type builtinHandle struct {
	uds    string
	cancel context.CancelFunc
	exited chan struct{}
	err    error
	kill   sync.Once
	slots  []*vmm.DiskSlot // safe for concurrent use
	// elog is the engine log; slot changes are noted there. Its writes
	// are serialized by the file (the VM goroutine writes too).
	elog io.Writer
}

var _ DiskHotplug = (*builtinHandle)(nil)

// slot returns hot-plug slot i.
func (h *builtinHandle) slot(i int) (*vmm.DiskSlot, error) {
	if i < 0 || i >= len(h.slots) {
		return nil, fmt.Errorf("builtin engine: hot-plug slot %d: the VM has %d (0 to %d)", i, len(h.slots), len(h.slots)-1)
	}
	return h.slots[i], nil
}

// AttachDisk implements DiskHotplug: vmm.DiskSlot.Attach.
func (h *builtinHandle) AttachDisk(ctx context.Context, slot int, path, serial string, ro bool) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("builtin engine: attach %s: %w", path, err)
	}
	if err := ValidSerial(serial); err != nil {
		return fmt.Errorf("builtin engine: attach %s: %w", path, err)
	}
	s, err := h.slot(slot)
	if err != nil {
		return err
	}
	if err := s.Attach(path, serial, ro); err != nil {
		return fmt.Errorf("builtin engine: hot-plug slot %d: %w", slot, err)
	}
	fmt.Fprintf(h.elog, "builtin engine: slot %d: attached %s (serial %s, read-only %t)\n", slot, path, serial, ro)
	return nil
}

// DetachDisk implements DiskHotplug: vmm.DiskSlot.Detach.
func (h *builtinHandle) DetachDisk(ctx context.Context, slot int) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("builtin engine: detach slot %d: %w", slot, err)
	}
	s, err := h.slot(slot)
	if err != nil {
		return err
	}
	path := s.Attached()
	if err := s.Detach(); err != nil {
		return fmt.Errorf("builtin engine: hot-plug slot %d: %w", slot, err)
	}
	if path != "" {
		fmt.Fprintf(h.elog, "builtin engine: slot %d: detached %s\n", slot, path)
	}
	return nil
}

// linkRetry is how often Link retries a vsock connection the guest has not
// accepted yet (the agent listens only once it has booted).
const linkRetry = 50 * time.Millisecond

func (h *builtinHandle) Link(ctx context.Context) (io.ReadWriteCloser, error) {
	for {
		c, err := DialVsock(ctx, h.uds, AgentVsockPort)
		if err == nil {
			return c, nil
		}
		select {
		case <-h.exited:
			return nil, h.stoppedErr()
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (last attempt: %v)", ctx.Err(), err)
		case <-time.After(linkRetry):
		}
	}
}

// stoppedErr is Link's error once the VM has stopped.
func (h *builtinHandle) stoppedErr() error {
	why := "the guest powered off"
	if h.err != nil {
		why = h.err.Error()
	}
	return fmt.Errorf("%w: %s", ErrStopped, why)
}

// DialVsock connects to guest vsock port through a Firecracker-style hybrid
// vsock Unix socket: it sends "CONNECT <port>\n" and expects "OK <n>\n".
// An error means nobody listens on the port yet (the device closes the
// connection) or the socket is not there.
func DialVsock(ctx context.Context, uds string, port uint32) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", uds)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	} else {
		c.SetDeadline(time.Now().Add(5 * time.Second))
	}
	if _, err := fmt.Fprintf(c, "CONNECT %d\n", port); err != nil {
		c.Close()
		return nil, fmt.Errorf("vsock %s: CONNECT: %w", uds, err)
	}
	// Read the reply one byte at a time: nothing after the newline may be
	// consumed, it belongs to the stream.
	line, err := readLine(c, 64)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("vsock %s: port %d: %w", uds, port, err)
	}
	if !strings.HasPrefix(line, "OK ") {
		c.Close()
		return nil, fmt.Errorf("vsock %s: port %d: unexpected reply %q", uds, port, line)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// readLine reads up to max bytes through the first newline, without
// buffering beyond it.
func readLine(r io.Reader, max int) (string, error) {
	var b strings.Builder
	var one [1]byte
	for b.Len() < max {
		if _, err := io.ReadFull(r, one[:]); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				err = io.EOF
			}
			return "", err
		}
		if one[0] == '\n' {
			return b.String(), nil
		}
		b.WriteByte(one[0])
	}
	return "", fmt.Errorf("reply longer than %d bytes", max)
}

func (h *builtinHandle) Wait() error {
	<-h.exited
	return h.err
}

func (h *builtinHandle) Exited() <-chan struct{} { return h.exited }

func (h *builtinHandle) Kill() { h.kill.Do(h.cancel) }

package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// QEMUBinary is the QEMU system emulator the qemu engine runs (Debian
// package qemu-system-x86).
const QEMUBinary = "qemu-system-x86_64"

// QEMU is the qemu engine: QEMU with direct kernel boot, no firmware
// graphics, no network, the serial console in a bounded file, the disk as
// virtio-blk-pci and the link as the virtio-serial port cvm.link.
//
// Machine type: q35. Measured on this 2-core host under TCG with the
// Debian 13 cloud kernel (boot to the "no root fs" panic, no initramfs):
// q35 4.3-10.7 s, pc 5.2-6.2 s (the host was shared, so noisy: no
// difference worth having), and -M microvm (pcie=on, with or without
// pit/pic/rtc) never boots: the kernel stops at "tsc: Unable to calibrate
// against PIT" under TCG. So q35, which also carries SEV-SNP and TDX guests
// on upstream QEMU.
type QEMU struct {
	// Binary overrides QEMUBinary (tests).
	Binary string
	// KVM selects -accel kvm; otherwise -accel tcg.
	KVM bool
}

// Name returns "qemu".
func (q *QEMU) Name() string { return "qemu" }

// Accel returns "kvm" or "tcg".
func (q *QEMU) Accel() string {
	if q.KVM {
		return "kvm"
	}
	return "tcg"
}

// Args returns QEMU's command line (without the binary) for m. A Machine
// with no QMPSocket and no HotplugPorts gives the launcher's command line,
// unchanged; those add, at the end, the monitor socket and the root ports.
func (q *QEMU) Args(m Machine) []string {
	cpu := "max"
	if q.KVM {
		cpu = "host"
	}
	accel := q.Accel()
	if !q.KVM && m.VCPUs > 1 {
		// Multi-threaded TCG (a host thread per vCPU, QEMU's default)
		// lets a Linux guest of more than one vCPU die now and then on
		// its own text patching: a static key flipped on one vCPU (for
		// example sched_clock's, when a loaded host makes the guest mark
		// its TSC unstable) leaves another executing a stale int3
		// ("Oops: int3 ... Kernel panic", seen with QEMU 7.2 here). One
		// host thread running the vCPUs in turn does not (docs/testing.md).
		accel = "tcg,thread=single"
	}
	args := []string{
		"-nodefaults", "-no-user-config", "-no-reboot",
		"-display", "none", "-nic", "none",
		"-machine", "q35",
		"-accel", accel, "-cpu", cpu,
		"-m", strconv.FormatUint(m.Memory>>20, 10) + "M",
		"-smp", strconv.Itoa(m.VCPUs),
		"-kernel", m.Kernel, "-initrd", m.Initrd, "-append", m.Cmdline,
		// The console goes to QEMU's stdout, which the engine writes to
		// m.ConsoleLog with a bound (consoleLog).
		"-chardev", "stdio,id=console,signal=off",
		"-serial", "chardev:console",
		"-drive", "file=" + qemuEscape(m.Disk) + ",if=none,id=disk0,format=raw,cache=none,aio=threads",
		"-device", "virtio-blk-pci,drive=disk0",
		"-device", "virtio-rng-pci",
		"-device", "virtio-serial-pci",
		"-chardev", "socket,id=link,path=" + qemuEscape(m.LinkSocket),
		"-device", "virtserialport,chardev=link,name=cvm.link",
	}
	if m.QMPSocket != "" {
		args = append(args, "-qmp", "unix:"+qemuEscape(m.QMPSocket)+",server=on,wait=off")
	}
	for i := range m.HotplugPorts {
		// io-reserve=0: a virtio-blk-pci device needs no I/O ports, and
		// each port would otherwise reserve 4 KiB of the 64 KiB I/O space.
		args = append(args, "-device", fmt.Sprintf("pcie-root-port,id=%s,chassis=%d,io-reserve=0", HotplugPortID(i), i+1))
	}
	return args
}

// qemuEscape escapes a value inside a QEMU option list (a comma is doubled).
func qemuEscape(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// Start listens on m.LinkSocket, then starts QEMU, which connects to it.
func (q *QEMU) Start(ctx context.Context, m Machine) (Handle, error) {
	bin := q.Binary
	if bin == "" {
		bin = QEMUBinary
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, fmt.Errorf("qemu engine: %s not found (install the Debian package qemu-system-x86): %w", bin, err)
	}
	if m.Memory%(1<<20) != 0 || m.Memory == 0 {
		return nil, fmt.Errorf("qemu engine: memory %d is not a positive multiple of 1 MiB", m.Memory)
	}
	if m.HotplugPorts < 0 || m.HotplugPorts > MaxHotplugPorts {
		return nil, fmt.Errorf("qemu engine: %d hot-plug ports: want 0..%d", m.HotplugPorts, MaxHotplugPorts)
	}
	if m.QMPSocket != "" {
		// A socket left by an earlier run would make QEMU fail to bind.
		if err := os.Remove(m.QMPSocket); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("qemu engine: QMP socket %s: %w", m.QMPSocket, err)
		}
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: m.LinkSocket, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("qemu engine: listen on the link socket: %w", err)
	}
	// The state dir is ours; remove the socket file when the listener closes.
	ln.SetUnlinkOnClose(true)
	var elog io.Writer = io.Discard
	var elogFile *os.File
	if m.EngineLog != "" {
		if elogFile, err = os.OpenFile(m.EngineLog, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600); err != nil {
			ln.Close()
			return nil, fmt.Errorf("qemu engine: %w", err)
		}
		elog = elogFile
	}
	console, err := openConsoleLog(m.ConsoleLog, MaxConsoleLog)
	if err != nil {
		ln.Close()
		if elogFile != nil {
			elogFile.Close()
		}
		return nil, fmt.Errorf("qemu engine: %w", err)
	}
	// Not exec.CommandContext: the caller stops the guest through Kill,
	// after a graceful shutdown.
	cmd := exec.Command(path, q.Args(m)...)
	cmd.Stdout, cmd.Stderr = console, elog
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		ln.Close()
		console.Close()
		if elogFile != nil {
			elogFile.Close()
		}
		return nil, fmt.Errorf("qemu engine: start %s: %w", path, err)
	}
	h := &qemuHandle{cmd: cmd, ln: ln, exited: make(chan struct{}), log: m.EngineLog}
	go func() {
		h.err = cmd.Wait() // also waits for the console copy to end
		console.Close()
		if elogFile != nil {
			elogFile.Close()
		}
		// exited first: an Accept failing on the closed listener then
		// finds the guest stopped.
		close(h.exited)
		ln.Close()
	}()
	return h, nil
}

// qemuHandle is a running QEMU. err is written once before exited closes.
type qemuHandle struct {
	cmd    *exec.Cmd
	ln     *net.UnixListener
	log    string
	exited chan struct{}
	err    error
	kill   sync.Once
}

func (h *qemuHandle) Link(ctx context.Context) (io.ReadWriteCloser, error) {
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := h.ln.Accept()
		ch <- res{c, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, h.stoppedErr(r.err)
		}
		// One connection only: QEMU has made it.
		h.ln.Close()
		return r.c, nil
	case <-h.exited:
		return nil, h.stoppedErr(nil)
	case <-ctx.Done():
		h.ln.Close()
		return nil, ctx.Err()
	}
}

func (h *qemuHandle) stoppedErr(cause error) error {
	select {
	case <-h.exited:
		err := fmt.Errorf("%w: qemu exited (%v)", ErrStopped, h.err)
		if h.log != "" {
			err = fmt.Errorf("%w; its messages are in %s", err, h.log)
		}
		return err
	default:
		return fmt.Errorf("qemu engine: accept the link: %w", cause)
	}
}

func (h *qemuHandle) Wait() error {
	<-h.exited
	var ee *exec.ExitError
	if errors.As(h.err, &ee) {
		return fmt.Errorf("qemu: %w", h.err)
	}
	return h.err
}

func (h *qemuHandle) Exited() <-chan struct{} { return h.exited }

func (h *qemuHandle) Kill() {
	h.kill.Do(func() {
		select {
		case <-h.exited:
		default:
			_ = h.cmd.Process.Kill()
		}
	})
}

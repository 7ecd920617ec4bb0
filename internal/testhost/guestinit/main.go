//go:build linux

// Command guestinit is the /init of the test guest that the VM tier boots
// with the builtin VMM (see package internal/testhost). It loads the
// modules listed in /etc/modules, exercises the virtio devices and reports
// each result on the console as a line starting with "CVMTEST: ", then
// powers the guest off. It decides nothing: the host side compares what it
// reports with what it expects.
//
// Lines it prints:
//
//	CVMTEST: init
//	CVMTEST: modules N/M NAME,...           (N of the M listed modules loaded)
//	CVMTEST: cpus LIST                      (/sys/devices/system/cpu/online)
//	CVMTEST: disk-read LINE                 (first line of /dev/vda)
//	CVMTEST: disk-write ok                  (wrote a line at byte 512)
//	CVMTEST: vsock-listening PORT
//	CVMTEST: vsock-guest REPLY              (reply to a guest-initiated connection)
//	CVMTEST: vsock-host ok                  (echoed a host-initiated connection)
//	CVMTEST: rng CURRENT HEX
//	CVMTEST: fail STEP: ERR
//	CVMTEST: done
package main

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/greatjail/cvm/internal/testhost/wire"
)

// out receives the report lines: /dev/kmsg, so that each line reaches the
// console whole (a write to the tty can be cut by a kernel message printed
// while it drains), at a level printed even with "quiet"; the console if
// /dev/kmsg is missing.
var out io.Writer = os.Stdout

func say(format string, a ...any) {
	fmt.Fprintf(out, wire.KmsgLevel+wire.GuestPrefix+format+"\n", a...)
}

func fail(step string, err error) { say("fail %s: %v", step, err) }

func main() {
	if f, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0); err == nil {
		out = f
	}
	say("init")
	go func() {
		time.Sleep(wire.GuestWatchdog)
		fail("watchdog", fmt.Errorf("still running after %v", wire.GuestWatchdog))
		poweroff()
	}()
	mounts()
	if cmdline, _ := os.ReadFile("/proc/cmdline"); strings.Contains(string(cmdline), wire.BenchFlag) {
		say("done")
		poweroff()
	}
	loadModules()
	cpus()
	disk()
	vsock()
	rng()
	say("done")
	poweroff()
}

func poweroff() {
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		fail("poweroff", err)
	}
	select {}
}

func mounts() {
	for _, m := range []struct{ src, dir, fs string }{
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"devtmpfs", "/dev", "devtmpfs"},
	} {
		os.MkdirAll(m.dir, 0o755)
		if err := unix.Mount(m.src, m.dir, m.fs, 0, ""); err != nil && err != unix.EBUSY {
			fail("mount "+m.dir, err)
		}
	}
}

func loadModules() {
	list, err := os.ReadFile(wire.ModuleList)
	if err != nil {
		fail("modules", err)
		return
	}
	names := strings.Fields(string(list))
	n := 0
	for _, name := range names {
		if err := loadModule("/lib/modules/" + name + ".ko"); err != nil {
			fail("modules", fmt.Errorf("%s: %w", name, err))
			continue
		}
		n++
	}
	say("modules %d/%d %s", n, len(names), strings.Join(names, ","))
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	err = unix.FinitModule(int(f.Fd()), "", 0)
	if err == unix.EEXIST {
		return nil
	}
	return err
}

func cpus() {
	b, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil {
		fail("cpus", err)
		return
	}
	say("cpus %s", strings.TrimSpace(string(b)))
}

// waitFor polls for path, which a driver creates asynchronously after its
// module loaded.
func waitFor(path string) error {
	deadline := time.Now().Add(wire.DeviceWait)
	for {
		_, err := os.Stat(path)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func disk() {
	if err := waitFor("/dev/vda"); err != nil {
		fail("disk-read", err)
		return
	}
	f, err := os.OpenFile("/dev/vda", os.O_RDWR, 0)
	if err != nil {
		fail("disk-read", err)
		return
	}
	defer f.Close()
	buf := make([]byte, wire.SectorSize)
	if _, err := io.ReadFull(f, buf); err != nil {
		fail("disk-read", err)
		return
	}
	line, _, _ := bytes.Cut(buf, []byte("\n"))
	say("disk-read %s", printable(line))
	out := make([]byte, wire.SectorSize)
	copy(out, wire.GuestWrite(string(line)))
	if _, err := f.WriteAt(out, wire.SectorSize); err != nil {
		fail("disk-write", err)
		return
	}
	if err := f.Sync(); err != nil {
		fail("disk-write", err)
		return
	}
	say("disk-write ok")
}

func printable(b []byte) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return '?'
		}
		return r
	}, string(b))
}

// vsockConn wraps a connected AF_VSOCK socket as a file with deadlines
// (net.FileConn does not know AF_VSOCK; a non-blocking descriptor makes
// os.File use the runtime poller).
func vsockConn(fd int, name string) (*os.File, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), name), nil
}

func vsock() {
	if err := waitFor("/dev/vsock"); err != nil {
		fail("vsock-guest", err)
		return
	}
	lfd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM, 0)
	if err != nil {
		fail("vsock-host", err)
		return
	}
	if err := unix.Bind(lfd, &unix.SockaddrVM{CID: unix.VMADDR_CID_ANY, Port: wire.HostPort}); err != nil {
		fail("vsock-host", fmt.Errorf("bind port %d: %w", wire.HostPort, err))
		return
	}
	if err := unix.Listen(lfd, 1); err != nil {
		fail("vsock-host", err)
		return
	}
	say("vsock-listening %d", wire.HostPort)

	guestInitiated()

	type accepted struct {
		fd  int
		err error
	}
	ch := make(chan accepted, 1)
	go func() {
		fd, _, err := unix.Accept(lfd)
		ch <- accepted{fd, err}
	}()
	var a accepted
	select {
	case a = <-ch:
	case <-time.After(wire.DeviceWait):
		fail("vsock-host", fmt.Errorf("no connection on port %d within %v", wire.HostPort, wire.DeviceWait))
		return
	}
	if a.err != nil {
		fail("vsock-host", a.err)
		return
	}
	c, err := vsockConn(a.fd, "vsock-accepted")
	if err != nil {
		fail("vsock-host", err)
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(wire.DeviceWait))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		fail("vsock-host", err)
		return
	}
	if _, err := io.WriteString(c, wire.Echo(line)); err != nil {
		fail("vsock-host", err)
		return
	}
	say("vsock-host ok")
}

func guestInitiated() {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM, 0)
	if err != nil {
		fail("vsock-guest", err)
		return
	}
	if err := unix.Connect(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_HOST, Port: wire.GuestPort}); err != nil {
		unix.Close(fd)
		fail("vsock-guest", fmt.Errorf("connect to CID 2 port %d: %w", wire.GuestPort, err))
		return
	}
	c, err := vsockConn(fd, "vsock-dialed")
	if err != nil {
		fail("vsock-guest", err)
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(wire.DeviceWait))
	if _, err := io.WriteString(c, wire.GuestHello+"\n"); err != nil {
		fail("vsock-guest", err)
		return
	}
	reply, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		fail("vsock-guest", err)
		return
	}
	say("vsock-guest %s", printable([]byte(strings.TrimSuffix(reply, "\n"))))
}

func rng() {
	if err := waitFor("/dev/hwrng"); err != nil {
		fail("rng", err)
		return
	}
	cur, err := os.ReadFile("/sys/class/misc/hw_random/rng_current")
	if err != nil {
		fail("rng", err)
		return
	}
	f, err := os.Open("/dev/hwrng")
	if err != nil {
		fail("rng", err)
		return
	}
	defer f.Close()
	b := make([]byte, 16)
	if _, err := io.ReadFull(f, b); err != nil {
		fail("rng", err)
		return
	}
	say("rng %s %s", strings.TrimSpace(string(cur)), hex.EncodeToString(b))
}

package testhost

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/greatjail/cvm/internal/testhost/wire"
)

// Names of the checks in a Report, in order.
const (
	CheckInit     = "init"
	CheckCPUs     = "cpus"
	CheckModules  = "modules"
	CheckDisk     = "disk"
	CheckVsockOut = "vsock-guest-initiated"
	CheckVsockIn  = "vsock-host-initiated"
	CheckRNG      = "rng"
	CheckPowerOff = "poweroff"
	CheckSeccomp  = "seccomp"
)

// Result is one check's outcome.
type Result struct {
	Name   string
	OK     bool
	Detail string
}

// Report is what Check found for one guest.
type Report struct {
	Guest    string
	Results  []Result
	ExitCode int
	Stderr   string // the VMM's standard error
	// Seconds from starting the VMM to the guest's first line from /init
	// and to the VMM's exit (0 when not reached).
	InitSeconds, ExitSeconds float64
	// MaxRSSKiB is the VMM process's peak resident set (getrusage).
	MaxRSSKiB int64
}

// Failed returns the checks that did not pass.
func (r *Report) Failed() []Result {
	var out []Result
	for _, c := range r.Results {
		if !c.OK {
			out = append(out, c)
		}
	}
	return out
}

// CheckOptions configure one Check run.
type CheckOptions struct {
	VMM     string // the cvm binary
	Guest   GuestConfig
	Dir     string    // scratch directory for the disk image and sockets
	Console io.Writer // optional: receives the guest console as it arrives
}

// DefaultCmdline is the guest command line Check uses when the guest
// config has none. "quiet" keeps the console short (every byte is a VM
// exit, slow under emulation); the guest's report lines are printed at a
// level "quiet" keeps (see wire.KmsgLevel). Replace "quiet" with
// "earlyprintk=serial,ttyS0" to see the whole boot.
const DefaultCmdline = "console=ttyS0 quiet printk.devkmsg=on reboot=k panic=-1 rdinit=/init"

// Check boots one guest with `VMM vm run` and runs the check suite
// described in the package documentation. The error is for a harness
// failure (the VMM could not be started, scratch files could not be
// written); a guest or VMM failure is a failed Result in the Report.
func Check(ctx context.Context, o CheckOptions) (*Report, error) {
	g := o.Guest
	if g.VCPUs == 0 {
		g.VCPUs = 2
	}
	if g.Memory == "" {
		g.Memory = "256M"
	}
	if g.Cmdline == "" {
		g.Cmdline = DefaultCmdline
	}
	nonceBytes := make([]byte, 8)
	rand.Read(nonceBytes)
	nonce := hex.EncodeToString(nonceBytes)

	disk := filepath.Join(o.Dir, "disk.img")
	img := make([]byte, 1<<20)
	pattern := wire.DiskPattern(nonce)
	copy(img, pattern+"\n")
	if err := os.WriteFile(disk, img, 0o600); err != nil {
		return nil, fmt.Errorf("testhost: %w", err)
	}
	uds := filepath.Join(o.Dir, "v.sock")
	ln, err := net.Listen("unix", fmt.Sprintf("%s_%d", uds, wire.GuestPort))
	if err != nil {
		return nil, fmt.Errorf("testhost: %w", err)
	}
	defer ln.Close()

	// Guest-initiated: answer one line on <uds>_5001.
	var guestLine string
	var guestErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			guestErr = err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(wire.DeviceWait))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			guestErr = fmt.Errorf("read: %w", err)
			return
		}
		guestLine = strings.TrimSuffix(line, "\n")
		if _, err := io.WriteString(c, wire.HostReply(line)); err != nil {
			guestErr = fmt.Errorf("write: %w", err)
		}
	}()

	cmd := exec.CommandContext(ctx, o.VMM, "vm", "run",
		"--kernel", g.Kernel, "--initrd", g.Initrd, "--cmdline", g.Cmdline,
		"--memory", g.Memory, "--vcpus", strconv.Itoa(g.VCPUs),
		"--disk", disk, "--vsock-uds", uds, "--rng")
	cmd.WaitDelay = 5 * time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("testhost: %w", err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("testhost: start %s: %w", o.VMM, err)
	}

	rep := &Report{Guest: g.Name}
	lines := map[string][]string{} // guest report lines by first word
	var hostInitiated chan error
	seccompMode := "(guest never reached /init)"
	s := bufio.NewScanner(stdout)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		line := s.Text()
		if o.Console != nil {
			fmt.Fprintln(o.Console, line)
		}
		word, rest, ok := parseGuestLine(line)
		if !ok {
			continue
		}
		if word == "init" && rep.InitSeconds == 0 {
			rep.InitSeconds = time.Since(start).Seconds()
			// The guest runs, so the VMM has confined itself.
			seccompMode = procStatus(cmd.Process.Pid, "Seccomp")
		}
		lines[word] = append(lines[word], rest)
		if word == "vsock-listening" && hostInitiated == nil {
			hostInitiated = make(chan error, 1)
			go func() { hostInitiated <- connectGuest(uds, nonce) }()
		}
	}
	waitErr := cmd.Wait()
	rep.ExitSeconds = time.Since(start).Seconds()
	rep.Stderr = stderr.String()
	rep.ExitCode = cmd.ProcessState.ExitCode()
	if ru, ok := rusage(cmd.ProcessState); ok {
		rep.MaxRSSKiB = ru
	}
	ln.Close()
	wg.Wait()

	res := func(name string, ok bool, format string, a ...any) {
		rep.Results = append(rep.Results, Result{Name: name, OK: ok, Detail: fmt.Sprintf(format, a...)})
	}
	fails := func(word string) string {
		var out []string
		for _, l := range lines[word] {
			if strings.HasPrefix(l, "fail ") {
				out = append(out, l)
			}
		}
		return strings.Join(out, "; ")
	}
	last := func(word string) string {
		if l := lines[word]; len(l) > 0 {
			return l[len(l)-1]
		}
		return ""
	}

	res(CheckInit, len(lines["init"]) > 0, "%d init lines", len(lines["init"]))
	wantCPUs := "0"
	if g.VCPUs > 1 {
		wantCPUs = fmt.Sprintf("0-%d", g.VCPUs-1)
	}
	res(CheckCPUs, last("cpus") == wantCPUs, "online %q, want %q", last("cpus"), wantCPUs)
	mods := strings.Fields(last("modules"))
	modsOK := len(mods) >= 1 && fails("modules") == ""
	if modsOK {
		n, m, _ := strings.Cut(mods[0], "/")
		modsOK = n == m && n != "0"
	}
	res(CheckModules, modsOK, "guest said %q %s", last("modules"), fails("modules"))

	onDisk, derr := readAt(disk, wire.SectorSize, wire.SectorSize)
	wantDisk := wire.GuestWrite(pattern)
	diskOK := derr == nil && last("disk-read") == pattern && last("disk-write") == "ok" && strings.HasPrefix(string(onDisk), wantDisk)
	res(CheckDisk, diskOK, "guest read %q (want %q), wrote: %q; disk has %q (want %q) %v",
		last("disk-read"), pattern, last("disk-write"), trimZero(onDisk), wantDisk, derr)

	wantReply := strings.TrimSuffix(wire.HostReply(wire.GuestHello), "\n")
	res(CheckVsockOut, guestErr == nil && guestLine == wire.GuestHello && last("vsock-guest") == wantReply,
		"host got %q (err %v); guest got %q, want %q", guestLine, guestErr, last("vsock-guest"), wantReply)

	var inErr error = errors.New("the guest never listened")
	if hostInitiated != nil {
		inErr = <-hostInitiated
	}
	res(CheckVsockIn, inErr == nil && last("vsock-host") == "ok", "host side: %v; guest said %q", inErr, last("vsock-host"))

	rngFields := strings.Fields(last("rng"))
	rngOK := len(rngFields) == 2 && strings.HasPrefix(rngFields[0], "virtio_rng") && len(rngFields[1]) == 32 &&
		strings.Trim(rngFields[1], "0") != ""
	res(CheckRNG, rngOK, "guest said %q", last("rng"))

	// Mode 2 is a seccomp filter (proc(5)).
	res(CheckSeccomp, seccompMode == "2", "VMM process Seccomp mode %q while the guest ran, want \"2\" (filter)", seccompMode)

	stopped := strings.Contains(rep.Stderr, "guest stopped: poweroff")
	res(CheckPowerOff, waitErr == nil && rep.ExitCode == 0 && stopped && len(lines["done"]) > 0,
		"exit %v (code %d), done line: %v, stderr: %q", waitErr, rep.ExitCode, len(lines["done"]) > 0, lastLines(rep.Stderr, 5))
	return rep, nil
}

// parseGuestLine finds a guest report in a console line (after a kernel
// timestamp, if any) and splits it into its first word and the rest. A
// failure ("fail STEP: ERR") is filed under STEP's first word, with the
// whole message as the rest.
func parseGuestLine(line string) (word, rest string, ok bool) {
	i := strings.Index(line, wire.GuestPrefix)
	if i < 0 {
		return "", "", false
	}
	msg := strings.TrimSpace(line[i+len(wire.GuestPrefix):])
	word, rest, _ = strings.Cut(msg, " ")
	if word == "fail" {
		step, _, _ := strings.Cut(rest, ":")
		if f := strings.Fields(step); len(f) > 0 {
			return f[0], msg, true
		}
		return "fail", msg, true
	}
	return word, rest, word != ""
}

// connectGuest makes the host-initiated round trip through the hybrid
// vsock socket: CONNECT, OK, a line and its echo.
func connectGuest(uds, nonce string) error {
	c, err := net.DialTimeout("unix", uds, wire.DeviceWait)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(wire.DeviceWait))
	if _, err := fmt.Fprintf(c, "CONNECT %d\n", wire.HostPort); err != nil {
		return err
	}
	r := bufio.NewReader(c)
	ok, err := r.ReadString('\n')
	if err != nil {
		return fmt.Errorf("CONNECT %d: %w", wire.HostPort, err)
	}
	if !strings.HasPrefix(ok, "OK ") {
		return fmt.Errorf("CONNECT %d: answer %q", wire.HostPort, ok)
	}
	msg := "hello-from-host " + nonce
	if _, err := io.WriteString(c, msg+"\n"); err != nil {
		return err
	}
	got, err := r.ReadString('\n')
	if err != nil {
		return fmt.Errorf("reading echo: %w", err)
	}
	if got != wire.Echo(msg) {
		return fmt.Errorf("echo %q, want %q", got, wire.Echo(msg))
	}
	return nil
}

// procStatus returns one field of /proc/PID/status, or a description of
// why it could not be read.
func procStatus(pid int, field string) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return err.Error()
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && k == field {
			return strings.TrimSpace(v)
		}
	}
	return "no " + field + " line"
}

func readAt(path string, off, n int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, n)
	_, err = f.ReadAt(b, off)
	return b, err
}

func trimZero(b []byte) string { return string(bytes.TrimRight(b, "\x00")) }

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

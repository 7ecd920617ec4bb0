package testhost

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Freeze is one time the test host stopped: QEMU used no CPU time for
// FrozenAfter. Seen so far (QEMU 7.2, TCG, emulated SVM, at a nested
// guest's boot): the test host's CPU halted in its idle loop with
// interrupts enabled, its local APIC holding the timer interrupt in IRR,
// deliverable, and QEMU never waking the vCPU for it. A serial receive
// interrupt makes QEMU look at the APIC again, and the test host runs on.
type Freeze struct {
	Idle time.Duration // without CPU time before the watcher acted
	// State is QEMU's monitor's "info registers", "info lapic" and
	// "info pic" at that moment.
	State   string
	Revived bool // a serial receive interrupt revived it
}

// FrozenAfter is how long QEMU may use no CPU time before the watcher
// calls the test host frozen: a running Linux, even idle, uses some every
// second (timers; the Go runtimes inside).
const FrozenAfter = time.Minute

// watchFreeze watches QEMU (p) until ctx ends. When it has used no CPU
// time for FrozenAfter, watchFreeze writes QEMU's view of the CPU and its
// interrupt controllers (from the human monitor at monitor) to log behind
// "FREEZE| " and writes a newline to the serial console's input (kick). If
// QEMU then runs again it goes on watching; otherwise it kills QEMU and
// returns dead.
func watchFreeze(ctx context.Context, p *os.Process, monitor string, kick io.Writer, log io.Writer) (freezes []Freeze, dead bool) {
	say := func(format string, a ...any) {
		if log == nil {
			return
		}
		for _, l := range strings.Split(strings.TrimRight(fmt.Sprintf(format, a...), "\n"), "\n") {
			fmt.Fprintf(log, "FREEZE| %s\n", l)
		}
	}
	last, since := cpuTicks(p.Pid), time.Now()
	for {
		select {
		case <-ctx.Done():
			return freezes, false
		case <-time.After(10 * time.Second):
		}
		if now := cpuTicks(p.Pid); now != last || now < 0 {
			last, since = now, time.Now()
			continue
		}
		if time.Since(since) < FrozenAfter {
			continue
		}
		f := Freeze{Idle: time.Since(since).Round(time.Second)}
		say("QEMU (pid %d) used no CPU time for %v; its monitor:", p.Pid, f.Idle)
		cmds := []string{"info registers", "info lapic", "info pic"}
		replies, err := hmp(monitor, cmds...)
		var b strings.Builder
		for i, r := range replies {
			fmt.Fprintf(&b, "(qemu) %s\n%s\n", cmds[i], r)
		}
		if err != nil {
			fmt.Fprintf(&b, "%v\n", err)
		}
		f.State = b.String()
		say("%s", f.State)
		kick.Write([]byte("\n"))
		time.Sleep(20 * time.Second)
		if now := cpuTicks(p.Pid); now > last+100 { // a second of CPU: it runs again
			f.Revived = true
			say("a serial receive interrupt revived the test host (%d → %d CPU ticks)", last, now)
			freezes = append(freezes, f)
			last, since = now, time.Now()
			continue
		}
		say("a serial receive interrupt did not revive the test host; stopping it")
		freezes = append(freezes, f)
		p.Kill()
		return freezes, true
	}
}

// cpuTicks returns the user and system CPU time of pid in clock ticks,
// or -1.
func cpuTicks(pid int) int64 {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return -1
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if len(f) < 13 {
		return -1
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s
}

// hmpPrompt ends each of QEMU's human monitor replies.
const hmpPrompt = "(qemu) "

// hmp runs commands on QEMU's human monitor at socket and returns each
// one's reply, in order.
func hmp(socket string, commands ...string) ([]string, error) {
	c, err := net.DialTimeout("unix", socket, 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("testhost: monitor %s: %w", socket, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Duration(len(commands)+1) * 30 * time.Second))
	r := bufio.NewReader(c)
	read := func() (string, error) { // up to the next prompt
		var b strings.Builder
		for !strings.HasSuffix(b.String(), hmpPrompt) {
			ch, err := r.ReadByte()
			if err != nil {
				return b.String(), fmt.Errorf("testhost: monitor %s: %w", socket, err)
			}
			b.WriteByte(ch)
		}
		return strings.TrimSuffix(b.String(), hmpPrompt), nil
	}
	if _, err := read(); err != nil { // the banner
		return nil, err
	}
	var out []string
	for _, cmd := range commands {
		if _, err := fmt.Fprintf(c, "%s\n", cmd); err != nil {
			return out, fmt.Errorf("testhost: monitor %s: %w", socket, err)
		}
		reply, err := read()
		// The monitor echoes the command line (with terminal escapes)
		// first.
		if _, rest, ok := strings.Cut(reply, "\n"); ok {
			reply = rest
		}
		out = append(out, strings.TrimRight(strings.ReplaceAll(reply, "\r", ""), "\n"))
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// lockedWriter serialises writes to w.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

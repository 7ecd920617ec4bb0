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

// Freeze is one time the test host stopped. Two kinds are seen (QEMU
// 7.2, TCG, emulated SVM), alike in that the test host's local APIC holds
// the timer interrupt in IRR, deliverable, and QEMU never delivers it:
//   - idle: its CPU halted in the idle loop and QEMU uses no CPU time for
//     FrozenAfter;
//   - busy: its CPU spins at one instruction (waiting for what the timer
//     would bring) and QEMU uses a whole host CPU, while the console says
//     nothing for SilentAfter.
//
// A serial receive interrupt makes QEMU look at the APIC again, and the
// test host runs on.
type Freeze struct {
	Idle time.Duration // without CPU time (idle) or console output (busy) before the watcher acted
	Busy bool          // the busy kind
	// State is QEMU's monitor's "info registers", "info lapic" and
	// "info pic" at that moment.
	State string
	// Revived: the test host ran again after the kick (an idle freeze:
	// QEMU used CPU time, or the boot ended meanwhile). A busy freeze is
	// not judged: the next silence kicks again.
	Revived bool
}

// FrozenAfter is how long QEMU may use no CPU time before the watcher
// calls the test host frozen: a running Linux, even idle, uses some every
// second (timers; the Go runtimes inside).
const FrozenAfter = time.Minute

// SilentAfter is how long the console may say nothing before the watcher
// kicks the serial line anyway. A busy test host may be silent that long
// (a quiet nested boot); the kick does it no harm.
const SilentAfter = 3 * time.Minute

// watchTimes are watchFreeze's bounds (tests shorten them).
type watchTimes struct {
	poll, frozen, silent, revive time.Duration
}

var defaultWatch = watchTimes{poll: 10 * time.Second, frozen: FrozenAfter, silent: SilentAfter, revive: 20 * time.Second}

// watchFreeze watches QEMU (p) until ctx ends. When it has used no CPU
// time for w.frozen, or the console (whose last line came at lastLine())
// has been silent for w.silent, watchFreeze writes QEMU's view of the CPU
// and its interrupt controllers (from the human monitor at monitor) to log
// behind "FREEZE| " and writes a newline to the serial console's input
// (kick). After an idle freeze it waits up to w.revive: QEMU using CPU
// time again, QEMU gone, or ctx ending (the boot reported "done" or
// ended) all mean the test host ran on; otherwise it kills QEMU and
// returns dead.
func watchFreeze(ctx context.Context, p *os.Process, monitor string, kick io.Writer, log io.Writer, lastLine func() time.Time, w watchTimes) (freezes []Freeze, dead bool) {
	say := func(format string, a ...any) {
		if log == nil {
			return
		}
		for _, l := range strings.Split(strings.TrimRight(fmt.Sprintf(format, a...), "\n"), "\n") {
			fmt.Fprintf(log, "FREEZE| %s\n", l)
		}
	}
	state := func() string {
		cmds := []string{"info registers", "info lapic", "info pic"}
		replies, err := hmp(monitor, cmds...)
		var b strings.Builder
		for i, r := range replies {
			fmt.Fprintf(&b, "(qemu) %s\n%s\n", cmds[i], r)
		}
		if err != nil {
			fmt.Fprintf(&b, "%v\n", err)
		}
		return b.String()
	}
	last, since := cpuTicks(p.Pid), time.Now()
	kicked := time.Time{} // the last silence kick
	for {
		select {
		case <-ctx.Done():
			return freezes, false
		case <-time.After(w.poll):
		}
		now := cpuTicks(p.Pid)
		if now < 0 {
			return freezes, false // QEMU is gone: BootHost sees how it ended
		}
		if now != last {
			last, since = now, time.Now()
			quiet := time.Since(lastLine())
			if quiet < w.silent || time.Since(kicked) < w.silent {
				continue
			}
			f := Freeze{Idle: quiet.Round(time.Second), Busy: true}
			say("QEMU (pid %d) is busy but the console has said nothing for %v; its monitor:", p.Pid, f.Idle)
			f.State = state()
			say("%s", f.State)
			say("kicking the serial line")
			kick.Write([]byte("\n"))
			kicked = time.Now()
			freezes = append(freezes, f)
			continue
		}
		if time.Since(since) < w.frozen {
			continue
		}
		f := Freeze{Idle: time.Since(since).Round(time.Second)}
		say("QEMU (pid %d) used no CPU time for %v; its monitor:", p.Pid, f.Idle)
		f.State = state()
		say("%s", f.State)
		before := cpuTicks(p.Pid) // the monitor's own work excluded
		kick.Write([]byte("\n"))
		select {
		case <-ctx.Done():
			// The boot reported "done" or ended meanwhile: the test
			// host ran after the kick.
			f.Revived = true
			say("a serial receive interrupt revived the test host (it finished)")
			return append(freezes, f), false
		case <-time.After(w.revive):
		}
		switch now := cpuTicks(p.Pid); {
		case now < 0:
			f.Revived = true
			say("a serial receive interrupt revived the test host (QEMU has exited)")
			return append(freezes, f), false
		case now > before:
			f.Revived = true
			say("a serial receive interrupt revived the test host (%d → %d CPU ticks)", before, now)
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
// or -1 if it has exited.
func cpuTicks(pid int) int64 {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return -1
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if len(f) < 13 || f[0] == "Z" || f[0] == "X" {
		return -1 // gone, or exited and not yet reaped
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

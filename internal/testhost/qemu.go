package testhost

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/greatjail/cvm/internal/testhost/wire"
)

// BootOptions configure the test host.
type BootOptions struct {
	QEMU   string // qemu-system-x86_64
	Kernel string // the test host's kernel (bzImage)
	Initrd string // HostInitramfs output
	Memory string // QEMU -m, default 1536M
	// CPUs is the test host's vCPU count, default 1. With more, the
	// test host's kernel sometimes oopses on a stale int3 when KVM flips
	// a static key (live code patching seen by another emulated CPU
	// running an old translation); one vCPU avoids that, and is not
	// slower here: the guests' two vCPUs share it.
	CPUs int
	// Log receives the test host's serial console (its kernel log, the
	// hostinit lines and every guest console line, prefixed).
	Log io.Writer
	// Unfreeze makes BootHost watch for the test host freezing (QEMU uses
	// no CPU time at all, or is busy while the console stays silent: see
	// Freeze), log QEMU's view of it and revive it with a serial receive
	// interrupt; an idle freeze that does not revive ends the boot with an
	// error.
	Unfreeze bool
	// PowerOffGrace overrides the package's PowerOffGrace (tests).
	PowerOffGrace time.Duration
}

// HostCmdline is the test host's kernel command line.
const HostCmdline = "console=ttyS0 panic=-1 rdinit=/init"

// Boot runs the test host until its /init powers it off and returns the
// reports and test binary outcomes it printed, in order. The error reports a test host failure: QEMU
// failed, or the host ended without its "done" line or with a "fail" line.
func Boot(ctx context.Context, o BootOptions) ([]*Report, []TestRun, error) {
	out, err := BootHost(ctx, o)
	if out == nil {
		return nil, nil, err
	}
	return out.Reports, out.Tests, err
}

// hostCrash reports whether a test host console line (not a guest's, which
// hostinit prefixes) is its kernel's oops or panic.
func hostCrash(line string) bool {
	if !strings.HasPrefix(line, "[") {
		return false
	}
	_, msg, _ := strings.Cut(line, "] ")
	return strings.HasPrefix(msg, "Oops:") || strings.HasPrefix(msg, "Kernel panic") || strings.HasPrefix(msg, "BUG:")
}

// HostOutput is everything the test host's /init reported.
type HostOutput struct {
	Reports []*Report
	Tests   []TestRun
	Timings []*Timing
	// Freezes are the freezes BootOptions.Unfreeze saw, in order.
	Freezes []Freeze
}

// BootHost is Boot returning timings as well.
func BootHost(ctx context.Context, o BootOptions) (*HostOutput, error) {
	if o.Memory == "" {
		o.Memory = "1536M"
	}
	if o.CPUs == 0 {
		o.CPUs = 1
	}
	args := []string{"-M", "pc", "-accel", "tcg", "-cpu", "max", "-smp", fmt.Sprint(o.CPUs), "-m", o.Memory,
		"-kernel", o.Kernel, "-initrd", o.Initrd, "-append", HostCmdline,
		"-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot"}
	var monitor string
	var kick, input *os.File // the serial console's input
	if o.Unfreeze {
		dir, err := os.MkdirTemp("", "cvm-testhost-")
		if err != nil {
			return nil, fmt.Errorf("testhost: %w", err)
		}
		defer os.RemoveAll(dir)
		monitor = filepath.Join(dir, "monitor")
		args = append(args, "-monitor", "unix:"+monitor+",server=on,wait=off")
		if input, kick, err = os.Pipe(); err != nil {
			return nil, fmt.Errorf("testhost: %w", err)
		}
		defer kick.Close()
		defer input.Close()
	}
	if o.Log != nil {
		o.Log = &lockedWriter{w: o.Log} // the freeze watcher writes too
	}
	cmd := exec.CommandContext(ctx, o.QEMU, args...)
	cmd.WaitDelay = 5 * time.Second
	if input != nil {
		cmd.Stdin = input
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("testhost: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("testhost: start %s: %w", o.QEMU, err)
	}
	var ho HostOutput
	var dead bool             // a freeze did not revive
	var lastLine atomic.Int64 // when the console's last line came (Unix ns)
	lastLine.Store(time.Now().UnixNano())
	watched := make(chan struct{})
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	if o.Unfreeze {
		go func() {
			defer close(watched)
			ho.Freezes, dead = watchFreeze(wctx, cmd.Process, monitor, kick, o.Log,
				func() time.Time { return time.Unix(0, lastLine.Load()) }, defaultWatch)
		}()
	} else {
		close(watched)
	}
	crash := "" // the test host kernel's first oops or panic line
	var fails []string
	done := false
	var powerOff *time.Timer // ends QEMU if it does not power off after "done"
	var stopped atomic.Bool  // powerOff did
	s := bufio.NewScanner(out)
	s.Buffer(make([]byte, 64<<10), 4<<20)
	for s.Scan() {
		line := strings.TrimRight(s.Text(), "\r")
		lastLine.Store(time.Now().UnixNano())
		if o.Log != nil {
			fmt.Fprintln(o.Log, line)
		}
		if crash == "" && hostCrash(line) {
			crash = line
		}
		msg, ok := strings.CutPrefix(line, wire.HostPrefix)
		if !ok {
			continue
		}
		switch word, rest, _ := strings.Cut(msg, " "); word {
		case "report":
			var r Report
			if err := json.Unmarshal([]byte(rest), &r); err != nil {
				fails = append(fails, fmt.Sprintf("bad report line: %v", err))
				continue
			}
			ho.Reports = append(ho.Reports, &r)
		case "test":
			var r TestRun
			if err := json.Unmarshal([]byte(rest), &r); err != nil {
				fails = append(fails, fmt.Sprintf("bad test line: %v", err))
				continue
			}
			ho.Tests = append(ho.Tests, r)
		case "timing":
			var r Timing
			if err := json.Unmarshal([]byte(rest), &r); err != nil {
				fails = append(fails, fmt.Sprintf("bad timing line: %v", err))
				continue
			}
			ho.Timings = append(ho.Timings, &r)
		case "fail":
			fails = append(fails, rest)
		case "done":
			if done {
				break
			}
			done = true
			// Everything is reported; what is left is the power-off:
			// the freeze watcher has nothing more to guard, and a timer
			// ends QEMU should it not exit by itself.
			stopWatch()
			grace := cmp.Or(o.PowerOffGrace, PowerOffGrace)
			powerOff = time.AfterFunc(grace, func() {
				stopped.Store(true)
				if o.Log != nil {
					fmt.Fprintf(o.Log, "TESTHOST| the test host did not power off within %v of its /init finishing; stopping QEMU (pid %d)\n", grace, cmd.Process.Pid)
				}
				cmd.Process.Kill()
			})
		}
	}
	werr := cmd.Wait()
	if powerOff != nil {
		powerOff.Stop()
	}
	stopWatch()
	<-watched
	if dead {
		f := ho.Freezes[len(ho.Freezes)-1]
		fails = append(fails, fmt.Sprintf("the test host froze for good (no CPU time for %v; a serial receive interrupt did not revive it)", f.Idle))
	}
	if crash != "" {
		fails = append(fails, "the test host's kernel crashed: "+crash)
	}
	return &ho, verdict(fails, done, stopped.Load(), werr, stderr.String())
}

// PowerOffGrace is how long QEMU has to exit once the test host's /init
// has reported "done" (it powers off at once: normally well under a
// second).
const PowerOffGrace = time.Minute

// verdict is BootHost's outcome: fails (the test host's "fail" lines and
// what BootHost saw go wrong), whether /init reported "done", whether QEMU
// was stopped because it did not power off after that, and how QEMU ended.
// A test host stopped after "done" has reported everything, so its kill
// is no failure.
func verdict(fails []string, done, stoppedAfterDone bool, werr error, stderr string) error {
	switch {
	case len(fails) > 0:
		return fmt.Errorf("testhost: test host failed: %s", strings.Join(fails, "; "))
	case !done:
		return fmt.Errorf("testhost: test host ended before its /init finished (qemu: %v, stderr %q)", werr, stderr)
	case werr != nil && !stoppedAfterDone:
		return fmt.Errorf("testhost: qemu: %w (stderr %q)", werr, stderr)
	}
	return nil
}

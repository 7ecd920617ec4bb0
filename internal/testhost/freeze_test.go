package testhost

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fakeMonitor serves QEMU's human monitor protocol as QEMU 7.2 writes it
// (banner, prompt, the echoed command line with terminal escapes, CRLF
// line ends), answering each command from replies.
func fakeMonitor(t *testing.T, replies map[string]string) string {
	sock := filepath.Join(t.TempDir(), "monitor")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.Write([]byte("QEMU 7.2.22 monitor - type 'help' for more information\r\n(qemu) "))
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			cmd := strings.TrimSpace(line)
			c.Write([]byte(cmd + "\x1b[K\r\n" + strings.ReplaceAll(replies[cmd], "\n", "\r\n") + "(qemu) "))
		}
	}()
	return sock
}

func TestHMP(t *testing.T) {
	sock := fakeMonitor(t, map[string]string{
		"info registers": "CPU#0\nRIP=ffffffff8a2bc56f RFL=00000216 [----AP-] CPL=0 II=0 A20=1 SMM=0 HLT=1\n",
		"info lapic":     "IRR\t 236 \n",
	})
	got, err := hmp(sock, "info registers", "info lapic", "info pic")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"CPU#0\nRIP=ffffffff8a2bc56f RFL=00000216 [----AP-] CPL=0 II=0 A20=1 SMM=0 HLT=1",
		"IRR\t 236 ",
		"",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("hmp replies (-want +got)\n%s", diff)
	}
}

func TestHMPNoMonitor(t *testing.T) {
	if _, err := hmp(filepath.Join(t.TempDir(), "absent")); err == nil {
		t.Error("hmp on a missing socket: no error")
	}
}

func TestCPUTicks(t *testing.T) {
	if n := cpuTicks(os.Getpid()); n < 0 {
		t.Errorf("cpuTicks(self) = %d, want >= 0", n)
	}
	if n := cpuTicks(1 << 30); n != -1 {
		t.Errorf("cpuTicks(no such process) = %d, want -1", n)
	}
}

// kickFunc is a kick writer that calls fn on each kick.
type kickFunc func()

func (k kickFunc) Write(b []byte) (int, error) { k(); return len(b), nil }

// standIn starts a stand-in for QEMU (sh -c script) whose stdin is the
// returned writer, reaped in the background as BootHost's Wait does.
func standIn(t *testing.T, script string) (*exec.Cmd, io.WriteCloser) {
	t.Helper()
	cmd := exec.Command("sh", "-c", script)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-done })
	return cmd, in
}

var fastWatch = watchTimes{poll: 20 * time.Millisecond, frozen: 300 * time.Millisecond, silent: time.Hour, revive: 2 * time.Second}

// The watcher's verdicts on stand-ins for QEMU: idle and revived by the
// kick (it exits, as a test host that finishes and powers off does);
// idle for good (killed, dead); idle and the boot ends during the wait
// (not dead); busy with a silent console (kicked, not judged).
func TestWatchFreeze(t *testing.T) {
	monitor := map[string]string{"info registers": "RIP=ffffffff8a2bc56f HLT=1\n", "info lapic": "IRR\t 236 \n"}
	now := func() time.Time { return time.Now() }

	t.Run("revived, then exits", func(t *testing.T) {
		cmd, in := standIn(t, "read x; exit 0")
		var log bytes.Buffer
		freezes, dead := watchFreeze(context.Background(), cmd.Process, fakeMonitor(t, monitor), in, &log, now, fastWatch)
		if dead || len(freezes) != 1 || !freezes[0].Revived {
			t.Fatalf("dead %v, freezes %+v; want one revived freeze\n%s", dead, freezes, log.String())
		}
		if !strings.Contains(freezes[0].State, "IRR\t 236") || !strings.Contains(log.String(), "QEMU has exited") {
			t.Errorf("state %q, log %q", freezes[0].State, log.String())
		}
	})
	t.Run("never revives", func(t *testing.T) {
		cmd, in := standIn(t, "exec sleep 600")
		var log bytes.Buffer
		freezes, dead := watchFreeze(context.Background(), cmd.Process, fakeMonitor(t, monitor), in, &log, now, fastWatch)
		if !dead || len(freezes) != 1 || freezes[0].Revived {
			t.Fatalf("dead %v, freezes %+v; want dead\n%s", dead, freezes, log.String())
		}
	})
	t.Run("boot ends while waiting", func(t *testing.T) {
		cmd, _ := standIn(t, "exec sleep 600")
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		freezes, dead := watchFreeze(ctx, cmd.Process, fakeMonitor(t, monitor), kickFunc(cancel), io.Discard, now, fastWatch)
		if dead || len(freezes) != 1 || !freezes[0].Revived {
			t.Fatalf("dead %v, freezes %+v; want one revived freeze", dead, freezes)
		}
	})
	t.Run("busy and silent", func(t *testing.T) {
		cmd, _ := standIn(t, "while :; do :; done")
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		w := fastWatch
		w.silent = 200 * time.Millisecond
		var log bytes.Buffer
		long := func() time.Time { return time.Now().Add(-time.Hour) }
		freezes, dead := watchFreeze(ctx, cmd.Process, fakeMonitor(t, monitor), kickFunc(cancel), &log, long, w)
		if dead || len(freezes) != 1 || !freezes[0].Busy {
			t.Fatalf("dead %v, freezes %+v; want one busy freeze\n%s", dead, freezes, log.String())
		}
		if !strings.Contains(log.String(), "is busy but the console has said nothing") {
			t.Errorf("log %q", log.String())
		}
	})
}

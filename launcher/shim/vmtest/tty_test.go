package vmtest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/greatjail/cvm/internal/ctrtest"
)

// testPty allocates a pseudo-terminal for a command the test runs: the
// master for the test, the slave for the command.
func testPty(t *testing.T) (master, slave *os.File) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("needs pseudo-terminals (/dev/ptmx): %v", err)
	}
	t.Cleanup(func() { master.Close() })
	rc, err := master.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var ierr error
	rc.Control(func(fd uintptr) {
		if ierr = unix.IoctlSetPointerInt(int(fd), unix.TIOCSPTLCK, 0); ierr == nil {
			n, ierr = unix.IoctlGetInt(int(fd), unix.TIOCGPTN)
		}
	})
	if ierr != nil {
		t.Fatalf("unlock pseudo-terminal: %v", ierr)
	}
	slave, err = os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open the pseudo-terminal's slave: %v", err)
	}
	return master, slave
}

func setSize(t *testing.T, f *os.File, rows, cols uint16) {
	t.Helper()
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var ierr error
	rc.Control(func(fd uintptr) {
		ierr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols})
	})
	if ierr != nil {
		t.Fatalf("set window size: %v", ierr)
	}
}

// screen collects what a terminal master shows.
type screen struct {
	mu   sync.Mutex
	buf  strings.Builder // guarded by mu
	done chan struct{}   // closed when the slave side is gone
}

func readScreen(master *os.File) *screen {
	s := &screen{done: make(chan struct{})}
	go func() {
		defer close(s.done)
		b := make([]byte, 4096)
		for {
			n, err := master.Read(b)
			s.mu.Lock()
			s.buf.Write(b[:n])
			s.mu.Unlock()
			if err != nil {
				return // EIO: every slave descriptor is closed
			}
		}
	}()
	return s
}

func (s *screen) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// waitFor polls until the screen shows want, or the deadline passes.
func (s *screen) waitFor(want string, within time.Duration) bool {
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if strings.Contains(s.String(), want) {
			return true
		}
	}
	return false
}

// ttyCtr is a ctr (or crictl) command running on a pseudo-terminal of
// the test.
type ttyCtr struct {
	t      *testing.T
	d      *ctrtest.Daemon
	master *os.File
	scr    *screen
	cancel context.CancelFunc
	exited chan error
}

// startTTY runs bin with args on a new pseudo-terminal of rows x cols.
func startTTY(t *testing.T, d *ctrtest.Daemon, rows, cols uint16, bin string, args ...string) *ttyCtr {
	t.Helper()
	master, slave := testPty(t)
	setSize(t, master, rows, cols)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	// ctr is the terminal's session leader and foreground process group:
	// it gets SIGWINCH when the test resizes the terminal.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	slave.Close()
	c := &ttyCtr{t: t, d: d, master: master, scr: readScreen(master), cancel: cancel, exited: make(chan error, 1)}
	go func() { c.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cancel()
		<-c.exited
	})
	return c
}

func (c *ttyCtr) fail(format string, args ...any) {
	c.t.Helper()
	c.cancel()
	<-c.exited
	c.exited <- nil // for the cleanup
	c.t.Fatalf(format+"\nterminal:\n%q\ncontainerd log:\n%s", append(args, c.scr.String(), c.d.LogTail())...)
}

// typeUntil types line (and Enter) until the screen shows want: ctr sends
// its terminal's size right after the start, so the first report may
// predate it.
func (c *ttyCtr) typeUntil(line, want string) {
	c.t.Helper()
	for i := 0; i < 60; i++ {
		if _, err := c.master.WriteString(line + "\r"); err != nil {
			c.fail("type: %v", err)
		}
		if c.scr.waitFor(want, time.Second) {
			return
		}
	}
	c.fail("the terminal never showed %q", want)
}

// end types ^D and waits for ctr to exit 0 and the process to have read
// end of input.
func (c *ttyCtr) end() {
	c.t.Helper()
	if _, err := c.master.WriteString("\x04"); err != nil {
		c.fail("type ^D: %v", err)
	}
	select {
	case err := <-c.exited:
		c.exited <- err // for the cleanup
		if err != nil {
			c.t.Errorf("ctr: %v; terminal:\n%q", err, c.scr.String())
		}
	case <-time.After(2 * time.Minute):
		c.fail("ctr did not exit after ^D")
	}
	select {
	case <-c.scr.done:
	case <-time.After(30 * time.Second):
		c.t.Error("the terminal stayed open after ctr exited")
	}
	c.t.Logf("terminal:\n%q", c.scr.String())
	if !strings.Contains(c.scr.String(), "eof") {
		c.t.Errorf("the process did not read end of input from ^D")
	}
}

// TestCtrRunTerminalInVM: `ctr run -t`, `ctr task exec -t` and, in a CRI
// pod, `crictl exec -it` (the path of `kubectl exec -it`), each on a
// terminal the test allocates: the container's processes have terminals
// in the microVM with the window size of the client's terminal, follow a
// resize of it, echo and read what is typed, and read end of input from
// ^D.
func TestCtrRunTerminalInVM(t *testing.T) {
	k, tc, bin, prog := shippedShim(t)
	crictl := ctrtest.FindCrictl(t)
	const (
		image = "localhost/cvm-test/prog:1"
		pause = "localhost/cvm-test/pause:1"
	)
	d := ctrtest.Start(t, tc, ctrtest.Config{
		PathDirs:     []string{bin},
		Runtimes:     []ctrtest.Runtime{{Handler: "cvm", Type: "io.containerd.cvm.v2"}},
		SandboxImage: pause,
		Env:          []string{"CVM_KERNEL=" + k.Path},
	})
	img := filepath.Join(d.Dir, "prog.tar")
	ctrtest.WriteOCI(t, img, ctrtest.Image{Name: image, Files: map[string]string{"bin/prog": prog}, Env: []string{"PATH=/bin"}})
	d.Import(t, "default", img)
	ctr := filepath.Join(d.Bin, "ctr")

	run := startTTY(t, d, 33, 111, ctr, d.CtrArgs("run", "-t", "--rm", "--runtime", "io.containerd.cvm.v2", image, "vm-tty", "/bin/prog", "tty")...)
	// containerd's spec gives the container its own devpts: the init's
	// terminal is its /dev/pts/0, the exec's /dev/pts/1. (The size on
	// that first line may still be 0 0: ctr sends it with ResizePty
	// after the start; the "line" replies check it.)
	if !run.scr.waitFor(" /dev/pts/0\r", 4*time.Minute) {
		run.fail("the container's process never reported its terminal /dev/pts/0")
	}
	run.typeUntil("a", "line a 33 111")
	setSize(t, run.master, 40, 120)
	run.typeUntil("b", "line b 40 120")

	// While the init process waits for input: an exec with its own terminal.
	ex := startTTY(t, d, 20, 70, ctr, d.CtrArgs("task", "exec", "-t", "--exec-id", "e1", "vm-tty", "/bin/prog", "tty")...)
	if !ex.scr.waitFor(" /dev/pts/1\r", 2*time.Minute) {
		ex.fail("the exec process never reported its terminal /dev/pts/1")
	}
	ex.typeUntil("x", "line x 20 70")
	ex.end()

	run.typeUntil("c", "line c 40 120") // the init's terminal is unaffected
	run.end()

	t.Run("crictl exec -it", func(t *testing.T) {
		pauseTar := filepath.Join(d.Dir, "pause.tar")
		ctrtest.WriteOCI(t, pauseTar, ctrtest.Image{Name: pause, Files: map[string]string{"bin/prog": prog},
			Entrypoint: []string{"/bin/prog", "sleep", "1000000"}})
		d.Import(t, "k8s.io", img)
		d.Import(t, "k8s.io", pauseTar)
		cr := func(args ...string) string {
			t.Helper()
			out, errOut, code := d.Crictl(t, crictl, 4*time.Minute, args...)
			if code != 0 {
				t.Fatalf("crictl %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
			}
			return strings.TrimSpace(out)
		}
		podCfg, ctrCfg := filepath.Join(d.Dir, "ttypod.json"), filepath.Join(d.Dir, "ttyctr.json")
		for path, body := range map[string]string{
			podCfg: `{"metadata":{"name":"tty","namespace":"default","uid":"tty1","attempt":1},
"log_directory":"` + filepath.Join(d.Dir, "ttylogs") + `","linux":{"security_context":{"namespace_options":{"network":2}}}}`,
			ctrCfg: `{"metadata":{"name":"sleeper"},"image":{"image":"` + image + `"},"command":["/bin/prog","sleep","300"],"log_path":"sleeper.log"}`,
		} {
			if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		pod := cr("runp", "--runtime", "cvm", podCfg)
		defer func() {
			d.Crictl(t, crictl, time.Minute, "stopp", pod)
			d.Crictl(t, crictl, time.Minute, "rmp", pod)
		}()
		cid := cr("create", pod, ctrCfg, podCfg)
		cr("start", cid)
		ep := "unix://" + d.Address
		ex := startTTY(t, d, 25, 90, crictl, "--config", filepath.Join(d.Dir, "crictl.yaml"), "--runtime-endpoint", ep,
			"--image-endpoint", ep, "exec", "-it", cid, "/bin/prog", "tty")
		if !ex.scr.waitFor(" /dev/pts/0\r", 2*time.Minute) {
			ex.fail("the exec process never reported its terminal /dev/pts/0")
		}
		ex.typeUntil("k", "line k 25 90")
		setSize(t, ex.master, 50, 160)
		ex.typeUntil("l", "line l 50 160")
		ex.end()
		cr("stop", "-t", "2", cid)
		cr("rm", cid)
		cr("stopp", pod)
		cr("rmp", pod)
	})
	deadline := time.Now().Add(20 * time.Second)
	for len(d.ProcessesUnder()) != 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if left := d.ProcessesUnder(); len(left) != 0 {
		t.Errorf("processes left (shim, QEMU): %v", left)
	}
}

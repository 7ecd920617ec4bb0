package vmm

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	seccomp "github.com/elastic/go-seccomp-bpf"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/greatjail/cvm/vmm/kvm"
)

// lockDownChild is set in the environment of the subprocess that
// TestLockDown starts: seccomp cannot be undone, so the filter is
// installed in a child, never in the test process itself.
const lockDownChild = "CVM_VMM_TEST_LOCKDOWN_CHILD"

// TestLockDown installs the allowlist in a child process and checks that
// calls outside it fail with EPERM while the ones a running VMM makes
// still work.
func TestLockDown(t *testing.T) {
	if os.Getenv(lockDownChild) == "1" {
		runLockedDown()
		return
	}
	if !seccomp.Supported() {
		t.Skip("seccomp filters are not supported by this kernel")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockDown$")
	cmd.Env = append(os.Environ(), lockDownChild+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	got := map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(strings.TrimPrefix(l, "lockdown: "), "="); ok && strings.HasPrefix(l, "lockdown: ") {
			got[k] = v
		}
	}
	want := map[string]string{
		"install":              "ok",
		"getpid":               "ok",
		"getrandom":            "ok",
		"pipe write/read":      "ok",
		"open /proc/self/maps": "operation not permitted",
		"execve /bin/true":     "operation not permitted",
		"ioctl TCGETS":         "operation not permitted",
		"ioctl KVM_RUN":        "bad file descriptor", // admitted, then the kernel rejects fd -1
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("results in the locked-down child (-want +got):\n%s\noutput:\n%s", d, out)
	}
}

// runLockedDown is the child: it locks itself down, reports each probe
// as "lockdown: NAME=RESULT" and exits.
func runLockedDown() {
	report := func(name string, err error) {
		r := "ok"
		if err != nil {
			r = err.Error()
		}
		fmt.Printf("lockdown: %s=%s\n", name, r)
	}
	report("install", LockDown())
	report("getpid", func() error {
		if os.Getpid() <= 0 {
			return errors.New("bad pid")
		}
		return nil
	}())
	report("getrandom", func() error { _, err := unix.Getrandom(make([]byte, 8), 0); return err }())
	report("pipe write/read", func() error {
		// pipe2 is allowed so that the runtime's poller can start.
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			return err
		}
		if _, err := unix.Write(p[1], []byte("x")); err != nil {
			return err
		}
		_, err := unix.Read(p[0], make([]byte, 1))
		return err
	}())
	report("open /proc/self/maps", func() error {
		_, err := unix.Open("/proc/self/maps", unix.O_RDONLY, 0)
		return unwrapErrno(err)
	}())
	report("execve /bin/true", unwrapErrno(unix.Exec("/bin/true", []string{"true"}, nil)))
	report("ioctl TCGETS", func() error { _, err := unix.IoctlGetTermios(1, unix.TCGETS); return unwrapErrno(err) }())
	report("ioctl KVM_RUN", func() error {
		_, _, e := unix.Syscall(unix.SYS_IOCTL, ^uintptr(0), uintptr(kvm.RunningIoctls()[0]), 0)
		if e != 0 {
			return e
		}
		return nil
	}())
	os.Exit(0)
}

func unwrapErrno(err error) error {
	var e unix.Errno
	if errors.As(err, &e) {
		return e
	}
	return err
}

// Package hostproc is what every /init of the QEMU test host shares
// (internal/testhost/hostinit, launcher/builtintest/launchinit,
// launcher/shim/builtintest/ctrinit): result lines for the outer test on
// the console, and the run-then-power-off frame around the init's work.
package hostproc

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/greatjail/cvm/internal/testhost/wire"
)

var mu sync.Mutex // serialises console lines

// Say prints one wire.HostPrefix line on the console for the outer test.
func Say(format string, a ...any) {
	mu.Lock()
	defer mu.Unlock()
	fmt.Fprintf(os.Stdout, wire.HostPrefix+format+"\n", a...)
}

// Main says "up", runs run, says "fail ERR" if it failed, then "done",
// and powers the test host off; it does not return.
func Main(run func() error) {
	Say("up")
	if err := run(); err != nil {
		Say("fail %v", err)
	}
	Say("done")
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		Say("fail poweroff: %v", err)
	}
	select {}
}

// LineWriter writes each complete line it is given to the console behind
// a prefix, whole (never interleaved with another writer's or Say's
// lines); a partial line waits for its end or Flush.
type LineWriter struct {
	prefix string
	part   string // guarded by mu
}

// Prefixed returns a LineWriter with prefix.
func Prefixed(prefix string) *LineWriter { return &LineWriter{prefix: prefix} }

func (w *LineWriter) Write(b []byte) (int, error) {
	mu.Lock()
	defer mu.Unlock()
	s := w.part + string(b)
	i := strings.LastIndexByte(s, '\n')
	w.part = s[i+1:]
	for _, l := range strings.SplitAfter(s[:i+1], "\n") {
		if l != "" {
			io.WriteString(os.Stdout, w.prefix+l)
		}
	}
	return len(b), nil
}

// Flush writes a pending partial line, ended with a newline.
func (w *LineWriter) Flush() {
	mu.Lock()
	defer mu.Unlock()
	if w.part != "" {
		io.WriteString(os.Stdout, w.prefix+w.part+"\n")
		w.part = ""
	}
}

// Mount mounts what every /init needs: proc, sysfs, devtmpfs and the
// cgroup2 hierarchy (containerd's runc needs it; the others do not mind).
// Already mounted is fine.
func Mount() error {
	for _, m := range []struct{ src, dir, fs string }{
		{"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"}, {"devtmpfs", "/dev", "devtmpfs"},
		{"cgroup2", "/sys/fs/cgroup", "cgroup2"},
	} {
		if err := os.MkdirAll(m.dir, 0o755); err != nil {
			return fmt.Errorf("mount %s: %w", m.dir, err)
		}
		if err := unix.Mount(m.src, m.dir, m.fs, 0, ""); err != nil && err != unix.EBUSY {
			return fmt.Errorf("mount %s: %w", m.dir, err)
		}
	}
	return nil
}

// LoadKVM loads the kernel modules wire.ModuleList names, in order (each
// with params[name] as its parameters), checks that /dev/kvm exists, and
// says "kvm ready".
func LoadKVM(params map[string]string) error {
	list, err := os.ReadFile(wire.ModuleList)
	if err != nil {
		return err
	}
	names := strings.Fields(string(list))
	for _, name := range names {
		if err := load("/lib/modules/"+name+".ko", params[name]); err != nil {
			return fmt.Errorf("load module %s: %w", name, err)
		}
	}
	if _, err := os.Stat("/dev/kvm"); err != nil {
		return fmt.Errorf("no /dev/kvm after loading %s: %w", strings.Join(names, ", "), err)
	}
	Say("kvm ready")
	return nil
}

func load(path, params string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), params, 0); err != nil && err != unix.EEXIST {
		return err
	}
	return nil
}

package testhost

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/greatjail/cvm/internal/testhost/wire"
)

// BenchCmdline is the guest command line of a timing run: the test
// guest's /init sees cvmtest.bench, reports "init" and powers off at once.
const BenchCmdline = "console=ttyS0 quiet printk.devkmsg=on reboot=k panic=-1 rdinit=/init " + wire.BenchFlag

// Timing is one timed boot: from starting the VMM process to the guest's
// first line from /init and to the process's exit, and the VMM's resident
// memory at the moment /init reported, from /proc/PID/status: anonymous
// and file-backed pages (the VMM itself) apart from shared memory (guest
// RAM, which both VMMs map shared: cvm always, QEMU with a memfd backend).
type Timing struct {
	VMM                      string
	InitSeconds, ExitSeconds float64
	RSSAnonKiB, RSSFileKiB   int64
	RSSShmemKiB              int64
	ExitCode                 int
}

// OwnKiB is the VMM's resident memory excluding guest RAM.
func (t *Timing) OwnKiB() int64 { return t.RSSAnonKiB + t.RSSFileKiB }

// TimeBoot runs argv (a VMM booting the test guest with BenchCmdline) and
// times it. console, if set, receives the guest console.
func TimeBoot(ctx context.Context, name string, argv []string, console io.Writer) (*Timing, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("testhost: %w", err)
	}
	cmd.Stderr = console
	t := &Timing{VMM: name}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("testhost: start %s: %w", argv[0], err)
	}
	s := bufio.NewScanner(out)
	for s.Scan() {
		if console != nil {
			fmt.Fprintln(console, s.Text())
		}
		if t.InitSeconds == 0 && strings.Contains(s.Text(), wire.GuestPrefix+"init") {
			t.InitSeconds = time.Since(start).Seconds()
			t.RSSAnonKiB = kib(procStatus(cmd.Process.Pid, "RssAnon"))
			t.RSSFileKiB = kib(procStatus(cmd.Process.Pid, "RssFile"))
			t.RSSShmemKiB = kib(procStatus(cmd.Process.Pid, "RssShmem"))
		}
	}
	err = cmd.Wait()
	t.ExitSeconds = time.Since(start).Seconds()
	t.ExitCode = cmd.ProcessState.ExitCode()
	if t.InitSeconds == 0 {
		return t, fmt.Errorf("testhost: %s: the guest never reported /init (exit: %v)", name, err)
	}
	if err != nil {
		return t, fmt.Errorf("testhost: %s: %w", name, err)
	}
	return t, nil
}

func kib(v string) int64 {
	n, _ := strconv.ParseInt(strings.TrimSuffix(v, " kB"), 10, 64)
	return n
}

// CVMBootArgs is the `cvm vm run` command line of a timing run.
func CVMBootArgs(cvm string, g GuestConfig) []string {
	return []string{cvm, "vm", "run", "--kernel", g.Kernel, "--initrd", g.Initrd, "--cmdline", BenchCmdline,
		"--memory", g.Memory, "--vcpus", strconv.Itoa(g.VCPUs)}
}

// QEMUBootArgs is the matching QEMU command line: -M microvm with KVM,
// the same kernel, initramfs, command line, memory (shared, in a memfd, so
// that it is accounted like cvm's) and vCPUs, and no other devices.
func QEMUBootArgs(qemu string, g GuestConfig) []string {
	return []string{qemu, "-M", "microvm,memory-backend=ram", "-accel", "kvm", "-cpu", "host",
		"-smp", strconv.Itoa(g.VCPUs), "-m", g.Memory,
		"-object", "memory-backend-memfd,id=ram,share=on,size=" + g.Memory,
		"-kernel", g.Kernel, "-initrd", g.Initrd, "-append", BenchCmdline,
		"-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot"}
}

var lddLine = regexp.MustCompile(`(?:=> )?(/\S+) \(0x`)

// DynamicFiles returns the dynamically linked executable bin, the shared
// libraries it loads and their loader (from ldd), by absolute path, to copy
// into the test host (whose loader finds them in the multiarch directories
// without an ld.so.cache). Symbolic links are followed: each path holds
// its target's contents.
func DynamicFiles(bin string) (map[string][]byte, error) {
	out, err := exec.Command("ldd", bin).Output()
	if err != nil {
		return nil, fmt.Errorf("testhost: ldd %s: %w", bin, err)
	}
	paths := []string{bin}
	for _, m := range lddLine.FindAllStringSubmatch(string(out), -1) {
		paths = append(paths, m[1])
	}
	files := map[string][]byte{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("testhost: %w", err)
		}
		files[p] = b
	}
	return files, nil
}

// QEMUFiles returns qemu-system-x86_64, the shared libraries it loads
// (DynamicFiles) and the microvm firmware, by absolute path, to copy into
// the test host.
func QEMUFiles(qemu string) (map[string][]byte, error) {
	files, err := DynamicFiles(qemu)
	if err != nil {
		return nil, err
	}
	fw, err := os.ReadFile("/usr/share/qemu/bios-microvm.bin")
	if err != nil {
		return nil, fmt.Errorf("%w: QEMU's microvm firmware: %w", ErrMissing, err)
	}
	files["/usr/share/qemu/bios-microvm.bin"] = fw
	files[filepath.Join("/usr/bin", filepath.Base(qemu))] = files[qemu]
	return files, nil
}

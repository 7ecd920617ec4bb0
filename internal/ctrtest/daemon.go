package ctrtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Toolchain is one built containerd: its bin directory holds containerd,
// ctr and containerd-shim-runc-v2.
type Toolchain struct {
	Name string // "24", "23"
	Bin  string
}

// repoRoot is the repository holding this file.
func repoRoot() string {
	_, self, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(self), "..", "..")
}

// FindToolchain returns the toolchain built by scripts/fetch-containerd.sh
// under .cache/containerd/<name>, or skips the test naming the script.
func FindToolchain(t testing.TB, name string) Toolchain {
	t.Helper()
	bin := filepath.Join(repoRoot(), ".cache", "containerd", name, "bin")
	for _, b := range []string{"containerd", "ctr", "containerd-shim-runc-v2"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			t.Skipf("containerd toolchain %s absent (%s): run `make containerd-tools` (scripts/fetch-containerd.sh %s)", name, filepath.Join(bin, b), name)
		}
	}
	return Toolchain{Name: name, Bin: bin}
}

// FindCrictl returns the crictl built by scripts/fetch-containerd.sh, or
// skips the test naming the script.
func FindCrictl(t testing.TB) string {
	t.Helper()
	p := filepath.Join(repoRoot(), ".cache", "containerd", "crictl", "bin", "crictl")
	if _, err := os.Stat(p); err != nil {
		t.Skipf("crictl absent (%s): run `make containerd-tools` (scripts/fetch-containerd.sh crictl)", p)
	}
	return p
}

// Runtime is one runtime in the daemon's CRI runtime table (ctr names the
// runtime type directly with --runtime).
type Runtime struct {
	Handler string // CRI handler, e.g. "cvm"
	Type    string // runtime_type, e.g. io.containerd.cvm.v2
	// Options is the body of the runtime's options table (TOML lines),
	// which CRI passes to the shim as runtime options; "" for none.
	Options string
}

// Config configures a daemon.
type Config struct {
	// PathDirs are put first on the daemon's PATH: where our shim
	// binaries are.
	PathDirs []string
	Runtimes []Runtime
	// Snapshotter is CRI's snapshotter ("overlayfs" if empty). When set,
	// the transfer service (ctr image import) unpacks with it too; ctr's
	// own default is $CONTAINERD_SNAPSHOTTER.
	Snapshotter string
	// SandboxImage is the CRI pause image (pinned_images.sandbox).
	SandboxImage string
	// Env is added to the daemon's environment (and so its shims').
	Env []string
}

// Daemon is a running containerd with every path under Dir.
type Daemon struct {
	Toolchain
	Dir     string // short (Unix socket paths are limited to 108 bytes)
	Address string // the gRPC socket
	Log     string // the daemon's log file
	cmd     *exec.Cmd
}

// Start writes a config.toml (version 3) and starts containerd; cleanup
// stops it (and any shim left running under Dir) by PID.
func Start(t testing.TB, tc Toolchain, cfg Config) *Daemon {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("containerd needs root: run the test as root")
	}
	dir, err := os.MkdirTemp("", "ctr")
	if err != nil {
		t.Fatal(err)
	}
	d := &Daemon{Toolchain: tc, Dir: dir, Address: filepath.Join(dir, "c.sock"), Log: filepath.Join(dir, "containerd.log")}
	t.Cleanup(func() { d.stop(t) })

	snap := cfg.Snapshotter
	if snap == "" {
		snap = "overlayfs"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "version = 3\nroot = %q\nstate = %q\n", filepath.Join(dir, "root"), filepath.Join(dir, "state"))
	fmt.Fprintf(&b, "[grpc]\n  address = %q\n[ttrpc]\n  address = %q\n", d.Address, d.Address+".ttrpc")
	fmt.Fprintf(&b, "[debug]\n  level = \"debug\"\n")
	fmt.Fprintf(&b, "[plugins.'io.containerd.internal.v1.opt']\n  path = %q\n", filepath.Join(dir, "opt"))
	fmt.Fprintf(&b, "[plugins.'io.containerd.nri.v1.nri']\n  disable = true\n")
	fmt.Fprintf(&b, "[plugins.'io.containerd.shim.v1.manager']\n  socket_dir = %q\n", filepath.Join(dir, "s"))
	fmt.Fprintf(&b, "[plugins.'io.containerd.cri.v1.images']\n  snapshotter = %q\n", snap)
	if cfg.Snapshotter != "" {
		fmt.Fprintf(&b, "[[plugins.'io.containerd.transfer.v1.local'.unpack_config]]\n  platform = %q\n  snapshotter = %q\n",
			runtime.GOOS+"/"+runtime.GOARCH, cfg.Snapshotter)
	}
	if cfg.SandboxImage != "" {
		fmt.Fprintf(&b, "[plugins.'io.containerd.cri.v1.images'.pinned_images]\n  sandbox = %q\n", cfg.SandboxImage)
	}
	fmt.Fprintf(&b, "[plugins.'io.containerd.cri.v1.runtime'.cni]\n  bin_dirs = [%q]\n  conf_dir = %q\n",
		filepath.Join(dir, "cni", "bin"), filepath.Join(dir, "cni", "net.d"))
	fmt.Fprintf(&b, "[plugins.'io.containerd.cri.v1.runtime'.containerd]\n  default_runtime_name = \"runc\"\n")
	fmt.Fprintf(&b, "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n")
	fmt.Fprintf(&b, "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]\n  Root = %q\n", filepath.Join(dir, "runc"))
	for _, r := range cfg.Runtimes {
		fmt.Fprintf(&b, "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.%s]\n  runtime_type = %q\n  privileged_without_host_devices = true\n  pod_annotations = [\"io.cvm.*\"]\n", r.Handler, r.Type)
		if r.Options != "" {
			fmt.Fprintf(&b, "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.%s.options]\n%s\n", r.Handler, r.Options)
		}
	}
	fmt.Fprintf(&b, "[plugins.'io.containerd.snapshotter.v1.overlayfs']\n  root_path = %q\n", filepath.Join(dir, "root", "overlayfs"))
	conf := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(conf, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}

	logf, err := os.Create(d.Log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	d.cmd = exec.Command(filepath.Join(tc.Bin, "containerd"), "--config", conf)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	d.cmd.Dir = dir // containerd also looks for shims in its working directory
	d.cmd.Env = append(append(os.Environ(), cfg.Env...), "CVMTEST_SANDBOX_DIR="+filepath.Join(dir, "sb"), "PATH="+strings.Join(append(append([]string{}, cfg.PathDirs...), tc.Bin, os.Getenv("PATH")), ":"))
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start containerd %s: %v", tc.Name, err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, _, code := d.Ctr(t, 10*time.Second, "version"); code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd %s did not answer on %s within 60 s; log:\n%s", tc.Name, d.Address, d.LogTail())
		}
		time.Sleep(200 * time.Millisecond)
	}
	return d
}

// LogTail returns the last lines of the daemon's log.
func (d *Daemon) LogTail() string {
	b, _ := os.ReadFile(d.Log)
	lines := strings.Split(string(b), "\n")
	if len(lines) > 60 {
		lines = lines[len(lines)-60:]
	}
	return strings.Join(lines, "\n")
}

// Ctr runs ctr against the daemon (namespace default) and returns its
// stdout, stderr and exit code; a run past timeout is killed (SIGKILL:
// ctr forwards SIGTERM to the task).
// `ctr run` and `ctr task exec` get a FIFO directory under Dir (ctr's
// default is /run/containerd/fifo).
func (d *Daemon) Ctr(t testing.TB, timeout time.Duration, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return run(t, timeout, filepath.Join(d.Bin, "ctr"), d.CtrArgs(args...)...)
}

// CtrArgs is the full ctr command line Ctr runs for args.
func (d *Daemon) CtrArgs(args ...string) []string {
	fifo := []string{"--fifo-dir", filepath.Join(d.Dir, "fifo")}
	switch {
	case len(args) > 0 && args[0] == "run":
		args = append(append([]string{"run"}, fifo...), args[1:]...)
	case len(args) > 1 && args[0] == "task" && args[1] == "exec":
		args = append(append([]string{"task", "exec"}, fifo...), args[2:]...)
	}
	return append([]string{"--address", d.Address}, args...)
}

// Crictl runs crictl against the daemon.
func (d *Daemon) Crictl(t testing.TB, crictl string, timeout time.Duration, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	conf := filepath.Join(d.Dir, "crictl.yaml")
	if _, err := os.Stat(conf); err != nil {
		os.WriteFile(conf, []byte("timeout: 30\n"), 0o600)
	}
	ep := "unix://" + d.Address
	return run(t, timeout, crictl, append([]string{"--config", conf, "--runtime-endpoint", ep, "--image-endpoint", ep}, args...)...)
}

func run(t testing.TB, timeout time.Duration, bin string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("%s %s: %v", filepath.Base(bin), strings.Join(args, " "), err)
	}
	if ctx.Err() != nil {
		t.Errorf("%s %s: timed out after %v", filepath.Base(bin), strings.Join(args, " "), timeout)
	}
	return out.String(), dropDeprecation(errb.String()), code
}

// dropDeprecation removes containerd's cgroup v1 deprecation warnings
// (this host runs cgroups v1 hybrid).
func dropDeprecation(s string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.Contains(l, "DEPRECATION") && l != "" {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// ProcessesUnder returns the PIDs of processes whose working directory is
// under the daemon's directory: the shims it started (their cwd is a
// bundle), and nothing else.
func (d *Daemon) ProcessesUnder() []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		if err == nil && strings.HasPrefix(cwd, d.Dir+"/") {
			pids = append(pids, pid)
		}
	}
	return pids
}

// stop stops the daemon by PID, then whatever shim it left under Dir,
// unmounts what remains mounted under Dir and removes it.
func (d *Daemon) stop(t testing.TB) {
	if d.cmd != nil && d.cmd.Process != nil {
		d.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { d.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			d.cmd.Process.Kill()
			<-done
		}
	}
	for _, pid := range d.ProcessesUnder() {
		t.Logf("ctrtest: killing leftover process %d under %s", pid, d.Dir)
		syscall.Kill(pid, syscall.SIGKILL)
	}
	if mi, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		var ms []string
		for _, l := range strings.Split(string(mi), "\n") {
			f := strings.Fields(l)
			if len(f) > 4 && strings.HasPrefix(f[4], d.Dir+"/") {
				ms = append(ms, f[4])
			}
		}
		if len(ms) > 0 {
			t.Errorf("ctrtest: mounts left under %s after the daemon stopped: %q", d.Dir, ms)
		}
		for i := len(ms) - 1; i >= 0; i-- {
			if err := syscall.Unmount(ms[i], syscall.MNT_DETACH); err != nil {
				t.Errorf("ctrtest: unmount %s: %v", ms[i], err)
			}
		}
	}
	if t.Failed() {
		t.Logf("containerd %s log (tail):\n%s", d.Name, d.LogTail())
	}
	if mi, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mi), " "+d.Dir+"/") {
		t.Errorf("ctrtest: mounts remain under %s; not removing it", d.Dir)
		return
	}
	os.RemoveAll(d.Dir)
}

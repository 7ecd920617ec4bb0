package shim_test

// Integration tests against real containerd (2.4 and 2.3, built by
// scripts/fetch-containerd.sh) with the shim's task service and the
// in-process host sandbox of launcher/shim/shimtest: the containerd
// protocol layer, without a microVM.

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/greatjail/cvm/internal/ctrtest"
	"github.com/greatjail/cvm/launcher/shim"
	"github.com/greatjail/cvm/launcher/shim/rootimage"
)

const (
	runtimeType = "io.containerd.cvmtest.v2"
	image       = "localhost/cvm-test/prog:1"
	pauseImage  = "localhost/cvm-test/pause:1"
)

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  string
)

// fixture builds the fixture shim and the test program once per test
// binary; it returns the directory holding containerd-shim-cvmtest-v2 and
// prog.
func fixture(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "shimbin")
		if err != nil {
			buildErr = err.Error()
			return
		}
		buildDir = dir
		ctrtest.BuildProg(t, dir)
		args := []string{"build", "-o", filepath.Join(dir, "containerd-shim-cvmtest-v2")}
		env := append(os.Environ(), "CGO_ENABLED=0")
		if raceEnabled {
			args = append(args, "-race")
			env = append(os.Environ(), "CGO_ENABLED=1")
		}
		cmd := exec.Command("go", append(args, "./shimtest/containerd-shim-cvmtest-v2")...)
		cmd.Env = env
		if b, err := cmd.CombinedOutput(); err != nil {
			buildErr = "go build containerd-shim-cvmtest-v2: " + err.Error() + "\n" + string(b)
		}
	})
	if buildErr != "" {
		t.Fatal(buildErr)
	}
	return buildDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// daemon starts containerd tc with the fixture runtime (CRI handler
// "cvm") and the test images imported.
func daemon(t *testing.T, tc ctrtest.Toolchain) *ctrtest.Daemon {
	bin := fixture(t)
	// Runtime options as a node would set them: a ConfigPath file, or the
	// keys in the options table itself (CRI passes it as ConfigBody).
	opts := filepath.Join(t.TempDir(), "cvm-shim.toml")
	write(t, opts, "vcpus = 3\nmemory = \"1G\"\n")
	d := ctrtest.Start(t, tc, ctrtest.Config{
		PathDirs: []string{bin},
		Runtimes: []ctrtest.Runtime{{Handler: "cvm", Type: runtimeType},
			{Handler: "cvmpath", Type: runtimeType, Options: "ConfigPath = " + strconv.Quote(opts)},
			{Handler: "cvmbody", Type: runtimeType, Options: "vcpus = 2\nrootfs = \"erofs\""}},
		SandboxImage: pauseImage,
	})
	prog := filepath.Join(bin, "prog")
	img := filepath.Join(d.Dir, "prog.tar")
	ctrtest.WriteOCI(t, img, ctrtest.Image{Name: image, Files: map[string]string{"bin/prog": prog}, Env: []string{"PATH=/bin"}})
	pause := filepath.Join(d.Dir, "pause.tar")
	ctrtest.WriteOCI(t, pause, ctrtest.Image{Name: pauseImage, Files: map[string]string{"bin/prog": prog},
		Entrypoint: []string{"/bin/prog", "sleep", "1000000"}})
	d.Import(t, "default", img)
	d.Import(t, "k8s.io", img)
	d.Import(t, "k8s.io", pause)
	return d
}

func toolchains(t *testing.T) []string {
	return []string{"24", "23"}
}

// TestContainerd runs every scenario against each containerd toolchain.
func TestContainerd(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test against real containerd; not in -short")
	}
	for _, name := range toolchains(t) {
		t.Run("containerd"+name, func(t *testing.T) {
			tc := ctrtest.FindToolchain(t, name)
			d := daemon(t, tc)
			t.Run("run", func(t *testing.T) { testRun(t, d) })
			t.Run("rootfs dir", func(t *testing.T) { testRootfsDir(t, d) })
			t.Run("events", func(t *testing.T) { testEvents(t, d) })
			t.Run("detached exec kill delete", func(t *testing.T) { testDetached(t, d) })
			t.Run("kill the shim", func(t *testing.T) { testKillShim(t, d) })
			t.Run("crictl pod", func(t *testing.T) { testCrictl(t, d) })
			t.Run("runtime options", func(t *testing.T) { testRuntimeOptions(t, d) })
			if pids := d.ProcessesUnder(); len(pids) != 0 {
				t.Errorf("shims still running after every task was deleted: %v", pids)
			}
		})
	}
}

// testRun: ctr run --rm prints the program's output and returns its exit
// code.
func testRun(t *testing.T, d *ctrtest.Daemon) {
	tests := []struct {
		name     string
		args     []string
		out, err string
		code     int
	}{
		{"echo", []string{"echo", "hello", "from", "cvm"}, "hello from cvm\n", "", 0},
		{"exit code", []string{"exit", "7"}, "", "", 7},
		{"stderr", []string{"stderr", "to", "stderr"}, "", "to stderr", 0},
		{"env", []string{"env"}, "PATH=/bin\n", "", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id := "r-" + strings.ReplaceAll(tc.name, " ", "-")
			args := append([]string{"run", "--rm", "--runtime", runtimeType, image, id, "/bin/prog"}, tc.args...)
			out, errOut, code := d.Ctr(t, 60*time.Second, args...)
			if diff := cmp.Diff([]any{tc.out, tc.err, tc.code}, []any{out, errOut, code}); diff != "" {
				t.Errorf("ctr run %s: stdout, stderr, exit code (-want +got)\n%s", tc.args, diff)
			}
		})
	}
}

// testRootfsDir: ctr run --rootfs DIR (no snapshot mounts; the spec's
// absolute root.path).
func testRootfsDir(t *testing.T, d *ctrtest.Daemon) {
	root := filepath.Join(d.Dir, "rootdir")
	ctrtest.RootDir(t, root, ctrtest.Image{Files: map[string]string{"bin/prog": filepath.Join(fixture(t), "prog")}})
	out, errOut, code := d.Ctr(t, 60*time.Second, "run", "--rm", "--runtime", runtimeType, "--rootfs", root, "rd1", "/bin/prog", "ls", "/bin")
	if out != "prog\n" || code != 0 {
		t.Errorf("ctr run --rootfs: %q, %q, exit %d; want prog, 0", out, errOut, code)
	}
}

// testEvents: the task events of one run arrive in containerd's order.
func testEvents(t *testing.T, d *ctrtest.Daemon) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ev := exec.CommandContext(ctx, filepath.Join(d.Bin, "ctr"), "--address", d.Address, "events")
	stdout, err := ev.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := ev.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	time.Sleep(500 * time.Millisecond) // let ctr events subscribe
	if _, errOut, code := d.Ctr(t, 60*time.Second, "run", "--rm", "--runtime", runtimeType, image, "ev1", "/bin/prog", "exit", "3"); code != 3 {
		t.Fatalf("ctr run: exit %d, %s", code, errOut)
	}
	var topics []string
	timeout := time.After(20 * time.Second)
	for len(topics) < 4 || topics[len(topics)-1] != "/tasks/delete" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("ctr events ended; topics so far %q", topics)
			}
			if !strings.Contains(l, `"ev1"`) && !strings.Contains(l, "ev1") {
				continue
			}
			for _, f := range strings.Fields(l) {
				if strings.HasPrefix(f, "/tasks/") {
					topics = append(topics, f)
				}
			}
		case <-timeout:
			t.Fatalf("no /tasks/delete within 20 s; topics so far %q", topics)
		}
	}
	want := []string{"/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"}
	if diff := cmp.Diff(want, topics); diff != "" {
		t.Errorf("task events of ev1 (-want +got)\n%s", diff)
	}
}

// waitStatus polls `ctr task ls` until task id shows status ("" = the
// task is gone).
func waitStatus(t *testing.T, d *ctrtest.Daemon, id, status string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, _, _ := d.Ctr(t, 20*time.Second, "task", "ls")
		listed := false
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) >= 3 && f[0] == id {
				listed = true
				if f[2] == status {
					return
				}
			}
		}
		if !listed && status == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s not %s within 30 s; ctr task ls:\n%s", id, status, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// testDetached: run -d, exec (output and exit code), ps, kill, delete.
func testDetached(t *testing.T, d *ctrtest.Daemon) {
	if _, errOut, code := d.Ctr(t, 60*time.Second, "run", "-d", "--runtime", runtimeType, image, "dt1", "/bin/prog", "sleep", "300"); code != 0 {
		t.Fatalf("ctr run -d: exit %d: %s", code, errOut)
	}
	waitStatus(t, d, "dt1", "RUNNING")
	out, errOut, code := d.Ctr(t, 60*time.Second, "task", "exec", "--exec-id", "e1", "dt1", "/bin/prog", "echo", "from exec")
	if out != "from exec\n" || code != 0 {
		t.Errorf("ctr task exec echo: %q, %q, exit %d", out, errOut, code)
	}
	if _, _, code := d.Ctr(t, 60*time.Second, "task", "exec", "--exec-id", "e2", "dt1", "/bin/prog", "exit", "5"); code != 5 {
		t.Errorf("ctr task exec exit 5: exit %d", code)
	}
	// An exec reads the stdin ctr gives it.
	cmd := exec.Command(filepath.Join(d.Bin, "ctr"), d.CtrArgs("task", "exec", "--exec-id", "e3", "dt1", "/bin/prog", "cat")...)
	cmd.Stdin = strings.NewReader("piped through stdin\n")
	if b, err := cmd.Output(); string(b) != "piped through stdin\n" || err != nil {
		t.Errorf("ctr task exec cat: %q, %v", b, err)
	}
	out, _, code = d.Ctr(t, 20*time.Second, "task", "ps", "dt1")
	if code != 0 || len(strings.Split(strings.TrimSpace(out), "\n")) < 2 {
		t.Errorf("ctr task ps: exit %d\n%s", code, out)
	}
	if _, errOut, code := d.Ctr(t, 20*time.Second, "task", "kill", "-s", "SIGTERM", "dt1"); code != 0 {
		t.Fatalf("ctr task kill: exit %d: %s", code, errOut)
	}
	waitStatus(t, d, "dt1", "STOPPED")
	if _, errOut, code := d.Ctr(t, 20*time.Second, "task", "delete", "dt1"); code != 0 {
		t.Errorf("ctr task delete: exit %d: %s", code, errOut)
	}
	if _, errOut, code := d.Ctr(t, 20*time.Second, "container", "delete", "dt1"); code != 0 {
		t.Errorf("ctr container delete: exit %d: %s", code, errOut)
	}
}

// testKillShim: SIGKILL the shim of a running task; containerd's
// dead-shim cleanup (shim delete) lets the task and container be removed
// and nothing of the pod is left running or mounted.
func testKillShim(t *testing.T, d *ctrtest.Daemon) {
	if _, errOut, code := d.Ctr(t, 60*time.Second, "run", "-d", "--runtime", runtimeType, image, "ks1", "/bin/prog", "sleep", "300"); code != 0 {
		t.Fatalf("ctr run -d: exit %d: %s", code, errOut)
	}
	waitStatus(t, d, "ks1", "RUNNING")
	shims := shimPids(d)
	if len(shims) != 1 {
		t.Fatalf("want one shim process for ks1, found %v (processes under the daemon: %v)", shims, d.ProcessesUnder())
	}
	if err := syscall.Kill(shims[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// containerd notices the dead shim, runs `shim delete`, publishes the
	// exit and deletes the task.
	waitStatus(t, d, "ks1", "")
	if _, errOut, code := d.Ctr(t, 20*time.Second, "container", "delete", "ks1"); code != 0 {
		t.Errorf("ctr container delete after the shim died: exit %d: %s", code, errOut)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(d.ProcessesUnder()) != 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if left := d.ProcessesUnder(); len(left) != 0 {
		t.Errorf("processes left after the shim was killed: %v", left)
	}
	if mi, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mi), filepath.Join(d.Dir, "sb", "ks1")+"/") {
		t.Errorf("sandbox mounts left after the shim was killed")
	}
}

// testCrictl: a CRI pod with the cvm handler and two containers in it,
// all on one shim: create, start, logs, exec, stop, remove.
func testCrictl(t *testing.T, d *ctrtest.Daemon) {
	crictl := ctrtest.FindCrictl(t)
	logs := filepath.Join(d.Dir, "podlogs")
	pod := filepath.Join(d.Dir, "pod.json")
	write(t, pod, `{"metadata":{"name":"p1","namespace":"default","uid":"u1","attempt":1},
"log_directory":"`+logs+`","annotations":{"io.cvm.test":"yes"},
"linux":{"security_context":{"namespace_options":{"network":2}}}}`)
	cr := func(args ...string) string {
		t.Helper()
		out, errOut, code := d.Crictl(t, crictl, 90*time.Second, args...)
		if code != 0 {
			t.Fatalf("crictl %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
		}
		return strings.TrimSpace(out)
	}
	podID := cr("runp", "--runtime", "cvm", pod)
	defer func() {
		d.Crictl(t, crictl, 60*time.Second, "stopp", podID)
		d.Crictl(t, crictl, 60*time.Second, "rmp", podID)
	}()
	var cids []string
	for i, args := range [][]string{
		{"/bin/prog", "echo", "first container says hi"},
		{"/bin/prog", "sleep", "300"},
	} {
		c := filepath.Join(d.Dir, "c"+strconv.Itoa(i)+".json")
		argv, _ := jsonStrings(args)
		write(t, c, `{"metadata":{"name":"c`+strconv.Itoa(i)+`"},"image":{"image":"`+image+`"},
"command":`+argv+`,"log_path":"c`+strconv.Itoa(i)+`.log"}`)
		cids = append(cids, cr("create", podID, c, pod))
	}
	for _, c := range cids {
		cr("start", c)
	}
	if shims := shimPids(d); len(shims) != 1 {
		t.Errorf("want one shim for the pod, found %v", shims)
	}
	// The first container exits; its output is in the CRI log.
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(cr("ps", "-a", "--id", cids[0]), "Exited") && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	if got := cr("logs", cids[0]); got != "first container says hi" {
		t.Errorf("crictl logs: %q", got)
	}
	if b, err := os.ReadFile(filepath.Join(logs, "c0.log")); err != nil || !strings.Contains(string(b), "stdout F first container says hi") {
		t.Errorf("CRI log file: %q, %v", b, err)
	}
	if got := cr("exec", "-s", cids[1], "/bin/prog", "echo", "exec in second"); got != "exec in second" {
		t.Errorf("crictl exec: %q", got)
	}
	if got := cr("ps", "--id", cids[1], "-q"); got == "" {
		t.Errorf("second container not running")
	}
	// Stats come from the guest (here: the fixture's /proc).
	if got := cr("stats", "-o", "json", "--id", cids[1]); !strings.Contains(got, `"workingSetBytes"`) {
		t.Errorf("crictl stats: %s", got)
	}
	cr("stop", "-t", "2", cids[1])
	for _, c := range cids {
		cr("rm", c)
	}
	cr("stopp", podID)
	cr("rmp", podID)
	deadline = time.Now().Add(15 * time.Second)
	for len(d.ProcessesUnder()) != 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if left := d.ProcessesUnder(); len(left) != 0 {
		t.Errorf("the pod's shim did not exit after rmp: %v", left)
	}
}

// shimPids lists the fixture shim servers the daemon started (not the
// short-lived `shim start` and `shim delete` commands).
func shimPids(d *ctrtest.Daemon) []int {
	var shims []int
	for _, pid := range d.ProcessesUnder() {
		exe, _ := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "exe"))
		if filepath.Base(exe) != "containerd-shim-cvmtest-v2" {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
		args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
		if last := args[len(args)-1]; last == "start" || last == "delete" {
			continue
		}
		shims = append(shims, pid)
	}
	return shims
}

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func jsonStrings(ss []string) (string, error) {
	b, err := json.Marshal(ss)
	return string(b), err
}

// testRuntimeOptions: the runtime options reach the shim's NewSandbox
// (the fixture records what shim.ParseRuntimeOptions made of them in
// $CVMTEST_SANDBOX_DIR/<pod>.runtime-options.json): from `ctr run
// --runtime-config-path`, from a CRI options table with ConfigPath, and
// from one with the keys themselves (ConfigBody). A file with an unknown
// key fails the run, naming the key.
func testRuntimeOptions(t *testing.T, d *ctrtest.Daemon) {
	recorded := func(pod string) shim.VMOptions {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(d.Dir, "sb", pod+".runtime-options.json"))
		if err != nil {
			t.Fatalf("the shim recorded no runtime options for pod %s: %v", pod, err)
		}
		var o shim.VMOptions
		if err := json.Unmarshal(b, &o); err != nil {
			t.Fatal(err)
		}
		return o
	}
	file := filepath.Join(d.Dir, "ctr-options.json")
	write(t, file, `{"vcpus":4,"memory":"256M"}`)
	if out, errOut, code := d.Ctr(t, 60*time.Second, "run", "--rm", "--runtime", runtimeType, "--runtime-config-path", file,
		image, "ro-ctr", "/bin/prog", "echo", "x"); code != 0 {
		t.Fatalf("ctr run --runtime-config-path: exit %d: %s%s", code, out, errOut)
	}
	if diff := cmp.Diff(shim.VMOptions{VCPUs: 4, Memory: 256 << 20}, recorded("ro-ctr")); diff != "" {
		t.Errorf("ctr --runtime-config-path options (-want +got):\n%s", diff)
	}
	bad := filepath.Join(d.Dir, "bad-options.toml")
	write(t, bad, "vcpu = 4\n")
	if out, errOut, code := d.Ctr(t, 60*time.Second, "run", "--rm", "--runtime", runtimeType, "--runtime-config-path", bad,
		image, "ro-bad", "/bin/prog", "echo", "x"); code == 0 || out != "" || !strings.Contains(errOut, "unknown keys vcpu") {
		t.Errorf("ctr run with an unknown option key: exit %d, %q, %q; want a failure naming the key", code, out, errOut)
	}
	d.Ctr(t, 20*time.Second, "container", "delete", "ro-bad")

	crictl := ctrtest.FindCrictl(t)
	for _, tc := range []struct {
		handler string
		want    shim.VMOptions
	}{
		{"cvmpath", shim.VMOptions{VCPUs: 3, Memory: 1 << 30}},
		{"cvmbody", shim.VMOptions{VCPUs: 2, Format: rootimage.EROFS}},
	} {
		pod := filepath.Join(d.Dir, tc.handler+"-pod.json")
		write(t, pod, `{"metadata":{"name":"`+tc.handler+`","namespace":"default","uid":"u-`+tc.handler+`","attempt":1},
"linux":{"security_context":{"namespace_options":{"network":2}}}}`)
		out, errOut, code := d.Crictl(t, crictl, 90*time.Second, "runp", "--runtime", tc.handler, pod)
		if code != 0 {
			t.Fatalf("crictl runp --runtime %s: exit %d: %s%s", tc.handler, code, out, errOut)
		}
		id := strings.TrimSpace(out)
		if diff := cmp.Diff(tc.want, recorded(id)); diff != "" {
			t.Errorf("CRI options of runtime %s (-want +got):\n%s", tc.handler, diff)
		}
		d.Crictl(t, crictl, 60*time.Second, "stopp", id)
		d.Crictl(t, crictl, 60*time.Second, "rmp", id)
	}
}

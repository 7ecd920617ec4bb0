package builtintest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/greatjail/cvm/internal/ctrtest"
)

// Bounds on hangs inside the test host, where a pod VM is a nested guest
// under TCG (its boot takes about a minute); they bound a hang, not a speed.
const (
	cmdLimit  = 8 * time.Minute  // one ctr or crictl command
	caseLimit = 12 * time.Minute // one case: the watchdog collects evidence after this
)

const runtimeType = "io.containerd.cvm.v2"

// TestInTestHost runs inside the test host (ctrinit starts it; outside it
// skips): a real containerd whose cvm runtime runs pods on the builtin
// engine, and the cases of its Inside configuration, one subtest each.
func TestInTestHost(t *testing.T) {
	path := os.Getenv(InsideEnv)
	if path == "" {
		t.Skipf("runs only inside the test host, which TestBuiltinShim boots (%s is unset)", InsideEnv)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var in Inside
	if err := json.Unmarshal(b, &in); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	// The test host's root is a tmpfs: the native snapshotter works on
	// it without the overlay module. ctr reads its default snapshotter
	// from CONTAINERD_SNAPSHOTTER; CRI's is in the daemon's config.
	t.Setenv("CONTAINERD_SNAPSHOTTER", "native")
	start := time.Now()
	d := ctrtest.Start(t, ctrtest.Toolchain{Name: "24", Bin: in.ContainerdBin}, ctrtest.Config{
		PathDirs:     []string{in.ShimDir},
		Runtimes:     []ctrtest.Runtime{{Handler: "cvm", Type: runtimeType, Options: fmt.Sprintf("  ConfigPath = %q", in.ShimConfig)}},
		Snapshotter:  "native",
		SandboxImage: PauseImageName,
	})
	t.Logf("figures: containerd answered after %.1fs", time.Since(start).Seconds())
	// crictl's request timeout: RunPodSandbox boots the VM.
	if err := os.WriteFile(filepath.Join(d.Dir, "crictl.yaml"), []byte(fmt.Sprintf("timeout: %d\n", int(cmdLimit.Seconds()))), 0o600); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	d.Import(t, "default", in.ProgImage)
	if slices.Contains(in.Cases, CaseCrictl) {
		d.Import(t, "k8s.io", in.ProgImage)
		d.Import(t, "k8s.io", in.PauseImage)
	}
	t.Logf("figures: images imported after %.1fs", time.Since(start).Seconds())

	logs := newLogMirror(t, d)
	defer logs.stop()
	cases := []struct {
		name string
		run  func(t *testing.T, d *ctrtest.Daemon, in Inside, pods *[]string) // notes the pods (ns/id of their shims' bundles) it starts
	}{
		{CaseCtrRun, ctrRun},
		{CaseCtrExit, ctrExit},
		{CaseDetached, detached},
		{CaseCrictl, crictl},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if !slices.Contains(in.Cases, c.name) {
				t.Skip("not among the requested cases")
			}
			stop := watchdog(t, d, logs, caseLimit)
			start := time.Now()
			var pods []string
			defer func() { // also after a t.Fatal in the case
				stop()
				t.Logf("figures: case took %.1fs", time.Since(start).Seconds())
				for _, p := range pods {
					logs.check(t, p)
				}
				if t.Failed() {
					evidence(t, d)
					logs.dump(t)
				}
			}()
			c.run(t, d, in, &pods)
		})
	}
}

// ctrRun: ctr run --rm prints the program's output and returns 0.
func ctrRun(t *testing.T, d *ctrtest.Daemon, in Inside, pods *[]string) {
	*pods = append(*pods, "default/b-run")
	out, errOut, code := d.Ctr(t, cmdLimit, "run", "--rm", "--runtime", runtimeType, "--runtime-config-path", in.ShimConfig,
		ProgImageName, "b-run", "/bin/prog", "echo", "hello from the builtin VMM")
	if want := "hello from the builtin VMM\n"; out != want || code != 0 {
		t.Errorf("ctr run --rm … echo: stdout %q, exit %d (stderr %q); want %q, exit 0", out, code, errOut, want)
	}
}

// ctrExit: ctr run --rm returns the program's non-zero exit code.
func ctrExit(t *testing.T, d *ctrtest.Daemon, in Inside, pods *[]string) {
	*pods = append(*pods, "default/b-exit")
	out, errOut, code := d.Ctr(t, cmdLimit, "run", "--rm", "--runtime", runtimeType, "--runtime-config-path", in.ShimConfig,
		ProgImageName, "b-exit", "/bin/prog", "exit", "3")
	if out != "" || code != 3 {
		t.Errorf("ctr run --rm … exit 3: stdout %q, exit %d (stderr %q); want no output, exit 3", out, code, errOut)
	}
}

// detached: ctr run -d, then task exec (output from the guest kernel, an
// exit code), kill, delete.
func detached(t *testing.T, d *ctrtest.Daemon, in Inside, pods *[]string) {
	*pods = append(*pods, "default/b-det")
	ctr := func(want int, args ...string) (string, bool) {
		t.Helper()
		out, errOut, code := d.Ctr(t, cmdLimit, args...)
		if code != want {
			t.Errorf("ctr %s: exit %d, want %d: %s%s", strings.Join(args, " "), code, want, out, errOut)
			return out, false
		}
		return out, true
	}
	if _, ok := ctr(0, "run", "-d", "--runtime", runtimeType, "--runtime-config-path", in.ShimConfig,
		ProgImageName, "b-det", "/bin/prog", "sleep", "600"); !ok {
		return
	}
	if out, _ := ctr(0, "task", "exec", "--exec-id", "e1", "b-det", "/bin/prog", "read", "/proc/version"); !strings.Contains(out, in.KernelRelease) {
		t.Errorf("exec in the VM: /proc/version = %q, want the guest kernel %s", out, in.KernelRelease)
	}
	ctr(4, "task", "exec", "--exec-id", "e2", "b-det", "/bin/prog", "exit", "4")
	ctr(0, "task", "kill", "-s", "SIGKILL", "b-det")
	deadline := time.Now().Add(2 * time.Minute)
	for {
		out, ok := ctr(0, "task", "ls")
		if !ok || strings.Contains(out, "STOPPED") {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("task b-det not STOPPED 2 minutes after SIGKILL:\n%s", out)
			break
		}
		time.Sleep(time.Second)
	}
	ctr(0, "task", "delete", "b-det")
	ctr(0, "container", "delete", "b-det")
	waitNoProcesses(t, d)
}

// crictl: a CRI pod on the cvm handler: the pause container boots the VM,
// two containers arrive after it (hot-plugged root disks); logs, exec,
// stop, remove.
func crictl(t *testing.T, d *ctrtest.Daemon, in Inside, pods *[]string) {
	write := func(path, s string) {
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	podCfg := filepath.Join(d.Dir, "pod.json")
	write(podCfg, `{"metadata":{"name":"p1","namespace":"default","uid":"u1","attempt":1},
"log_directory":"`+filepath.Join(d.Dir, "podlogs")+`","linux":{"security_context":{"namespace_options":{"network":2}}}}`)
	cr := func(args ...string) string {
		t.Helper()
		out, errOut, code := d.Crictl(t, in.Crictl, cmdLimit, args...)
		if code != 0 {
			t.Fatalf("crictl %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
		}
		return strings.TrimSpace(out)
	}
	podID := cr("runp", "--runtime", "cvm", podCfg)
	*pods = append(*pods, "k8s.io/"+podID)
	removed := false
	defer func() {
		if !removed {
			d.Crictl(t, in.Crictl, cmdLimit, "stopp", podID)
			d.Crictl(t, in.Crictl, cmdLimit, "rmp", podID)
		}
	}()
	var cids []string
	for i, args := range [][]string{
		{"/bin/prog", "echo", "first container says hi"},
		{"/bin/prog", "sleep", "600"},
	} {
		c := filepath.Join(d.Dir, "c"+strconv.Itoa(i)+".json")
		argv, _ := json.Marshal(args)
		write(c, `{"metadata":{"name":"c`+strconv.Itoa(i)+`"},"image":{"image":"`+ProgImageName+`"},
"command":`+string(argv)+`,"log_path":"c`+strconv.Itoa(i)+`.log"}`)
		cids = append(cids, cr("create", podID, c, podCfg))
	}
	for _, c := range cids {
		cr("start", c)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(cr("ps", "-a", "--id", cids[0]), "Exited") && time.Now().Before(deadline) {
		time.Sleep(time.Second)
	}
	if got := cr("logs", cids[0]); got != "first container says hi" {
		t.Errorf("crictl logs: %q, want %q", got, "first container says hi")
	}
	if got := cr("exec", "-s", cids[1], "/bin/prog", "read", "/proc/version"); !strings.Contains(got, in.KernelRelease) {
		t.Errorf("crictl exec in the VM: /proc/version = %q, want the guest kernel %s", got, in.KernelRelease)
	}
	cr("stop", "-t", "2", cids[1])
	for _, c := range cids {
		cr("rm", c)
	}
	cr("stopp", podID)
	cr("rmp", podID)
	removed = true
	waitNoProcesses(t, d)
}

// waitNoProcesses waits for the pod's shim (and so its VM) to end.
func waitNoProcesses(t *testing.T, d *ctrtest.Daemon) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for len(d.ProcessesUnder()) != 0 && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	if left := d.ProcessesUnder(); len(left) != 0 {
		t.Errorf("the pod's shim still running a minute after its last task went: %v", left)
	}
}

// watchdog collects evidence (evidence, the pods' logs) once after limit
// if the case still runs then: a hang is seen while it lasts. stop waits
// for a collection under way.
func watchdog(t *testing.T, d *ctrtest.Daemon, logs *logMirror, limit time.Duration) (stop func()) {
	done := make(chan struct{})
	tm := time.AfterFunc(limit, func() {
		defer close(done)
		t.Logf("watchdog: the case still runs after %v; collecting evidence", limit)
		evidence(t, d)
		logs.dump(t)
	})
	return func() {
		if !tm.Stop() {
			<-done
		}
	}
}

// evidence logs what the processes under the daemon's directory (the
// shims, whose VMMs are in-process) are doing: each thread's state,
// kernel wait channel, system call and kernel stack; and each shim
// server's goroutines (SIGUSR1 makes containerd's shim library dump them
// into its log, which containerd copies into its own).
func evidence(t *testing.T, d *ctrtest.Daemon) {
	for _, pid := range d.ProcessesUnder() {
		dir := filepath.Join("/proc", strconv.Itoa(pid))
		cmdline, _ := os.ReadFile(filepath.Join(dir, "cmdline"))
		args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
		var b strings.Builder
		fmt.Fprintf(&b, "process %d: %q\n", pid, args)
		tasks, _ := os.ReadDir(filepath.Join(dir, "task"))
		for _, tk := range tasks {
			td := filepath.Join(dir, "task", tk.Name())
			comm, _ := os.ReadFile(filepath.Join(td, "comm"))
			stat, _ := os.ReadFile(filepath.Join(td, "stat"))
			wchan, _ := os.ReadFile(filepath.Join(td, "wchan"))
			sc, _ := os.ReadFile(filepath.Join(td, "syscall"))
			stack, _ := os.ReadFile(filepath.Join(td, "stack"))
			state := ""
			if _, rest, ok := strings.Cut(string(stat), ") "); ok && len(rest) > 0 {
				state = rest[:1]
			}
			fmt.Fprintf(&b, "  thread %s %s: state %s wchan %s syscall %s\n", tk.Name(), strings.TrimSpace(string(comm)), state, wchan, strings.TrimSpace(string(sc)))
			for _, l := range strings.Split(strings.TrimSpace(string(stack)), "\n") {
				if l != "" {
					fmt.Fprintf(&b, "    %s\n", l)
				}
			}
		}
		t.Log(b.String())
		if filepath.Base(args[0]) == "containerd-shim-cvm-v2" && args[len(args)-1] != "start" {
			syscall.Kill(pid, syscall.SIGUSR1)
		}
	}
	time.Sleep(3 * time.Second) // the dump travels through the shim's log FIFO
	b, _ := os.ReadFile(d.Log)
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "goroutine stack dump") {
			t.Logf("shim goroutines:\n%s", strings.ReplaceAll(strings.ReplaceAll(l, `\n`, "\n"), `\t`, "\t"))
		}
	}
}

// logMirror copies the pods' VM logs (<bundle>/vm/*.log) out of the
// daemon's state directory once a second, so that they outlive the
// bundles (ctr run --rm removes its own), and notes when each pod's VM
// started (engine.log appeared) and when its agent first spoke on the link
// (agent.log not empty): the boot time, to a second.
type logMirror struct {
	d    *ctrtest.Daemon
	dir  string
	quit chan struct{}
	done chan struct{}

	mu     sync.Mutex
	files  map[string]string    // pod (ns/id) + "/" + log name -> copy
	start  map[string]time.Time // pod -> engine.log first seen
	linked map[string]time.Time // pod -> agent.log first non-empty
}

func newLogMirror(t *testing.T, d *ctrtest.Daemon) *logMirror {
	m := &logMirror{d: d, dir: t.TempDir(), quit: make(chan struct{}), done: make(chan struct{}),
		files: map[string]string{}, start: map[string]time.Time{}, linked: map[string]time.Time{}}
	go m.loop()
	return m
}

func (m *logMirror) loop() {
	defer close(m.done)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		m.copy()
		select {
		case <-m.quit:
			return
		case <-tick.C:
		}
	}
}

func (m *logMirror) copy() {
	logs, _ := filepath.Glob(filepath.Join(m.d.Dir, "state", "io.containerd.runtime.v2.task", "*", "*", "vm", "*.log"))
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range logs {
		vm := filepath.Dir(p)
		pod := filepath.Base(filepath.Dir(filepath.Dir(vm))) + "/" + filepath.Base(filepath.Dir(vm))
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		key := pod + "/" + filepath.Base(p)
		cp, ok := m.files[key]
		if !ok {
			cp = filepath.Join(m.dir, strings.ReplaceAll(key, "/", "_"))
			m.files[key] = cp
		}
		os.WriteFile(cp, b, 0o600)
		switch filepath.Base(p) {
		case "engine.log":
			if _, ok := m.start[pod]; !ok {
				m.start[pod] = now
			}
		case "agent.log":
			if _, ok := m.linked[pod]; !ok && len(b) > 0 {
				m.linked[pod] = now
			}
		}
	}
}

func (m *logMirror) stop() {
	close(m.quit)
	<-m.done
}

// check fails the test unless pod ran on the builtin engine (its
// engine.log says so), and logs its boot time.
func (m *logMirror) check(t *testing.T, pod string) {
	t.Helper()
	m.copy()
	m.mu.Lock()
	cp, ok := m.files[pod+"/engine.log"]
	start, linked := m.start[pod], m.linked[pod]
	m.mu.Unlock()
	if !ok {
		t.Errorf("pod %s: no engine.log seen in its bundle", pod)
		return
	}
	b, _ := os.ReadFile(cp)
	if !strings.HasPrefix(string(b), "builtin engine: ") {
		t.Errorf("pod %s: engine.log does not start with %q (not the builtin engine?):\n%s", pod, "builtin engine: ", b)
	}
	if !linked.IsZero() {
		t.Logf("figures: pod %s: VM started, agent on the link after %.0fs (±1s)", pod, linked.Sub(start).Seconds())
	}
}

// dump logs the tail of every log copied.
func (m *logMirror) dump(t *testing.T) {
	m.copy()
	m.mu.Lock()
	defer m.mu.Unlock()
	var keys []string
	for k := range m.files {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		b, _ := os.ReadFile(m.files[k])
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		if len(lines) > 150 {
			lines = lines[len(lines)-150:]
		}
		t.Logf("%s (tail):\n%s", k, strings.Join(lines, "\n"))
	}
}

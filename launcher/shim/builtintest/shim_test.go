package builtintest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/greatjail/cvm/internal/ctrtest"
	"github.com/greatjail/cvm/internal/testhost"
)

var (
	logPath  = flag.String("builtintest.log", "", "also write the test host's console to this `file`")
	kvmAMD   = flag.String("builtintest.kvm-amd", "", "parameters of the test host's kvm_amd module, e.g. `vgif=0` (to try a workaround of a freeze)")
	casesArg = flag.String("builtintest.cases", strings.Join(allCases, ","), "the `cases` to run in the test host, comma-separated")
)

var allCases = []string{CaseCtrRun, CaseCtrExit, CaseDetached, CaseCrictl}

// limit bounds the whole test host run: QEMU TCG is slow, a pod VM is a
// nested guest, and the machine may be shared, so it is generous; nothing
// asserts on time. The test binary inside gets limit less a margin for the
// test host's boot and power-off.
const limit = 25 * time.Minute

// In the test host.
const (
	hostMemory = "2048M" // the initramfs (~270 MiB, kept as the root tmpfs), containerd, the shim and a 256 MiB pod VM
	podMemory  = "256M"
	inside     = "/cvm" // the shim, the agent, the kernel, the images
	ctrBin     = "/ctr/bin"
	testBin    = "/bin/builtintest.test"
	insidePath = "/etc/cvmtest/inside.json"
)

// TestBuiltinShim runs containerd with the cvm runtime class on the builtin
// engine inside one boot of the QEMU TCG test host, and judges each case
// by the verdict of TestInTestHost's subtest there.
func TestBuiltinShim(t *testing.T) {
	if testing.Short() {
		t.Skip("tier vm: -short")
	}
	root, err := testhost.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	k, err := testhost.FindKernel(root, testhost.Releases[0])
	if errors.Is(err, testhost.ErrMissing) {
		t.Skipf("tier vm: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	qemu, err := testhost.QEMU()
	if errors.Is(err, testhost.ErrMissing) {
		t.Skipf("tier vm: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		t.Skip("tier vm: mkfs.ext4 not found (Debian package e2fsprogs), needed by the shim for the containers' root images")
	}
	tc := ctrtest.FindToolchain(t, "24")
	crictlPath := ctrtest.FindCrictl(t)
	cases := strings.Split(*casesArg, ",")

	tmp := t.TempDir()
	build := func(pkg string) string {
		out := filepath.Join(tmp, "bin", filepath.Base(pkg))
		if err := testhost.BuildGo(root, pkg, out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	shimExe, agent, initExe := build("./cmd/containerd-shim-cvm-v2"), build("./cmd/cvm-agent"), build("./launcher/shim/builtintest/ctrinit")
	testExe := filepath.Join(tmp, "bin", "builtintest.test")
	if err := testhost.BuildTest(root, "./launcher/shim/builtintest", testExe); err != nil {
		t.Fatal(err)
	}
	prog := ctrtest.BuildProg(t, tmp)
	progTar, pauseTar := filepath.Join(tmp, "prog.tar"), filepath.Join(tmp, "pause.tar")
	ctrtest.WriteOCI(t, progTar, ctrtest.Image{Name: ProgImageName, Files: map[string]string{"bin/prog": prog}, Env: []string{"PATH=/bin"}})
	ctrtest.WriteOCI(t, pauseTar, ctrtest.Image{Name: PauseImageName, Files: map[string]string{"bin/prog": prog},
		Entrypoint: []string{"/bin/prog", "sleep", "1000000"}})

	// The test host's files.
	files, err := testhost.DynamicFiles(mkfs)
	if err != nil {
		t.Fatal(err)
	}
	files["/sbin/mkfs.ext4"] = files[mkfs]
	add := func(dst, src string) {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		files[dst] = b
	}
	add(ctrBin+"/containerd", filepath.Join(tc.Bin, "containerd"))
	add(ctrBin+"/ctr", filepath.Join(tc.Bin, "ctr"))
	add(ctrBin+"/crictl", crictlPath)
	add(inside+"/bin/containerd-shim-cvm-v2", shimExe)
	add(inside+"/bin/cvm-agent", agent) // the shim finds it next to itself
	add(testBin, testExe)
	add(inside+"/prog.tar", progTar)
	add(inside+"/pause.tar", pauseTar)
	kernelIn := inside + "/vmlinuz-" + k.Release
	add(kernelIn, k.Image)
	err = filepath.WalkDir(k.Modules, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(k.Modules, p)
		add(inside+"/modules/"+k.Release+"/"+filepath.ToSlash(rel), p) // kernel.Open finds <dir of the image>/modules/<release>
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	shimConfig := inside + "/shim.toml"
	files[shimConfig] = fmt.Appendf(nil, "engine = \"builtin\"\nkernel = %q\nmemory = %q\n", kernelIn, podMemory)
	// CRI copies the host's hosts and resolv.conf into a host-network pod.
	files["/etc/hosts"] = []byte("127.0.0.1 localhost\n")
	files["/etc/resolv.conf"] = []byte("")
	in := Inside{ContainerdBin: ctrBin, Crictl: ctrBin + "/crictl", ShimDir: inside + "/bin", ShimConfig: shimConfig,
		KernelRelease: k.Release, ProgImage: inside + "/prog.tar", PauseImage: inside + "/pause.tar", Cases: cases}
	if files[insidePath], err = json.Marshal(in); err != nil {
		t.Fatal(err)
	}
	ic := InitConfig{
		Test: testBin,
		Args: []string{"-test.v", "-test.count=1", "-test.run", "^TestInTestHost$", "-test.timeout", (limit - 3*time.Minute).String()},
		Env:  []string{"PATH=" + inside + "/bin:" + ctrBin + ":/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/tmp", "TMPDIR=/tmp", InsideEnv + "=" + insidePath},
	}
	if *kvmAMD != "" {
		ic.ModuleParams = map[string]string{"kvm_amd": *kvmAMD}
	}
	if files[InitConfigPath], err = json.Marshal(ic); err != nil {
		t.Fatal(err)
	}
	ib, err := os.ReadFile(initExe)
	if err != nil {
		t.Fatal(err)
	}
	ird, err := testhost.HostInitramfs(ib, k, testhost.HostConfig{}, files)
	if err != nil {
		t.Fatal(err)
	}
	irdPath := filepath.Join(tmp, "host-initrd")
	if err := os.WriteFile(irdPath, ird, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("test host initramfs: %d MiB", len(ird)>>20)
	files, ird = nil, nil

	log := testhost.NewConsole(t, *logPath)
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	start := time.Now()
	out, bootErr := testhost.BootHost(ctx, testhost.BootOptions{QEMU: qemu, Kernel: k.Image, Initrd: irdPath,
		Memory: hostMemory, Log: log, Unfreeze: true})
	t.Logf("test host ran %.0fs", time.Since(start).Seconds())
	// A freeze that revived is QEMU's (see testhost.Freeze): noted, not a
	// failure; the cases still have to pass. One that did not is in
	// bootErr.
	if out != nil {
		for _, f := range out.Freezes {
			t.Logf("the test host froze (busy %v, for %v), revived: %v; QEMU's view:\n%s", f.Busy, f.Idle, f.Revived, f.State)
		}
	}
	if bootErr != nil {
		t.Error(bootErr)
	}
	var run *testhost.TestRun
	if out != nil && len(out.Tests) == 1 {
		run = &out.Tests[0]
	}
	verdicts, outputs := parse(log.String())
	if run == nil {
		t.Errorf("no outcome of the test binary on the test host's console")
	} else if !run.OK {
		t.Errorf("the test binary in the test host failed:\n%s\nTestInTestHost's own output:\n%s", run.Summary, outputs[""])
	}
	for _, name := range allCases {
		t.Run(name, func(t *testing.T) {
			v, ok := verdicts[name]
			switch {
			case !slices.Contains(cases, name):
				t.Skip("not requested (-builtintest.cases)")
			case !ok:
				t.Fatalf("no verdict of TestInTestHost/%s on the test host's console", name)
			}
			for _, l := range strings.Split(outputs[name], "\n") {
				if strings.Contains(l, "figures: ") {
					t.Logf("in the test host: %s", strings.TrimSpace(l))
				}
			}
			if v != "PASS" {
				t.Errorf("TestInTestHost/%s: %s in the test host; its output:\n%s", name, v, outputs[name])
			}
		})
	}
	for _, l := range strings.Split(outputs[""], "\n") {
		if strings.Contains(l, "figures: ") {
			t.Logf("in the test host: %s", strings.TrimSpace(l))
		}
	}
	if t.Failed() {
		t.Logf("test host console (last lines):\n%s", log.Tail(300))
	}
}

var (
	runLine     = regexp.MustCompile(`^=== (?:RUN|NAME|CONT|PAUSE)\s+TestInTestHost(?:/(\S+))?$`)
	verdictLine = regexp.MustCompile(`^\s*--- (PASS|FAIL|SKIP): TestInTestHost(?:/(\S+))? \(`)
)

// parse reads the test binary's output (the console's "T| " lines): each
// subtest's verdict and each subtest's output ("" for the top level). A
// line belongs to the test named by the last "=== RUN" or "=== NAME" line
// (go test -v names the test whose output follows another's), and the
// verdict lines to the top level.
func parse(console string) (verdicts, outputs map[string]string) {
	verdicts, outputs = map[string]string{}, map[string]string{}
	b := map[string]*strings.Builder{}
	cur := ""
	s := bufio.NewScanner(strings.NewReader(console))
	s.Buffer(make([]byte, 64<<10), 4<<20)
	for s.Scan() {
		l, ok := strings.CutPrefix(strings.TrimRight(s.Text(), "\r"), "T| ")
		if !ok {
			continue
		}
		if m := runLine.FindStringSubmatch(l); m != nil {
			cur = m[1]
		}
		if b[cur] == nil {
			b[cur] = &strings.Builder{}
		}
		b[cur].WriteString(l + "\n")
		if m := verdictLine.FindStringSubmatch(l); m != nil {
			if m[2] != "" {
				verdicts[m[2]] = m[1]
			}
			cur = "" // what follows is the parent's
		}
	}
	for k, v := range b {
		outputs[k] = v.String()
	}
	return verdicts, outputs
}

package vmtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/greatjail/cvm/guest-agent/launchconfig"
	"github.com/greatjail/cvm/guest-agent/link"
	"github.com/greatjail/cvm/internal/ctrtest"
	"github.com/greatjail/cvm/launcher/engine"
	"github.com/greatjail/cvm/launcher/kernel"
	"github.com/greatjail/cvm/launcher/shim"
	"github.com/greatjail/cvm/launcher/shim/rootimage"
	agentv1 "github.com/greatjail/cvm/proto/cvm/agent/v1"
)

// testKernel opens a Debian cloud kernel with its module tree from
// .cache/inputs, or skips.
func testKernel(t testing.TB) *kernel.Kernel {
	t.Helper()
	_, self, _, _ := runtime.Caller(0)
	inputs := filepath.Join(filepath.Dir(self), "..", "..", "..", ".cache", "inputs")
	for _, rel := range []string{"6.12.117+deb13-cloud-amd64", "6.1.0-56-cloud-amd64"} {
		if _, err := os.Stat(filepath.Join(inputs, "modules", rel)); err != nil {
			continue
		}
		k, err := kernel.Open(filepath.Join(inputs, "vmlinuz-"+rel))
		if err != nil {
			// The inputs are there but do not open: a failure, not a skip.
			t.Fatalf("kernel %s: %v", rel, err)
		}
		return k
	}
	t.Skip("no guest kernel with modules in .cache/inputs: run make test-inputs")
	return nil
}

// needVMs skips tb unless microVMs can boot here: not in -short, with
// QEMU and mkfs.ext4 (the root images).
func needVMs(tb testing.TB) {
	tb.Helper()
	if testing.Short() {
		tb.Skip("boots microVMs; not in -short")
	}
	if _, err := exec.LookPath(engine.QEMUBinary); err != nil {
		tb.Skipf("needs %s (Debian qemu-system-x86)", engine.QEMUBinary)
	}
	if err := rootimage.Available(rootimage.EXT4); err != nil {
		tb.Skipf("%v: install e2fsprogs", err)
	}
}

// shippedShim is needVMs, then the kernel, containerd 2.4's toolchain, a
// directory for containerd's PATH holding the shipped cvm-agent and
// containerd-shim-cvm-v2, and the test program.
func shippedShim(tb testing.TB) (k *kernel.Kernel, tc ctrtest.Toolchain, bin, prog string) {
	tb.Helper()
	needVMs(tb)
	k = testKernel(tb)
	tc = ctrtest.FindToolchain(tb, "24")
	bin = tb.TempDir()
	goBuild(tb, filepath.Join(bin, "cvm-agent"), "github.com/greatjail/cvm/cmd/cvm-agent")
	goBuild(tb, filepath.Join(bin, "containerd-shim-cvm-v2"), "github.com/greatjail/cvm/cmd/containerd-shim-cvm-v2")
	return k, tc, bin, ctrtest.BuildProg(tb, tb.TempDir())
}

func goBuild(t testing.TB, out, pkg string) {
	t.Helper()
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
}

// TestContainersInVM boots a microVM whose only disk is a container's root
// file system image and runs processes from it through the Containers
// service over the link: output, exit codes, the writable layer, exec.
func TestContainersInVM(t *testing.T) {
	needVMs(t)
	k := testKernel(t)
	dir := t.TempDir()
	agent := filepath.Join(dir, "cvm-agent")
	goBuild(t, agent, "github.com/greatjail/cvm/cmd/cvm-agent")
	initrd := filepath.Join(dir, "initrd")
	b, err := shim.PodInitramfs(k, agent, &launchconfig.Config{Version: 1, Mode: launchconfig.ModePod, TEE: launchconfig.TEENone})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(initrd, b, 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "bin")
	os.Mkdir(bin, 0o755)
	root := filepath.Join(dir, "root")
	ctrtest.RootDir(t, root, ctrtest.Image{Files: map[string]string{"bin/prog": ctrtest.BuildProg(t, bin)}})
	img := filepath.Join(dir, "root.ext4")
	if err := rootimage.Make(context.Background(), rootimage.EXT4, root, img); err != nil {
		t.Fatal(err)
	}

	// Unix socket paths are short: use a short directory for the link.
	sockDir, err := os.MkdirTemp("", "vm")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(sockDir)
	console := filepath.Join(dir, "console.log")
	h, err := (&engine.QEMU{}).Start(context.Background(), engine.Machine{
		Kernel: k.Path, Initrd: initrd, Cmdline: "console=ttyS0 panic=-1 quiet",
		VCPUs: 1, Memory: 512 << 20, Disk: img,
		LinkSocket: filepath.Join(sockDir, "link"), ConsoleLog: console, EngineLog: filepath.Join(dir, "qemu.log"),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		h.Kill()
		h.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(console)
			t.Logf("guest console:\n%s", b)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	conn, err := h.Link(ctx)
	if err != nil {
		t.Fatalf("link: %v", err)
	}
	sess, err := link.Host(conn)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	go func() { // the agent's log stream
		for {
			kind, c, err := sess.Accept()
			if err != nil {
				return
			}
			go func() { b, _ := io.ReadAll(c); t.Logf("guest %s stream:\n%s", kind, b) }()
		}
	}()
	stream, err := sess.Open(link.KindTTRPC)
	if err != nil {
		t.Fatal(err)
	}
	client := ttrpc.NewClient(stream)
	defer client.Close()
	c := agentv1.NewContainersClient(client)
	// The agent serves Agent beside Containers: it is in pod mode.
	st, err := agentv1.NewAgentClient(client).Status(ctx, &agentv1.StatusRequest{})
	if err != nil {
		t.Fatalf("Agent.Status: %v", err)
	}
	if st.GetKernelRelease() != k.Release {
		t.Errorf("Agent.Status kernel release %q, want %q", st.GetKernelRelease(), k.Release)
	}

	spec, _ := json.Marshal(specs.Spec{
		Process: &specs.Process{Args: []string{"/bin/prog", "echo", "hello from the guest"}, Cwd: "/", Env: []string{"PATH=/bin"}},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "mode=755"}},
		},
	})
	if _, err := c.Create(ctx, &agentv1.CreateContainerRequest{ContainerId: "c1", OciSpec: spec,
		Rootfs: &agentv1.ContainerRootfs{Source: &agentv1.ContainerRootfs_Block{Block: &agentv1.BlockRootfs{Device: "/dev/vda", Fstype: "ext4"}}}}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	run := func(execID string, args ...string) (string, uint32) {
		t.Helper()
		var proc []byte
		if execID != "" {
			proc, _ = json.Marshal(specs.Process{Args: args, Cwd: "/", Env: []string{"PATH=/bin"}})
		}
		if _, err := c.Start(ctx, &agentv1.StartProcessRequest{ContainerId: "c1", ExecId: execID, Process: proc, Stdout: true}); err != nil {
			t.Fatalf("Start %q: %v", execID, err)
		}
		out, err := c.Output(ctx, &agentv1.ProcessOutputRequest{ContainerId: "c1", ExecId: execID, Stream: agentv1.StdioStream_STDIO_STREAM_STDOUT})
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for {
			chunk, err := out.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("Output %q: %v", execID, err)
			}
			b.Write(chunk.GetData())
		}
		w, err := c.Wait(ctx, &agentv1.WaitProcessRequest{ContainerId: "c1", ExecId: execID})
		if err != nil {
			t.Fatalf("Wait %q: %v", execID, err)
		}
		return b.String(), w.GetExitStatus()
	}
	type result struct {
		Out    string
		Status uint32
	}
	var got []result
	for _, r := range []struct {
		id   string
		args []string
	}{
		{"", nil},
		{"e1", []string{"/bin/prog", "exit", "6"}},
		{"e2", []string{"/bin/prog", "write", "/written", "x"}},
		{"e3", []string{"/bin/prog", "ls", "/"}},
		{"e4", []string{"/bin/prog", "read", "/proc/self/comm"}},
	} {
		out, status := run(r.id, r.args...)
		got = append(got, result{out, status})
	}
	want := []result{
		{"hello from the guest\n", 0},
		{"", 6},
		{"", 0},
		{"bin\ndev\netc\nlost+found\nproc\nrun\nsys\ntmp\nwritten\n", 0},
		{"prog\n", 0},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("processes in the guest (-want +got)\n%s", diff)
	}
	if _, err := c.Remove(ctx, &agentv1.RemoveContainerRequest{ContainerId: "c1"}); err != nil {
		t.Errorf("Remove: %v", err)
	}
}

// TestCtrRunInVM: the shipped containerd-shim-cvm-v2 under real
// containerd 2.4: `ctr run --rm` runs the program in a QEMU guest whose
// /init is the real cvm-agent in pod mode, from its image's root file
// system (an ext4 disk), and ctr prints its output and returns its exit
// code. The kernel and agent are given as an installation would place
// them: CVM_KERNEL and CVM_AGENT stand in for PREFIX/share/cvm.
func TestCtrRunInVM(t *testing.T) {
	k, tc, bin, prog := shippedShim(t)
	d := ctrtest.Start(t, tc, ctrtest.Config{
		PathDirs: []string{bin},
		Env:      []string{"CVM_KERNEL=" + k.Path},
	})
	img := filepath.Join(d.Dir, "prog.tar")
	const image = "localhost/cvm-test/prog:1"
	ctrtest.WriteOCI(t, img, ctrtest.Image{Name: image, Files: map[string]string{"bin/prog": prog}, Env: []string{"PATH=/bin"}})
	d.Import(t, "default", img)
	tests := []struct {
		name string
		args []string
		out  string
		code int
	}{
		{"echo", []string{"echo", "hello from a microVM"}, "hello from a microVM\n", 0},
		{"exit code", []string{"exit", "3"}, "", 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id := "vm-" + strings.ReplaceAll(tc.name, " ", "-")
			args := append([]string{"run", "--rm", "--runtime", "io.containerd.cvm.v2", image, id, "/bin/prog"}, tc.args...)
			out, errOut, code := d.Ctr(t, 4*time.Minute, args...)
			if out != tc.out || code != tc.code {
				t.Errorf("ctr run %s: %q, %q, exit %d; want %q, exit %d", tc.args, out, errOut, code, tc.out, tc.code)
			}
		})
	}
	// `… | ctr run` (stdin attached): ctr closes its end of the stdin FIFO at EOF and
	// calls CloseIO at once; everything it wrote must reach the process.
	t.Run("stdin", func(t *testing.T) {
		want := strings.Repeat("input line for the guest\n", 2000) // 50 KB
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, filepath.Join(d.Bin, "ctr"),
			d.CtrArgs("run", "--rm", "--runtime", "io.containerd.cvm.v2", image, "vm-stdin", "/bin/prog", "cat")...)
		cmd.Stdin = strings.NewReader(want)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		if err := cmd.Run(); err != nil || out.String() != want {
			t.Errorf("ctr run … cat: %v; %d of %d bytes came back; stderr %q", err, out.Len(), len(want), errOut.String())
		}
	})
	t.Run("detached exec kill delete", func(t *testing.T) {
		ctr := func(want int, args ...string) string {
			t.Helper()
			out, errOut, code := d.Ctr(t, 4*time.Minute, args...)
			if code != want {
				t.Fatalf("ctr %s: exit %d, want %d: %s%s", strings.Join(args, " "), code, want, out, errOut)
			}
			return out
		}
		ctr(0, "run", "-d", "--runtime", "io.containerd.cvm.v2", image, "vmd", "/bin/prog", "sleep", "600")
		if out := ctr(0, "task", "exec", "--exec-id", "e1", "vmd", "/bin/prog", "read", "/proc/version"); !strings.Contains(out, k.Release) {
			t.Errorf("exec in the VM: /proc/version = %q, want the guest kernel %s", out, k.Release)
		}
		ctr(4, "task", "exec", "--exec-id", "e2", "vmd", "/bin/prog", "exit", "4")
		ctr(0, "task", "kill", "-s", "SIGKILL", "vmd")
		deadline := time.Now().Add(30 * time.Second)
		for !strings.Contains(ctr(0, "task", "ls"), "STOPPED") && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
		}
		ctr(0, "task", "delete", "vmd")
		ctr(0, "container", "delete", "vmd")
	})
	t.Run("kill the shim", func(t *testing.T) {
		if _, errOut, code := d.Ctr(t, 4*time.Minute, "run", "-d", "--runtime", "io.containerd.cvm.v2", image, "vmk", "/bin/prog", "sleep", "600"); code != 0 {
			t.Fatalf("ctr run -d: exit %d: %s", code, errOut)
		}
		var shim int
		for _, pid := range d.ProcessesUnder() {
			exe, _ := os.Readlink(filepath.Join("/proc", strconv.Itoa(pid), "exe"))
			cmdline, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
			if filepath.Base(exe) == "containerd-shim-cvm-v2" && !strings.HasSuffix(string(cmdline), "start\x00") {
				shim = pid
			}
		}
		if shim == 0 {
			t.Fatalf("no shim server among %v", d.ProcessesUnder())
		}
		syscall.Kill(shim, syscall.SIGKILL)
		deadline := time.Now().Add(30 * time.Second)
		for {
			out, _, _ := d.Ctr(t, 20*time.Second, "task", "ls")
			if !strings.Contains(out, "vmk") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("task vmk still listed 30 s after its shim died:\n%s", out)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if _, errOut, code := d.Ctr(t, 20*time.Second, "container", "delete", "vmk"); code != 0 {
			t.Errorf("ctr container delete: exit %d: %s", code, errOut)
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for len(d.ProcessesUnder()) != 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if left := d.ProcessesUnder(); len(left) != 0 {
		t.Errorf("processes left (shim, QEMU): %v", left)
	}
}

package containers

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/greatjail/cvm/internal/ctrtest"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (mounts, chroot, setuid): run the test as root")
	}
}

// rootDir makes a root file system directory holding /bin/prog.
func rootDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	for _, d := range []string{"bin", "proc", "dev", "tmp", "etc"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(root, "tmp"), 0o1777); err != nil {
		t.Fatal(err)
	}
	ctrtest.BuildProg(t, filepath.Join(root, "bin"))
	return root
}

func testSpec(args ...string) *specs.Spec {
	return &specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{Args: args, Env: []string{"PATH=/bin", "HOME=/"}, Cwd: "/"},
		Root:    &specs.Root{Path: "rootfs"},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		},
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newManager(t *testing.T) *Manager {
	t.Helper()
	m, err := New(Options{Dir: filepath.Join(t.TempDir(), "state")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return m
}

// run starts process execID and returns its stdout, stderr and exit status.
func run(t *testing.T, m *Manager, id, execID string, proc *specs.Process, stdin string) (string, string, uint32) {
	t.Helper()
	var ps []byte
	if proc != nil {
		ps = mustJSON(t, proc)
	}
	ctx := context.Background()
	if _, err := m.Start(ctx, id, execID, ps, Stdio{Stdin: stdin != "", Stdout: true, Stderr: true}); err != nil {
		t.Fatalf("Start(%q, %q): %v", id, execID, err)
	}
	if stdin != "" {
		if err := m.WriteStdin(id, execID, []byte(stdin)); err != nil {
			t.Fatal(err)
		}
		if err := m.CloseStdin(id, execID); err != nil {
			t.Fatal(err)
		}
	}
	var outs [2]chan string
	for i, s := range []int{1, 2} {
		r, err := m.Output(id, execID, s)
		if err != nil {
			t.Fatal(err)
		}
		outs[i] = make(chan string, 1)
		go func() {
			defer r.Close()
			b, _ := io.ReadAll(r)
			outs[i] <- string(b)
		}()
	}
	e, err := m.Wait(ctx, id, execID)
	if err != nil {
		t.Fatal(err)
	}
	stdout, stderr := <-outs[0], <-outs[1]
	if _, err := m.Output(id, execID, 1); err == nil {
		t.Error("Output handed out stdout twice")
	}
	return stdout, stderr, e.Status
}

func TestProcessSpec(t *testing.T) {
	needRoot(t)
	root := rootDir(t)
	tests := []struct {
		name       string
		proc       specs.Process
		wantOut    string
		wantErr    string
		wantStatus uint32
	}{
		{name: "echo via PATH", proc: specs.Process{Args: []string{"prog", "echo", "hello", "world"}, Env: []string{"PATH=/bin"}},
			wantOut: "hello world\n"},
		{name: "exit code", proc: specs.Process{Args: []string{"/bin/prog", "exit", "3"}}, wantStatus: 3},
		{name: "stderr", proc: specs.Process{Args: []string{"/bin/prog", "stderr", "ERR:", "oops"}}, wantErr: "ERR: oops\n"},
		{name: "env", proc: specs.Process{Args: []string{"/bin/prog", "env"}, Env: []string{"A=1", "B=two"}},
			wantOut: "A=1\nB=two\n"},
		{name: "cwd", proc: specs.Process{Args: []string{"/bin/prog", "pwd"}, Cwd: "/tmp"}, wantOut: "/tmp\n"},
		{name: "user", proc: specs.Process{Args: []string{"/bin/prog", "id"},
			User: specs.User{UID: 1000, GID: 1001, AdditionalGids: []uint32{20, 30}}},
			wantOut: "uid=1000 gid=1001 groups=20,30\n"},
		{name: "rlimit", proc: specs.Process{Args: []string{"/bin/prog", "core"},
			Rlimits: []specs.POSIXRlimit{{Type: "RLIMIT_CORE", Soft: 4096, Hard: 8192}}}, wantOut: "4096 8192\n"},
		{name: "devices", proc: specs.Process{Args: []string{"/bin/prog", "ls", "/dev"}},
			wantOut: "fd\nfull\nnull\nptmx\nrandom\nstderr\nstdin\nstdout\ntty\nurandom\nzero\n"},
		{name: "proc mounted", proc: specs.Process{Args: []string{"/bin/prog", "read", "/proc/self/comm"}}, wantOut: "prog\n"},
		{name: "signalled", proc: specs.Process{Args: []string{"/bin/prog", "sleep", "60"}}, wantStatus: 137},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := newManager(t)
			spec := testSpec("/bin/prog")
			if tc.proc.Cwd == "" {
				tc.proc.Cwd = "/"
			}
			spec.Process = &tc.proc
			if err := m.Create(context.Background(), "c1", mustJSON(t, spec), Rootfs{Directory: root}); err != nil {
				t.Fatal(err)
			}
			if tc.wantStatus == 137 {
				go func() {
					for {
						if ps, _ := m.Pids("c1"); len(ps) > 0 {
							if err := m.Signal("c1", "", syscall.SIGKILL, false); err == nil {
								return
							}
						}
						time.Sleep(10 * time.Millisecond)
					}
				}()
			}
			out, errOut, status := run(t, m, "c1", "", nil, "")
			if diff := cmp.Diff([]any{tc.wantOut, tc.wantErr, tc.wantStatus}, []any{out, errOut, status}); diff != "" {
				t.Errorf("stdout, stderr, status: (-want +got)\n%s", diff)
			}
		})
	}
}

func TestExecStdinSignal(t *testing.T) {
	needRoot(t)
	root := rootDir(t)
	m := newManager(t)
	ctx := context.Background()
	if err := m.Create(ctx, "c1", mustJSON(t, testSpec("/bin/prog", "sleep", "100")), Rootfs{Directory: root}); err != nil {
		t.Fatal(err)
	}
	if err := m.Create(ctx, "c1", mustJSON(t, testSpec("/bin/prog")), Rootfs{Directory: root}); !errors.Is(err, ErrExists) {
		t.Errorf("second Create(c1) = %v, want ErrExists", err)
	}
	proc := &specs.Process{Args: []string{"/bin/prog", "cat"}, Cwd: "/"}
	if _, err := m.Start(ctx, "c1", "e1", mustJSON(t, proc), Stdio{}); !errors.Is(err, ErrState) {
		t.Errorf("exec before init: %v, want ErrState", err)
	}
	pid, err := m.Start(ctx, "c1", "", nil, Stdio{})
	if err != nil {
		t.Fatal(err)
	}
	out, _, status := run(t, m, "c1", "e1", proc, "through stdin\n")
	if out != "through stdin\n" || status != 0 {
		t.Errorf("exec cat = %q, %d; want the input back, 0", out, status)
	}
	ps, err := m.Pids("c1")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]Process{{Pid: pid, ExecID: ""}}, ps); diff != "" {
		t.Errorf("Pids: (-want +got)\n%s", diff)
	}
	st, err := m.Stats("c1")
	if err != nil {
		t.Fatal(err)
	}
	if st.Pids != 1 || st.MemoryRSSBytes == 0 {
		t.Errorf("Stats = %+v, want 1 process with some memory", st)
	}
	if err := m.Signal("c1", "", syscall.SIGTERM, false); err != nil {
		t.Fatal(err)
	}
	e, err := m.Wait(ctx, "c1", "")
	if err != nil || e.Status != 128+15 {
		t.Errorf("Wait after SIGTERM = %v, %v; want status 143", e, err)
	}
	if err := m.Signal("c1", "", syscall.SIGTERM, false); !errors.Is(err, ErrState) {
		t.Errorf("signal after exit: %v, want ErrState", err)
	}
	if _, err := m.Wait(ctx, "nope", ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("Wait(nope) = %v, want ErrNotFound", err)
	}
}

// TestBlockRootfs runs a container whose root is an ext4 image on a loop
// device, with a writable layer: writes land in the layer, the image
// stays unchanged, and Remove unmounts everything.
func TestBlockRootfs(t *testing.T) {
	needRoot(t)
	for _, tool := range []string{"mkfs.ext4", "losetup"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (e2fsprogs, util-linux)", tool)
		}
	}
	root := rootDir(t)
	img := filepath.Join(t.TempDir(), "root.ext4")
	if b, err := exec.Command("mkfs.ext4", "-q", "-d", root, img, "16M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, b)
	}
	b, err := exec.Command("losetup", "--find", "--show", "--read-only", img).Output()
	if err != nil {
		t.Fatalf("losetup %s: %v", img, err)
	}
	dev := strings.TrimSpace(string(b))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })

	m := newManager(t)
	ctx := context.Background()
	if err := m.Create(ctx, "blk", mustJSON(t, testSpec("/bin/prog", "write", "/new", "layer")), Rootfs{Device: dev, FSType: "ext4"}); err != nil {
		t.Fatal(err)
	}
	if _, _, status := run(t, m, "blk", "", nil, ""); status != 0 {
		t.Fatalf("write into the writable layer: status %d", status)
	}
	out, _, _ := run(t, m, "blk", "ls", &specs.Process{Args: []string{"/bin/prog", "ls", "/"}, Cwd: "/"}, "")
	if diff := cmp.Diff("bin\ndev\netc\nlost+found\nnew\nproc\ntmp\n", out); diff != "" {
		t.Errorf("ls / after the write: (-want +got)\n%s", diff)
	}
	if err := m.Remove(ctx, "blk"); err != nil {
		t.Fatal(err)
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mi), m.dir) {
		t.Errorf("mounts under %s remain after Remove:\n%s", m.dir, mi)
	}
	if b, err := exec.Command("debugfs", "-R", "ls -l /", img).CombinedOutput(); err == nil && strings.Contains(string(b), " new") {
		t.Errorf("the write reached the read-only image:\n%s", b)
	}
}

func TestCreateRejects(t *testing.T) {
	needRoot(t)
	root := rootDir(t)
	if err := os.Symlink("/", filepath.Join(root, "escape")); err != nil {
		t.Fatal(err)
	}
	escape := testSpec("/bin/prog")
	escape.Mounts = append(escape.Mounts, specs.Mount{Destination: "/escape/x", Type: "tmpfs", Source: "tmpfs"})
	tests := []struct {
		name   string
		id     string
		spec   []byte
		rootfs Rootfs
	}{
		{"bad json", "a", []byte("{"), Rootfs{Directory: root}},
		{"no args", "a", mustJSON(t, testSpec()), Rootfs{Directory: root}},
		{"id with slash", "../a", mustJSON(t, testSpec("/bin/prog")), Rootfs{Directory: root}},
		{"no rootfs", "a", mustJSON(t, testSpec("/bin/prog")), Rootfs{}},
		{"relative dir", "a", mustJSON(t, testSpec("/bin/prog")), Rootfs{Directory: "root"}},
		{"bad fstype", "a", mustJSON(t, testSpec("/bin/prog")), Rootfs{Device: "/dev/null", FSType: "xfs"}},
		{"symlink mount", "a", mustJSON(t, escape), Rootfs{Directory: root}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := newManager(t)
			if err := m.Create(context.Background(), tc.id, tc.spec, tc.rootfs); !errors.Is(err, ErrInvalid) {
				t.Errorf("Create = %v, want ErrInvalid", err)
			}
			if ents, _ := os.ReadDir(m.dir); len(ents) != 0 {
				t.Errorf("state left behind: %v", ents)
			}
		})
	}
}

func TestMountOptions(t *testing.T) {
	tests := []struct {
		opts      []string
		flags     uintptr
		prop      uintptr
		data      string
		wantFlags string
	}{
		{opts: []string{"nosuid", "noexec", "nodev"}, flags: unix.MS_NOSUID | unix.MS_NOEXEC | unix.MS_NODEV},
		{opts: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}, flags: unix.MS_NOSUID | unix.MS_STRICTATIME, data: "mode=755,size=65536k"},
		{opts: []string{"rbind", "rprivate", "ro"}, flags: unix.MS_BIND | unix.MS_REC | unix.MS_RDONLY, prop: unix.MS_PRIVATE | unix.MS_REC},
		{opts: []string{"ro", "rw"}, flags: 0},
		{opts: nil},
	}
	for _, tc := range tests {
		flags, prop, data := mountOptions(tc.opts)
		if diff := cmp.Diff([]any{tc.flags, tc.prop, tc.data}, []any{flags, prop, data}); diff != "" {
			t.Errorf("mountOptions(%q): (-want +got)\n%s", tc.opts, diff)
		}
	}
}

func TestParseStat(t *testing.T) {
	tests := []struct {
		in      string
		want    procStat
		wantErr bool
	}{
		{in: "42 (prog) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 100 1000000 250 18446744073709551615",
			want: procStat{utime: 7, stime: 3, rssPages: 250}},
		{in: "42 (a) b) (c) R 1 42 42 0 -1 0 0 0 0 0 1 2 0 0 20 0 1 0 100 1000 -1 0", want: procStat{utime: 1, stime: 2}},
		{in: "42 (short) S 1 2", wantErr: true},
		{in: "no paren", wantErr: true},
		{in: "42 (x) S 1 42 42 0 -1 0 0 0 0 0 x 2 0 0 20 0 1 0 100 1000 5 0", wantErr: true},
	}
	for _, tc := range tests {
		got, err := parseStat([]byte(tc.in))
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("parseStat(%q) = %+v, %v; want %+v, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

// TestStarter runs processes through an injected Starter that reaps by
// PID, as the agent's reaper does when it is PID 1.
func TestStarter(t *testing.T) {
	needRoot(t)
	root := rootDir(t)
	var started int
	m, err := New(Options{Dir: filepath.Join(t.TempDir(), "state"), Start: func(cmd *exec.Cmd) (<-chan syscall.WaitStatus, error) {
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		started++
		ch := make(chan syscall.WaitStatus, 1)
		go func() {
			var ws syscall.WaitStatus
			syscall.Wait4(cmd.Process.Pid, &ws, 0, nil)
			ch <- ws
		}()
		return ch, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close(context.Background())
	if err := m.Create(context.Background(), "c", mustJSON(t, testSpec("/bin/prog", "exit", "4")), Rootfs{Directory: root}); err != nil {
		t.Fatal(err)
	}
	if _, _, status := run(t, m, "c", "", nil, ""); status != 4 || started != 1 {
		t.Errorf("status %d after %d starts; want 4 after 1", status, started)
	}
}

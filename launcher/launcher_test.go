package launcher

import (
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/greatjail/cvm/attestation/snpmeasure"
	"github.com/greatjail/cvm/kbs/pki"
	"github.com/greatjail/cvm/launcher/engine"
	"github.com/greatjail/cvm/vmm"
)

// repoRoot is the repository's top directory.
func repoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// writeCA writes a fresh CA certificate (PEM) into dir and returns its path.
func writeCA(t testing.TB, dir, name string) string {
	t.Helper()
	ca, err := pki.NewCA(rand.Reader, time.Now(), name)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name+".pem")
	if err := os.WriteFile(p, ca.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestValidate(t *testing.T) {
	d := t.TempDir()
	ca := writeCA(t, d, "ca")
	disk := filepath.Join(d, "disk.img")
	os.WriteFile(disk, make([]byte, 4096), 0o600)
	notPEM := filepath.Join(d, "not.pem")
	os.WriteFile(notPEM, []byte("hello"), 0o644)
	keyPEM := filepath.Join(d, "key.pem")
	os.WriteFile(keyPEM, []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o644)
	simDir := filepath.Join(d, "sim")
	os.Mkdir(simDir, 0o700)
	os.WriteFile(filepath.Join(simDir, "vcek.key"), []byte("x"), 0o600)
	emptyDir := filepath.Join(d, "empty")
	os.Mkdir(emptyDir, 0o700)
	good := Spec{Disk: disk, KBS: "127.0.0.1:8443", KBSCA: ca, Resource: "disk-key",
		Entrypoint: "/bin/hello", TEE: "sim", SimDir: simDir}
	for _, tc := range []struct {
		name string
		edit func(*Spec)
		want string // substring of the error; "" means valid
	}{
		{"good", func(*Spec) {}, ""},
		{"snp needs no sim dir", func(s *Spec) { s.TEE, s.SimDir = "snp", "" }, ""},
		{"no disk", func(s *Spec) { s.Disk = "" }, "--disk FILE is required"},
		{"missing disk", func(s *Spec) { s.Disk = filepath.Join(d, "nope") }, "--disk " + filepath.Join(d, "nope")},
		{"disk is a dir", func(s *Spec) { s.Disk = d }, "not a regular file"},
		{"missing kernel", func(s *Spec) { s.Kernel = filepath.Join(d, "vmlinuz") }, "--kernel"},
		{"no kbs", func(s *Spec) { s.KBS = "" }, "--kbs HOST:PORT is required"},
		{"kbs without port", func(s *Spec) { s.KBS = "127.0.0.1" }, "want HOST:PORT"},
		{"kbs bad port", func(s *Spec) { s.KBS = "h:99999" }, "not 1..65535"},
		{"kbs no host", func(s *Spec) { s.KBS = ":8443" }, "host is empty"},
		{"no ca", func(s *Spec) { s.KBSCA = "" }, "--kbs-ca FILE is required"},
		{"missing ca", func(s *Spec) { s.KBSCA = filepath.Join(d, "none.pem") }, "--kbs-ca"},
		{"ca not pem", func(s *Spec) { s.KBSCA = notPEM }, "is not PEM"},
		{"ca is a key", func(s *Spec) { s.KBSCA = keyPEM }, `PEM block "PRIVATE KEY"`},
		{"no resource", func(s *Spec) { s.Resource = "" }, "--resource NAME is required"},
		{"no entrypoint", func(s *Spec) { s.Entrypoint = "" }, "--entrypoint PATH is required"},
		{"relative entrypoint", func(s *Spec) { s.Entrypoint = "bin/hello" }, "not an absolute path"},
		{"no tee", func(s *Spec) { s.TEE = "" }, "--tee is required"},
		{"bad tee", func(s *Spec) { s.TEE = "sgx" }, `--tee "sgx"`},
		{"sim without dir", func(s *Spec) { s.SimDir = "" }, "cvm attest sim init"},
		{"sim dir missing", func(s *Spec) { s.SimDir = filepath.Join(d, "nosim") }, "cvm attest sim init"},
		{"sim dir not initialised", func(s *Spec) { s.SimDir = emptyDir }, "cvm attest sim init"},
		{"sim dir with snp", func(s *Spec) { s.TEE = "snp" }, "only for --tee sim"},
		{"bad engine", func(s *Spec) { s.Engine = "xen" }, `--engine "xen"`},
		{"vcpus", func(s *Spec) { s.VCPUs = 256 }, "--vcpus 256"},
		{"memory not MiB", func(s *Spec) { s.Memory = 512<<20 + 4096 }, "--memory"},
		{"memory tiny", func(s *Spec) { s.Memory = 16 << 20 }, "--memory"},
		{"state dir is a file", func(s *Spec) { s.StateDir = disk }, "--state-dir"},
	} {
		s := good
		tc.edit(&s)
		err := s.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: Validate = %v, want nil", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: Validate = %v, want an error containing %q", tc.name, err, tc.want)
		case err != nil && !errors.Is(err, ErrInvalid):
			t.Errorf("%s: Validate = %v, does not wrap ErrInvalid", tc.name, err)
		case err != nil && ExitCode(err) != ExitLaunchFailed:
			t.Errorf("%s: ExitCode = %d, want %d", tc.name, ExitCode(err), ExitLaunchFailed)
		}
	}
}

func TestExitCode(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{nil, 0},
		{ErrDenied, ExitDenied},
		{ErrUnreachable, ExitLaunchFailed},
		{ErrInvalid, ExitLaunchFailed},
		{errors.New("engine"), ExitLaunchFailed},
	} {
		if got := ExitCode(tc.err); got != tc.want {
			t.Errorf("ExitCode(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
	if !errors.Is(ErrUnreachable, ErrLaunch) {
		t.Error("ErrUnreachable does not wrap ErrLaunch")
	}
}

// testKernel returns a Debian cloud kernel from .cache/inputs (with its
// module tree), or skips.
func testKernel(t testing.TB) string {
	t.Helper()
	for _, rel := range []string{"6.12.117+deb13-cloud-amd64", "6.1.0-56-cloud-amd64"} {
		p := filepath.Join(repoRoot(t), ".cache", "inputs", "vmlinuz-"+rel)
		if _, err := os.Stat(filepath.Join(repoRoot(t), ".cache", "inputs", "modules", rel)); err != nil {
			continue
		}
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Skip("no guest kernel with modules in .cache/inputs (run 'make test-inputs')")
	return ""
}

var (
	buildMu    sync.Mutex
	buildCache = map[string]string{}
)

// goBuild builds the static binary of pkg (relative to the repository)
// once per test binary and returns its path.
func goBuild(t testing.TB, pkg string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := buildCache[pkg]; ok {
		return p
	}
	dir, err := os.MkdirTemp("", "cvm-launcher-test")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, pkg)
	cmd.Dir = repoRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	buildCache[pkg] = out
	return out
}

// testAgent builds cmd/cvm-agent, or skips if it is not in the tree yet.
func testAgent(t testing.TB) string {
	t.Helper()
	if _, err := os.Stat(filepath.Join(repoRoot(t), "cmd", "cvm-agent")); err != nil {
		t.Skip("cmd/cvm-agent is not in the tree")
	}
	return goBuild(t, "./cmd/cvm-agent")
}

func TestBuildReproducible(t *testing.T) {
	k := testKernel(t)
	// Any static binary does as /init for building and measuring.
	agent := goBuild(t, "./internal/demo/hello")
	d := t.TempDir()
	s := Spec{Kernel: k, Agent: agent, KBSCA: writeCA(t, d, "ca"), Resource: "disk-key",
		Entrypoint: "/bin/hello", Args: []string{"a", "b c"}, TEE: "sim"}
	a, err := Build(s)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Build(s)
	if err != nil {
		t.Fatal(err)
	}
	if string(a.Initramfs) != string(b.Initramfs) || a.Digest != b.Digest {
		t.Error("two builds of the same spec differ")
	}
	m, err := Measure(s)
	if err != nil {
		t.Fatal(err)
	}
	if m.Digest() != a.DigestHex() || len(m.Digest()) != 96 {
		t.Errorf("Measure = %s, Build = %s: want the same 96 hex digits", m.Digest(), a.DigestHex())
	}
	// Every measured input changes the digest.
	for name, edit := range map[string]func(*Spec){
		"entrypoint": func(s *Spec) { s.Entrypoint = "/bin/other" },
		"args":       func(s *Spec) { s.Args = []string{"a"} },
		"resource":   func(s *Spec) { s.Resource = "other" },
		"ca":         func(s *Spec) { s.KBSCA = writeCA(t, d, "other") },
		"vcpus":      func(s *Spec) { s.VCPUs = 2 },
		"memory":     func(s *Spec) { s.Memory = 1 << 30 },
		"tee":        func(s *Spec) { s.TEE = "snp" },
	} {
		s2 := s
		edit(&s2)
		c, err := Build(s2)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if c.Digest == a.Digest {
			t.Errorf("changing the %s left the digest unchanged", name)
		}
	}
}

func TestBuildNoAgent(t *testing.T) {
	d := t.TempDir()
	s := Spec{Agent: filepath.Join(d, "cvm-agent"), KBSCA: writeCA(t, d, "ca"), Resource: "r", Entrypoint: "/x", TEE: "sim", Kernel: testKernel(t)}
	if _, err := Build(s); err == nil || !strings.Contains(err.Error(), "CVM_AGENT") {
		t.Errorf("Build with a missing agent = %v, want an error naming $CVM_AGENT", err)
	}
	if _, err := FindAgent(""); err == nil || !strings.Contains(err.Error(), "make build") {
		t.Errorf("findAgent = %v, want an error saying 'make build'", err)
	}
}

func TestCheckStatic(t *testing.T) {
	// The test binary itself is an ELF; /bin/sh is dynamically linked.
	sh, err := os.ReadFile("/bin/sh")
	if err != nil {
		t.Skip("no /bin/sh")
	}
	if err := checkStatic("/bin/sh", sh); err == nil || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
		t.Errorf("checkStatic(/bin/sh) = %v, want dynamically linked", err)
	}
	if err := checkStatic("x", []byte("#!/bin/sh\n")); err == nil {
		t.Error("checkStatic(script) = nil")
	}
}

// TestBuiltinRunsTheMeasuredPlan: what the builtin engine hands vmm.Run
// (real disk and socket paths) has the plan Build measured.
func TestBuiltinRunsTheMeasuredPlan(t *testing.T) {
	k := testKernel(t)
	d := t.TempDir()
	s := Spec{Kernel: k, Agent: goBuild(t, "./internal/demo/hello"), KBSCA: writeCA(t, d, "ca"), Resource: "r",
		Entrypoint: "/bin/hello", TEE: "sim", VCPUs: 2, Memory: 256 << 20}
	l, err := Build(s)
	if err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(d, InitramfsOut)
	os.WriteFile(initrd, l.Initramfs, 0o600)
	cfg, err := engine.Builtin{}.Config(engine.Machine{Kernel: l.Kernel.Path, Initrd: initrd, Cmdline: l.Cmdline,
		VCPUs: l.VCPUs, Memory: l.Memory, Disk: filepath.Join(d, "some-disk.img"), LinkSocket: filepath.Join(d, "v.sock")})
	if err != nil {
		t.Fatal(err)
	}
	p, err := vmm.Plan(cfg)
	if err != nil {
		t.Fatal(err)
	}
	got, err := snpmeasure.PlanDigest(p)
	if err != nil {
		t.Fatal(err)
	}
	if got != l.Digest {
		t.Errorf("the builtin engine's plan digest %x differs from the measured %x", got, l.Digest)
	}
}

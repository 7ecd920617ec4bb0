package launcher

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/xts"

	"github.com/greatjail/cvm/attestation/attestcmd"
	"github.com/greatjail/cvm/kbs/kbscmd"
	"github.com/greatjail/cvm/launcher/image"
)

// The vm tier: real launches under QEMU (TCG here). One broker, one sim
// authority and the disks are shared by every case; each case is one boot.

// e2e is the shared setup of the launch tests.
type e2e struct {
	dir     string
	kernel  string
	agent   string
	simDir  string
	kbsAddr string
	kbsCA   string
	admin   *kbscmd.Admin
	// disk is an encrypted disk holding /bin/hello; its key is the broker
	// resource "disk-key".
	disk string
}

// e2eSetup builds everything or skips naming what is missing.
func e2eSetup(t testing.TB) *e2e {
	t.Helper()
	if testing.Short() {
		t.Skip("tier vm: -short")
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("tier vm: qemu-system-x86_64 not found (install the Debian package qemu-system-x86)")
	}
	for _, tool := range []string{"mkfs.ext4", "cryptsetup"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("tier vm: %s not found (Debian packages e2fsprogs, cryptsetup)", tool)
		}
	}
	e := &e2e{dir: t.TempDir(), kernel: testKernel(t), agent: testAgent(t)}
	hello := goBuild(t, "./internal/demo/hello")

	// The simulated TEE and a broker that trusts it.
	e.simDir = filepath.Join(e.dir, "sim")
	root, err := attestcmd.SimInit(e.simDir, rand.Reader, time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	e.kbsAddr = freeAddr(t)
	kdir := filepath.Join(e.dir, "kbs")
	if err := kbscmd.Init(kbscmd.InitOptions{Dir: kdir, Listen: e.kbsAddr, SimRoot: root, Out: io.Discard}); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(kdir, "kbs.yaml")
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "metrics_listen:") {
			l = `metrics_listen: "off"`
		}
		lines = append(lines, l)
	}
	os.WriteFile(cfg, []byte(strings.Join(lines, "\n")), 0o600)
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	served := make(chan error, 1)
	go func() {
		served <- kbscmd.Serve(ctx, cfg, io.Discard, func(string, string) { close(ready) })
	}()
	t.Cleanup(func() { cancel(); <-served })
	select {
	case <-ready:
	case err := <-served:
		t.Fatalf("broker: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("broker not ready after 30 s")
	}
	e.kbsCA = filepath.Join(kdir, "ca.pem")
	conn, err := kbscmd.DialAdmin(filepath.Join(kdir, "admin.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	e.admin = &kbscmd.Admin{Conn: conn, Out: io.Discard}

	// The disk (cvm image encrypt) and its key in the broker.
	rootfs := filepath.Join(e.dir, "rootfs")
	os.MkdirAll(filepath.Join(rootfs, "bin"), 0o755)
	copyFile(t, hello, filepath.Join(rootfs, "bin", "hello"))
	os.Chmod(filepath.Join(rootfs, "bin", "hello"), 0o755)
	e.disk = filepath.Join(e.dir, "disk.img")
	keyFile := filepath.Join(e.dir, "disk-key.key")
	if _, err := image.Encrypt(context.Background(), image.Options{RootFS: rootfs, Out: e.disk, KeyOut: keyFile}); err != nil {
		t.Fatal(err)
	}
	if err := e.admin.ResourcePut(context.Background(), "disk-key", keyFile); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *e2e) putKey(t testing.TB, name string, key []byte) {
	t.Helper()
	f := filepath.Join(e.dir, name+".key")
	if err := os.WriteFile(f, key, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.admin.ResourcePut(context.Background(), name, f); err != nil {
		t.Fatal(err)
	}
}

// freeAddr returns a loopback address nobody listens on right now.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// spec is the launch every case starts from.
func (e *e2e) spec(t testing.TB) Spec {
	return Spec{
		Kernel: e.kernel, Agent: e.agent, Disk: e.disk, KBS: e.kbsAddr, KBSCA: e.kbsCA,
		Resource: "disk-key", Entrypoint: "/bin/hello", TEE: "sim", SimDir: e.simDir,
		Engine: "qemu", StateDir: filepath.Join(t.TempDir(), "state"),
	}
}

// register adds the measurement of s to the broker's reference values.
func (e *e2e) register(t testing.TB, s Spec) {
	t.Helper()
	m, err := Measure(s)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.admin.RefValueAdd(context.Background(), "sim", m.Digest(), t.Name()); err != nil {
		t.Fatal(err)
	}
}

// launched is what one launch printed and returned.
type launched struct {
	res            *Result
	err            error
	stdout, stderr string
}

func launch(t *testing.T, s Spec) launched {
	t.Helper()
	var so, se bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := Run(ctx, s, IO{Stdout: &so, Stderr: &se})
	l := launched{res, err, so.String(), se.String()}
	t.Logf("launch: exit %d, err %v, engine %s/%s, build %v boot %v attest %v fetch %v unlock %v first output %v",
		res.ExitCode, err, res.Engine, res.Accel, res.Build, res.Boot, res.Attest, res.Fetch, res.Unlock, res.FirstOutput)
	return l
}

// logs prints the state directory's logs (on failure).
func logs(t *testing.T, s Spec) {
	t.Helper()
	for _, f := range []string{ConsoleLog, AgentLog, EngineLog} {
		b, _ := os.ReadFile(filepath.Join(s.StateDir, f))
		t.Logf("--- %s:\n%s", f, b)
	}
}

func TestLaunch(t *testing.T) {
	e := e2eSetup(t)

	t.Run("output and exit code", func(t *testing.T) {
		s := e.spec(t)
		s.Args = []string{"--exit", "7", "tenant"}
		e.register(t, s)
		l := launch(t, s)
		if l.err != nil {
			logs(t, s)
			t.Fatalf("launch: %v\nstderr:\n%s", l.err, l.stderr)
		}
		if l.res.ExitCode != 7 {
			t.Errorf("exit code %d, want the workload's 7", l.res.ExitCode)
		}
		if want := "hello, tenant, from inside the confidential microVM\n"; l.stdout != want {
			t.Errorf("stdout = %q, want %q", l.stdout, want)
		}
		if !strings.Contains(l.stderr, "hello: exiting with 7") {
			t.Errorf("stderr lacks the workload's stderr:\n%s", l.stderr)
		}
		for _, step := range []string{"building the launch", "booting (engine qemu", "attesting to", "running /bin/hello"} {
			if !strings.Contains(l.stderr, step) {
				t.Errorf("stderr lacks the progress line %q:\n%s", step, l.stderr)
			}
		}
	})

	// The measurement covers the entrypoint and its arguments: a launch
	// whose measurement the broker does not know gets no key.
	for _, tc := range []struct {
		name string
		edit func(*Spec)
	}{
		{"changed entrypoint denied", func(s *Spec) { s.Entrypoint = "/bin/hello2" }},
		{"changed args denied", func(s *Spec) { s.Args = []string{"--exit", "7", "intruder"} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := e.spec(t)
			tc.edit(&s)
			l := launch(t, s)
			if !errors.Is(l.err, ErrDenied) || ExitCode(l.err) != ExitDenied {
				logs(t, s)
				t.Fatalf("launch = %v (exit %d), want ErrDenied (%d)", l.err, ExitCode(l.err), ExitDenied)
			}
			if l.stdout != "" {
				t.Errorf("a denied guest printed %q", l.stdout)
			}
		})
	}

	t.Run("broker unreachable", func(t *testing.T) {
		s := e.spec(t)
		s.KBS = freeAddr(t) // nobody listens
		l := launch(t, s)
		if !errors.Is(l.err, ErrUnreachable) || ExitCode(l.err) != ExitLaunchFailed {
			logs(t, s)
			t.Fatalf("launch = %v, want ErrUnreachable (exit %d)", l.err, ExitLaunchFailed)
		}
		if !strings.Contains(l.err.Error(), s.KBS) {
			t.Errorf("error %q does not name the broker %s", l.err, s.KBS)
		}
	})

	// A launch that pins another CA than the broker's: the guest's TLS
	// handshake fails (the measurement is registered, so only the CA is
	// wrong). Exit 125, and the message says the broker's identity did
	// not verify.
	t.Run("wrong broker CA", func(t *testing.T) {
		s := e.spec(t)
		s.KBSCA = writeCA(t, t.TempDir(), "impostor")
		e.register(t, s)
		l := launch(t, s)
		if l.err == nil || errors.Is(l.err, ErrDenied) || ExitCode(l.err) != ExitLaunchFailed {
			logs(t, s)
			t.Fatalf("launch = %v (exit %d), want a launch failure (%d)", l.err, ExitCode(l.err), ExitLaunchFailed)
		}
		if errors.Is(l.err, ErrUnreachable) || !strings.Contains(l.err.Error(), "--kbs-ca") || !strings.Contains(l.err.Error(), "certificate") {
			t.Errorf("error %q: want one that is not 'unreachable', points at --kbs-ca and carries the guest's certificate error", l.err)
		}
	})

	t.Run("tampered LUKS2 header", func(t *testing.T) {
		s := e.spec(t)
		s.Disk = filepath.Join(t.TempDir(), "tampered.img")
		copyFile(t, e.disk, s.Disk)
		// Flip a byte of the JSON area of both header copies (primary at
		// 0, secondary at 16 KiB): neither checksum matches any more.
		f, err := os.OpenFile(s.Disk, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, off := range []int64{4096 + 16, 16384 + 4096 + 16} {
			f.WriteAt([]byte{'X'}, off)
		}
		f.Close()
		e.register(t, s)
		l := launch(t, s)
		if l.err == nil || ExitCode(l.err) != ExitLaunchFailed || !strings.Contains(l.err.Error(), "disk") {
			logs(t, s)
			t.Fatalf("launch = %v (exit %d), want a disk error (%d)", l.err, ExitCode(l.err), ExitLaunchFailed)
		}
	})

	// A disk cryptsetup made, with its default keyslot kind (argon2id),
	// which the guest never needs: it checks the released key against the
	// volume-key digest.
	t.Run("cryptsetup luksFormat disk", func(t *testing.T) {
		key := make([]byte, 64)
		rand.Read(key)
		s := e.spec(t)
		s.Disk = filepath.Join(t.TempDir(), "cryptsetup.img")
		makeCryptsetupDisk(t, s.Disk, key, map[string]string{"bin/hello": goBuild(t, "./internal/demo/hello")},
			"--pbkdf", "argon2id", "--pbkdf-memory", "32768", "--pbkdf-force-iterations", "4", "--pbkdf-parallel", "1")
		e.putKey(t, "cryptsetup-key", key)
		s.Resource = "cryptsetup-key"
		s.Args = []string{"cryptsetup"}
		e.register(t, s)
		l := launch(t, s)
		if l.err != nil || l.res.ExitCode != 0 {
			logs(t, s)
			t.Fatalf("launch: exit %d, %v\n%s", l.res.ExitCode, l.err, l.stderr)
		}
		if want := "hello, cryptsetup, from inside the confidential microVM\n"; l.stdout != want {
			t.Errorf("stdout = %q, want %q", l.stdout, want)
		}
	})
}

func copyFile(t testing.TB, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// dataOffset is where the encrypted data starts in the disks the tests
// make with cryptsetup: 16 MiB, in 512-byte sectors.
const dataOffset = 32768

var mkfsMu sync.Mutex

// makeCryptsetupDisk makes a LUKS2 disk with `cryptsetup luksFormat` (on a
// plain file: no device-mapper needed) whose volume key is key, and fills
// its data area with an ext4 file system holding files (path in the file
// system → file on the host), encrypted here with aes-xts-plain64 under the
// same key, as dm-crypt would have written it.
func makeCryptsetupDisk(t testing.TB, out string, key []byte, files map[string]string, pbkdf ...string) {
	t.Helper()
	mkfsMu.Lock()
	defer mkfsMu.Unlock()
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	for dst, src := range files {
		p := filepath.Join(root, dst)
		os.MkdirAll(filepath.Dir(p), 0o755)
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	fs := filepath.Join(dir, "fs.img")
	runTool(t, "mkfs.ext4", "-q", "-F", "-E", "root_owner=0:0", "-d", root, fs, "16M")
	plain, err := os.ReadFile(fs)
	if err != nil {
		t.Fatal(err)
	}
	vk := filepath.Join(dir, "vk.bin")
	os.WriteFile(vk, key, 0o600)
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(dataOffset*512 + int64(len(plain)))
	f.Close()
	if len(pbkdf) == 0 {
		pbkdf = []string{"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"}
	}
	runTool(t, "cryptsetup", append(append([]string{"luksFormat"}, pbkdf...), "--type", "luks2", "--batch-mode", "--cipher", "aes-xts-plain64",
		"--key-size", "512", "--sector-size", "512", "--volume-key-file", vk, "--key-file", vk,
		"--offset", fmt.Sprint(dataOffset), out)...)
	c, err := xts.NewCipher(aes.NewCipher, key)
	if err != nil {
		t.Fatal(err)
	}
	enc := make([]byte, len(plain))
	for i := 0; i < len(plain); i += 512 {
		c.Encrypt(enc[i:i+512], plain[i:i+512], uint64(i/512))
	}
	f, err = os.OpenFile(out, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(enc, dataOffset*512); err != nil {
		t.Fatal(err)
	}
}

func runTool(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

package builtintest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/greatjail/cvm/internal/testhost"
	"github.com/greatjail/cvm/internal/testhost/wire"
)

var logPath = flag.String("builtintest.log", "", "also write the test host's console to this `file`")

// limit bounds the whole test host run: QEMU TCG is slow and the machine
// may be shared, so it is generous; nothing asserts on time.
const limit = 25 * time.Minute

// In the test host: its own loopback, so any port is free.
const (
	kbsAddr = "127.0.0.1:18443"
	inside  = "/cvm" // where the launch inputs live in the test host
	memory  = "256M"
)

// TestBuiltinLaunch runs the launcher's cases on the builtin engine inside
// one boot of the QEMU TCG test host, with a measurement computed here.
func TestBuiltinLaunch(t *testing.T) {
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
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("tier vm: mkfs.ext4 not found (Debian package e2fsprogs), needed by cvm image encrypt")
	}
	tmp := t.TempDir()
	build := func(pkg string) string {
		out := filepath.Join(tmp, "bin", filepath.Base(pkg))
		if err := testhost.BuildGo(root, pkg, out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	cvm, kbs, agent := build("./cmd/cvm"), build("./cmd/cvm-kbs"), build("./cmd/cvm-agent")
	hello, initBin := build("./internal/demo/hello"), build("./launcher/builtintest/launchinit")
	run := func(env []string, argv ...string) []byte {
		t.Helper()
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.Output()
		if err != nil {
			var stderr []byte
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = ee.Stderr
			}
			t.Fatalf("%s: %v\n%s%s", strings.Join(argv, " "), err, out, stderr)
		}
		return out
	}

	// The tenant's side, on this machine, with the CLI (as scripts/demo.sh):
	// a simulated TEE, a broker state that trusts it, the disk and the
	// measurement of the launch that must succeed.
	state := filepath.Join(tmp, "state")
	run(nil, cvm, "attest", "sim", "init", "--dir", filepath.Join(state, "sim"))
	run(nil, kbs, "init", "--dir", filepath.Join(state, "kbs"), "--listen", kbsAddr, "--sim-root", filepath.Join(state, "sim", "root.pem"))
	kbsYAML := filepath.Join(state, "kbs", "kbs.yaml")
	y, err := os.ReadFile(kbsYAML)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(string(y), "\n") {
		if strings.HasPrefix(l, "metrics_listen:") {
			l = `metrics_listen: "off"`
		}
		lines = append(lines, l)
	}
	if err := os.WriteFile(kbsYAML, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	rootfs := filepath.Join(tmp, "rootfs")
	if err := os.MkdirAll(filepath.Join(rootfs, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	hb, err := os.ReadFile(hello)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin", "hello"), hb, 0o755); err != nil {
		t.Fatal(err)
	}
	run(nil, cvm, "image", "encrypt", "--rootfs", rootfs, "--out", filepath.Join(state, "disk.img"), "--key-out", filepath.Join(state, "disk.key"))
	measured := []string{"--kbs-ca", filepath.Join(state, "kbs", "ca.pem"), "--resource", "demo/disk-key", "--entrypoint", "/bin/hello", "--memory", memory}
	args := []string{"--arg", "--exit", "--arg", "7", "--arg", "tenant"}
	m := run([]string{"CVM_AGENT=" + agent}, append(append([]string{cvm, "measure", "launch", "--kernel", k.Image, "--json"}, measured...), args...)...)
	if err := os.WriteFile(filepath.Join(state, "measurement.json"), m, 0o644); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		LaunchDigest string `json:"launch_digest"`
	}
	if err := json.Unmarshal(m, &doc); err != nil || len(doc.LaunchDigest) != 96 {
		t.Fatalf("cvm measure launch --json printed no 96-digit launch_digest (%v):\n%s", err, m)
	}
	t.Logf("measured here: %s", doc.LaunchDigest)
	rule := `claims.tee == "sim" && !claims.debug && appraisal.status == "affirming"` + "\n"
	if err := os.WriteFile(filepath.Join(state, "rule.cel"), []byte(rule), 0o644); err != nil {
		t.Fatal(err)
	}

	// The test host's files: the binaries, the guest kernel with its
	// module tree, and the state above under /cvm.
	files := map[string][]byte{}
	add := func(dst, src string) {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		files[dst] = b
	}
	add("/bin/cvm", cvm)
	add("/bin/cvm-kbs", kbs)
	add("/bin/cvm-agent", agent)
	kernelIn := inside + "/vmlinuz-" + k.Release
	add(kernelIn, k.Image)
	addTree := func(dstDir, srcDir string) {
		err := filepath.WalkDir(srcDir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			rel, _ := filepath.Rel(srcDir, p)
			add(dstDir+"/"+filepath.ToSlash(rel), p)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	addTree(inside+"/modules/"+k.Release, k.Modules) // kernel.Open finds <dir of the image>/modules/<release>
	addTree(inside, state)

	admin := []string{"/bin/cvm", "kbs", "--admin-config", inside + "/kbs/admin.yaml"}
	launch := func(name string, edit func(argv []string) []string, kbs string) Case {
		sd := "/tmp/launch-" + name
		argv := []string{"/bin/cvm", "launch", "--engine", "builtin", "--kernel", kernelIn,
			"--disk", inside + "/disk.img", "--kbs", kbs, "--tee", "sim", "--sim-dir", inside + "/sim", "--state-dir", sd,
			"--kbs-ca", inside + "/kbs/ca.pem", "--resource", "demo/disk-key", "--entrypoint", "/bin/hello", "--memory", memory}
		return Case{Name: name, Argv: edit(append(argv, args...)), StateDir: sd}
	}
	same := func(a []string) []string { return a }
	cfg := Config{
		Env:    []string{"CVM_AGENT=/bin/cvm-agent", "HOME=/tmp"},
		Broker: []string{"/bin/cvm-kbs", "serve", "--config", inside + "/kbs/kbs.yaml"},
		Ready:  append(append([]string{}, admin...), "resource", "list"),
		Setup: [][]string{
			append(append([]string{}, admin...), "refvalue", "import", inside+"/measurement.json"),
			append(append([]string{}, admin...), "resource", "put", "demo/disk-key", "--file", inside+"/disk.key"),
			append(append([]string{}, admin...), "policy", "set", "demo/disk-key", "--file", inside+"/rule.cel"),
		},
		Cases: []Case{
			launch("success", same, kbsAddr),
			launch("changed-arg-denied", func(a []string) []string {
				a[len(a)-1] = "intruder"
				return a
			}, kbsAddr),
			launch("broker-unreachable", same, "127.0.0.1:1"),
		},
	}
	cj, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	files[ConfigPath] = cj
	ib, err := os.ReadFile(initBin)
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
	_, bootErr := testhost.BootHost(ctx, testhost.BootOptions{QEMU: qemu, Kernel: k.Image, Initrd: irdPath, Log: log,
		// The test host sometimes freezes (QEMU 7.2 TCG loses a timer
		// interrupt's wakeup; docs/testing.md): revive it.
		Unfreeze: true})
	results, perr := parse(log.String())
	if perr != nil {
		t.Error(perr)
	}
	if bootErr != nil {
		t.Error(bootErr)
	}
	if bootErr != nil || perr != nil || t.Failed() {
		t.Logf("test host console (last lines):\n%s", log.Tail(300))
	}

	for _, tc := range []struct {
		name     string
		exit     int
		stdout   string
		stderrIn []string
	}{
		// The launch in the test host measured itself as here, and the
		// broker, which knows only this digest, released the key.
		{"success", 7, "hello, tenant, from inside the confidential microVM\n",
			[]string{"hello: exiting with 7", "booting (engine builtin", "measurement " + doc.LaunchDigest[:16]}},
		{"changed-arg-denied", 126, "", []string{"denied"}},
		{"broker-unreachable", 125, "", []string{"unreachable", "127.0.0.1:1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, ok := results[tc.name]
			if !ok {
				t.Fatalf("no %q line for %s on the test host's console", wire.HostPrefix+LaunchWord, tc.name)
			}
			t.Logf("in the test host: exit %d after %.1fs", r.ExitCode, r.Seconds)
			if r.ExitCode != tc.exit || r.Err != "" {
				t.Errorf("cvm launch exited %d (%s), want %d\nstderr:\n%s", r.ExitCode, r.Err, tc.exit, r.Stderr)
			}
			if r.Stdout != tc.stdout {
				t.Errorf("stdout = %q, want %q", r.Stdout, tc.stdout)
			}
			for _, s := range tc.stderrIn {
				if !strings.Contains(r.Stderr, s) {
					t.Errorf("stderr lacks %q:\n%s", s, r.Stderr)
				}
			}
		})
	}
}

// parse returns the launch results on the test host's console, by name.
func parse(console string) (map[string]Result, error) {
	res := map[string]Result{}
	s := bufio.NewScanner(strings.NewReader(console))
	s.Buffer(make([]byte, 64<<10), 4<<20)
	for s.Scan() {
		msg, ok := strings.CutPrefix(strings.TrimRight(s.Text(), "\r"), wire.HostPrefix+LaunchWord+" ")
		if !ok {
			continue
		}
		var r Result
		if err := json.Unmarshal([]byte(msg), &r); err != nil {
			return res, err
		}
		res[r.Name] = r
	}
	return res, s.Err()
}

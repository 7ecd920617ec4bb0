package main

import (
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/greatjail/cvm/kbs/pki"
	"github.com/greatjail/cvm/policy"
)

// launchInputs writes a CA and a disk and returns their paths.
func launchInputs(t *testing.T) (ca, disk string) {
	t.Helper()
	d := t.TempDir()
	c, err := pki.NewCA(rand.Reader, time.Now(), "test")
	if err != nil {
		t.Fatal(err)
	}
	ca, disk = filepath.Join(d, "ca.pem"), filepath.Join(d, "disk.img")
	os.WriteFile(ca, c.CertPEM(), 0o644)
	os.WriteFile(disk, make([]byte, 4096), 0o600)
	return ca, disk
}

// TestLaunchBadInput: bad input fails before anything starts, exit 125,
// naming the problem.
func TestLaunchBadInput(t *testing.T) {
	ca, disk := launchInputs(t)
	args := func(extra ...string) []string {
		a := []string{"launch", "--disk", disk, "--kbs", "127.0.0.1:8443", "--kbs-ca", ca, "--resource", "k", "--entrypoint", "/bin/x"}
		return append(a, extra...)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"launch"}, "--disk FILE is required"},
		{args("--tee", "sim", "--sim-dir", t.TempDir()), "cvm attest sim init"},
		{args("--tee", "sim"), "--sim-dir"},
		{args("--tee", "sgx"), `--tee "sgx"`},
		{args("--tee", "snp", "--memory", "12X"), "--memory"},
		{args("--tee", "snp", "--kbs-ca", disk), "not PEM"},
		{args("--tee", "snp", "--kbs", "localhost"), "HOST:PORT"},
		{args("--tee", "snp", "--engine", "xen"), "--engine"},
	} {
		r := cvm(t, tc.args...)
		if r.code != 125 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("cvm %v: exit %d, stderr %q; want 125 mentioning %q", tc.args, r.code, r.stderr, tc.want)
		}
	}
	// Flags cobra cannot parse are usage errors, as everywhere in cvm.
	if r := cvm(t, "launch", "--vcpus", "many"); r.code != 2 {
		t.Errorf("cvm launch --vcpus many: exit %d, want 2", r.code)
	}
}

func TestMeasureLaunch(t *testing.T) {
	ca, _ := launchInputs(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"measure", "launch"}, "--kbs-ca FILE is required"},
		{[]string{"measure", "launch", "--kbs-ca", ca, "--resource", "k", "--entrypoint", "bin/x"}, "not an absolute path"},
		{[]string{"measure", "launch", "--kbs-ca", ca, "--resource", "k", "--entrypoint", "/x", "--memory", "1000"}, "--memory"},
	} {
		r := cvm(t, tc.args...)
		if r.code != 2 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("cvm %v: exit %d, stderr %q; want 2 mentioning %q", tc.args, r.code, r.stderr, tc.want)
		}
	}

	kernel := filepath.Join(repoRoot(t), ".cache/inputs/vmlinuz-6.1.0-56-cloud-amd64")
	if _, err := os.Stat(kernel); err != nil {
		t.Skip("no guest kernel in .cache/inputs (run 'make test-inputs')")
	}
	// Any static binary stands in for the agent: only its bytes count.
	agent := filepath.Join(t.TempDir(), "cvm-agent")
	build := exec.Command("go", "build", "-o", agent, "./internal/demo/hello")
	build.Dir = repoRoot(t)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Setenv("CVM_AGENT", agent)
	args := []string{"measure", "launch", "--kernel", kernel, "--kbs-ca", ca, "--resource", "k", "--entrypoint", "/bin/x", "--arg", "a"}
	plain := cvm(t, args...)
	digest := strings.TrimSpace(plain.stdout)
	if plain.code != 0 || len(digest) != 96 {
		t.Fatalf("cvm %v: exit %d, stdout %q, stderr %q; want 96 hex digits", args, plain.code, plain.stdout, plain.stderr)
	}
	js := cvm(t, append(args, "--json")...)
	rvs, err := policy.ImportMeasurement([]byte(js.stdout))
	if err != nil || len(rvs) != 1 || rvs[0].Value.String() != digest {
		t.Errorf("ImportMeasurement(--json output) = %v, %v; want the digest %s", rvs, err, digest)
	}
	other := cvm(t, append(args, "--arg", "b")...)
	if strings.TrimSpace(other.stdout) == digest || other.code != 0 {
		t.Errorf("another argument: exit %d, digest %q; want a different digest", other.code, other.stdout)
	}
}

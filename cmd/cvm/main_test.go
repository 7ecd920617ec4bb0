package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/cobra"
)

// cvmBin is the cvm binary built once for these tests, so that exit codes
// and output are checked exactly as a user sees them.
var cvmBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cvm-cli-test")
	if err != nil {
		panic(err)
	}
	cvmBin = filepath.Join(dir, "cvm")
	out, err := exec.Command("go", "build", "-o", cvmBin, ".").CombinedOutput()
	if err != nil {
		os.Stderr.Write(out)
		panic("building cvm: " + err.Error())
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	code           int
	stdout, stderr string
}

func cvm(t *testing.T, args ...string) result {
	t.Helper()
	cmd := exec.Command(cvmBin, args...)
	cmd.Dir = repoRoot(t)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running cvm %v: %v", args, err)
	}
	return result{code, so.String(), se.String()}
}

func repoRoot(t *testing.T) string {
	t.Helper()
	d, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// claimsOf decodes the JSON claims printed on stdout.
func claimsOf(t *testing.T, r result) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &m); err != nil {
		t.Fatalf("stdout is not one JSON object: %v\n%s", err, r.stdout)
	}
	return m
}

func TestVerifyRealSNP(t *testing.T) {
	r := cvm(t, "attest", "verify", "--tee", "snp", "--report", "testdata/snp/milan-report.bin",
		"--certs", "testdata/snp/milan-vcek.der", "--offline", "--now", "2025-01-01T00:00:00Z")
	if r.code != 0 {
		t.Fatalf("exit %d, want 0; stderr:\n%s", r.code, r.stderr)
	}
	c := claimsOf(t, r)
	got := map[string]any{"tee": c["tee"], "debug": c["debug"], "report_data": c["report_data"], "product": c["product"]}
	want := map[string]any{
		"tee": "snp", "debug": true, "product": "Milan",
		"report_data": "0102030405" + strings.Repeat("0", 118),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("claims mismatch (-want +got):\n%s", diff)
	}
	if m, _ := c["measurement"].(string); len(m) != 96 || strings.ToLower(m) != m {
		t.Errorf("measurement = %q, want 96 lowercase hex digits", m)
	}
}

func TestVerifyRealSNPFromCache(t *testing.T) {
	cache := t.TempDir()
	r := cvm(t, "attest", "cache", "seed", "--cache", cache, "--report", "testdata/snp/milan-report.bin", "--certs", "testdata/snp/milan-vcek.der")
	if r.code != 0 {
		t.Fatalf("cache seed: exit %d; stderr:\n%s", r.code, r.stderr)
	}
	r = cvm(t, "attest", "verify", "--tee", "snp", "--report", "testdata/snp/milan-report.bin", "--cert-cache", cache, "--offline", "--now", "2025-01-01T00:00:00Z")
	if r.code != 0 {
		t.Fatalf("verify from cache: exit %d; stderr:\n%s", r.code, r.stderr)
	}
	// Without the cache and without --certs, offline verification cannot
	// find the VCEK and must say so.
	r = cvm(t, "attest", "verify", "--tee", "snp", "--report", "testdata/snp/milan-report.bin", "--offline", "--now", "2025-01-01T00:00:00Z")
	if r.code != 1 || !strings.Contains(strings.ToLower(r.stderr), "vcek") {
		t.Errorf("verify without VCEK: exit %d, stderr %q; want exit 1 naming the VCEK", r.code, r.stderr)
	}
}

func TestVerifyRejects(t *testing.T) {
	dir := t.TempDir()
	report, err := os.ReadFile(filepath.Join(repoRoot(t), "testdata/snp/milan-report.bin"))
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Clone(report)
	tampered[0x90] ^= 1 // a bit of MEASUREMENT
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStderr string
	}{
		{"flipped bit", []string{"--tee", "snp", "--report", write("t.bin", tampered), "--certs", "testdata/snp/milan-vcek.der", "--offline", "--now", "2025-01-01T00:00:00Z"}, 1, "signature"},
		{"expired vcek", []string{"--tee", "snp", "--report", "testdata/snp/milan-report.bin", "--certs", "testdata/snp/milan-vcek.der", "--offline", "--now", "2031-01-01T00:00:00Z"}, 1, "expired"},
		{"truncated", []string{"--tee", "snp", "--report", write("short.bin", report[:100]), "--certs", "testdata/snp/milan-vcek.der", "--offline"}, 1, "malformed"},
		{"tdx quote as snp", []string{"--tee", "snp", "--report", "testdata/tdx/spr-e4-quote.dat", "--offline"}, 1, "malformed"},
		{"tdx sample collateral", []string{"--tee", "tdx", "--report", "testdata/tdx/spr-e4-quote.dat", "--collateral", "testdata/tdx", "--now", "2023-07-01T01:00:00Z"}, 1, "tcb level"},
		{"unknown tee", []string{"--tee", "sgx", "--report", "testdata/snp/milan-report.bin"}, 2, "unknown TEE"},
		{"missing report", []string{"--tee", "snp", "--report", filepath.Join(dir, "nope.bin")}, 2, "no such file"},
		{"bad now", []string{"--tee", "snp", "--report", "testdata/snp/milan-report.bin", "--now", "yesterday"}, 2, "RFC 3339"},
		{"sim without root", []string{"--tee", "sim", "--report", "testdata/snp/milan-report.bin"}, 1, "--sim-root"},
		{"oversized", []string{"--tee", "snp", "--report", write("big.bin", make([]byte, 2<<20)), "--offline"}, 1, "too large"},
		{"huge", []string{"--tee", "tdx", "--report", write("huge.bin", make([]byte, 17<<20)), "--offline"}, 1, "too large"},
		{"sim root with snp", []string{"--tee", "snp", "--report", "testdata/snp/milan-report.bin", "--sim-root", "x.pem"}, 2, "only valid with --tee sim"},
		{"tpm without ak", []string{"--tee", "tpm", "--report", "testdata/snp/milan-report.bin"}, 1, "evidence file"},
		{"positional argument", []string{"--tee", "snp", "extra"}, 2, "takes no arguments"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := cvm(t, append([]string{"attest", "verify"}, tc.args...)...)
			if r.code != tc.wantCode || !strings.Contains(r.stderr, tc.wantStderr) {
				t.Errorf("exit %d, stderr %q; want exit %d and stderr containing %q", r.code, r.stderr, tc.wantCode, tc.wantStderr)
			}
			if r.stdout != "" {
				t.Errorf("stdout = %q on failure, want nothing", r.stdout)
			}
		})
	}
}

func TestVerifyTDXOffline(t *testing.T) {
	r := cvm(t, "attest", "verify", "--tee", "tdx", "--report", "testdata/tdx/spr-e4-quote.dat", "--offline")
	if r.code != 0 {
		t.Fatalf("exit %d, want 0; stderr:\n%s", r.code, r.stderr)
	}
	c := claimsOf(t, r)
	tdx, _ := c["tdx"].(map[string]any)
	got := map[string]any{"tee": c["tee"], "debug": c["debug"], "tcb_status": tdx["tcb_status"], "unchecked": c["unchecked"]}
	want := map[string]any{"tee": "tdx", "debug": false, "tcb_status": "unknown", "unchecked": []any{"tdx collateral", "crl"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("claims mismatch (-want +got):\n%s", diff)
	}
}

func TestSimRoundTrip(t *testing.T) {
	dir := t.TempDir()
	sim := filepath.Join(dir, "sim")
	if r := cvm(t, "attest", "sim", "init", "--dir", sim); r.code != 0 {
		t.Fatalf("sim init: exit %d\n%s", r.code, r.stderr)
	}
	if r := cvm(t, "attest", "sim", "init", "--dir", sim); r.code == 0 {
		t.Errorf("second sim init into the same dir succeeded; it must refuse to overwrite keys")
	}
	meas := strings.Repeat("ab", 48)
	for _, debug := range []bool{false, true} {
		out := filepath.Join(dir, "r.bin")
		args := []string{"attest", "sim", "report", "--dir", sim, "--measurement", meas, "--report-data", "0102", "--out", out}
		if debug {
			args = append(args, "--policy-debug")
		}
		if r := cvm(t, args...); r.code != 0 {
			t.Fatalf("sim report: exit %d\n%s", r.code, r.stderr)
		}
		vcek := filepath.Join(dir, "vcek.pem")
		if r := cvm(t, "attest", "sim", "certs", "--dir", sim, "--out", vcek); r.code != 0 {
			t.Fatalf("sim certs: exit %d\n%s", r.code, r.stderr)
		}
		r := cvm(t, "attest", "verify", "--tee", "sim", "--report", out, "--certs", vcek, "--sim-root", filepath.Join(sim, "root.pem"))
		if r.code != 0 {
			t.Fatalf("verify sim: exit %d\n%s", r.code, r.stderr)
		}
		c := claimsOf(t, r)
		got := map[string]any{"tee": c["tee"], "measurement": c["measurement"], "report_data": c["report_data"], "debug": c["debug"]}
		want := map[string]any{"tee": "sim", "measurement": meas, "report_data": "0102" + strings.Repeat("0", 124), "debug": debug}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("debug=%v: claims mismatch (-want +got):\n%s", debug, diff)
		}
		// The same report is never real SEV-SNP evidence.
		if r := cvm(t, "attest", "verify", "--tee", "snp", "--report", out, "--certs", vcek, "--offline"); r.code != 1 {
			t.Errorf("sim report verified as snp: exit %d, want 1; stderr %q", r.code, r.stderr)
		}
	}
	// Usage errors name the flag.
	if r := cvm(t, "attest", "sim", "report", "--dir", sim, "--measurement", "abcd", "--out", filepath.Join(dir, "x")); r.code != 2 || !strings.Contains(r.stderr, "96 hex digits") {
		t.Errorf("short measurement: exit %d, stderr %q; want exit 2 asking for 96 hex digits", r.code, r.stderr)
	}
	if r := cvm(t, "attest", "sim", "report", "--dir", filepath.Join(dir, "none"), "--measurement", meas, "--out", filepath.Join(dir, "x")); r.code != 2 {
		t.Errorf("missing sim dir: exit %d, want 2; stderr %q", r.code, r.stderr)
	}
}

func TestHelpAndVersion(t *testing.T) {
	if r := cvm(t, "version"); r.code != 0 || !strings.HasPrefix(r.stdout, "cvm ") {
		t.Errorf("version: exit %d, stdout %q", r.code, r.stdout)
	}
	for _, args := range [][]string{{"--help"}, {"attest", "verify", "--help"}, {"attest", "sim", "report", "--help"}, {"attest", "cache", "seed", "--help"}, {"attest", "collateral", "fetch", "--help"}} {
		r := cvm(t, args...)
		if r.code != 0 || !strings.Contains(r.stdout, "Examples:") {
			t.Errorf("cvm %v: exit %d, want 0 and an Examples section:\n%s", args, r.code, r.stdout)
		}
	}
	if r := cvm(t, "attest", "verify", "--bogus"); r.code != 2 {
		t.Errorf("unknown flag: exit %d, want 2", r.code)
	}
}

// TestUnknownCommand: a misspelled command is misuse (exit 2) at every
// level, never a failure (exit 1) or the help text with exit 0.
func TestUnknownCommand(t *testing.T) {
	for _, args := range [][]string{{"bogus"}, {"attest", "bogus"}, {"attest", "sim", "bogus"}, {"attest", "cache", "bogus"}, {"attest", "collateral", "bogus"}} {
		r := cvm(t, args...)
		if r.code != 2 || !strings.Contains(r.stderr, `unknown command "bogus"`) || r.stdout != "" {
			t.Errorf("cvm %v: exit %d, stdout %q, stderr %q; want exit 2, nothing on stdout and an unknown-command message", args, r.code, r.stdout, r.stderr)
		}
	}
	// A command group alone still prints its help.
	for _, args := range [][]string{{}, {"attest"}, {"attest", "sim"}} {
		if r := cvm(t, args...); r.code != 0 || !strings.Contains(r.stdout, "Available Commands:") {
			t.Errorf("cvm %v: exit %d, stdout %q; want exit 0 and the help", args, r.code, r.stdout)
		}
	}
}

// TestEveryCommandHasExamples keeps the README's promise that every command
// teaches by example: each runnable command's help has an Examples section.
func TestEveryCommandHasExamples(t *testing.T) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			walk(sub)
		}
		if c.Runnable() && c.HasParent() && !c.HasSubCommands() && c.Name() != "help" && c.Name() != "completion" && c.Parent().Name() != "completion" && c.Name() != "version" {
			if strings.TrimSpace(c.Example) == "" {
				t.Errorf("%q has no Example in its help", c.CommandPath())
			}
		}
	}
	walk(newRoot())
}

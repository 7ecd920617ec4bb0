package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/greatjail/cvm/vmm"
)

var (
	vmInBinaryOnce sync.Once
	vmInBinary     bool
)

// vmCLI runs cvm with args through the built binary when main.go registers
// the vm command, and otherwise in process through newRoot plus newVM with
// main's exit-code mapping, so these tests work before and after the
// command is wired in.
func vmCLI(t *testing.T, args ...string) result {
	t.Helper()
	vmInBinaryOnce.Do(func() {
		r := cvm(t, "vm", "run", "--help")
		vmInBinary = r.code == 0 && strings.Contains(r.stdout, "--kernel")
	})
	if vmInBinary {
		return cvm(t, args...)
	}
	root := newRoot()
	if c, _, err := root.Find([]string{"vm"}); err != nil || c == root {
		root.AddCommand(newVM())
	}
	var so, se bytes.Buffer
	root.SetOut(&so)
	root.SetErr(&se)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	code := 0
	if err != nil {
		se.WriteString("cvm: " + err.Error() + "\n")
		code = exitFailure
		var ue usageError
		if errors.As(err, &ue) {
			code = exitUsage
		}
	}
	return result{code, so.String(), se.String()}
}

func testKernel(t *testing.T) string {
	t.Helper()
	p := filepath.Join(repoRoot(t), ".cache", "inputs", "vmlinuz-6.1.0-56-cloud-amd64")
	if _, err := os.Stat(p); err != nil {
		t.Skipf("test input %s missing: run scripts/fetch-test-inputs.sh", p)
	}
	return p
}

func TestVMRunBadInput(t *testing.T) {
	kernel := testKernel(t)
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk")
	if err := os.WriteFile(junk, []byte("not a kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "initrd")
	if err := os.WriteFile(big, make([]byte, 8<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"no kernel flag", nil, exitUsage, "--kernel is required"},
		{"positional arg", []string{"--kernel", kernel, "extra"}, exitUsage, "takes no arguments"},
		{"bad memory", []string{"--kernel", kernel, "--memory", "lots"}, exitUsage, `--memory: invalid size "lots"`},
		{"unknown flag", []string{"--kernel", kernel, "--bogus"}, exitUsage, "unknown flag: --bogus"},
		{"empty disk", []string{"--kernel", kernel, "--disk", ":ro"}, exitUsage, `--disk ":ro": empty file name`},
		{"missing kernel file", []string{"--kernel", filepath.Join(dir, "nope")}, exitFailure, "kernel: open " + filepath.Join(dir, "nope")},
		{"corrupt kernel", []string{"--kernel", junk}, exitFailure, "kernel: loader:"},
		{"memory too small", []string{"--kernel", kernel, "--initrd", big, "--memory", "16M"}, exitFailure, "guest memory of 16M is too small"},
		{"zero vcpus", []string{"--kernel", kernel, "--vcpus", "0"}, exitFailure, "0 vCPUs: must be 1..255"},
		{"missing disk", []string{"--kernel", kernel, "--disk", filepath.Join(dir, "d.img") + ":ro"}, exitFailure, "disk " + filepath.Join(dir, "d.img")},
		{"vsock dir missing", []string{"--kernel", kernel, "--vsock-uds", filepath.Join(dir, "x", "v.sock")}, exitFailure, "vsock socket " + filepath.Join(dir, "x", "v.sock")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := vmCLI(t, append([]string{"vm", "run"}, tc.args...)...)
			if r.code != tc.code || !strings.Contains(r.stderr, tc.msg) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", r.code, r.stderr, tc.code, tc.msg)
			}
			if r.stdout != "" {
				t.Errorf("stdout %q, want nothing", r.stdout)
			}
		})
	}
}

// Without /dev/kvm a valid configuration fails with exit 1, naming the
// device.
func TestVMRunNoKVM(t *testing.T) {
	if _, err := os.Stat("/dev/kvm"); err == nil {
		t.Skip("/dev/kvm exists: this test covers machines without it")
	}
	kernel := testKernel(t)
	r := vmCLI(t, "vm", "run", "--kernel", kernel, "--memory", "128M")
	if r.code != exitFailure || !strings.Contains(r.stderr, "/dev/kvm") {
		t.Errorf("exit %d, stderr %q; want exit 1 naming /dev/kvm", r.code, r.stderr)
	}
}

func TestVMGroup(t *testing.T) {
	r := vmCLI(t, "vm", "bogus")
	if r.code != exitUsage || !strings.Contains(r.stderr, `unknown command "bogus"`) {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestParseSize(t *testing.T) {
	good := map[string]uint64{"256M": 256 << 20, "1G": 1 << 30, "1g": 1 << 30, "4096": 4096, "64K": 64 << 10}
	got := map[string]uint64{}
	for s := range good {
		v, err := parseSize(s)
		if err != nil {
			t.Errorf("parseSize(%q): %v", s, err)
		}
		got[s] = v
	}
	if d := cmp.Diff(good, got); d != "" {
		t.Errorf("sizes (-want +got):\n%s", d)
	}
	for _, s := range []string{"", "0", "M", "-1M", "1.5G", "1T", "99999999999999999999G", "17179869184G"} {
		if _, err := parseSize(s); err == nil {
			t.Errorf("parseSize(%q) succeeded", s)
		}
	}
}

func TestParseDisk(t *testing.T) {
	tests := map[string]vmm.Disk{
		"a.img":      {Path: "a.img"},
		"a.img:ro":   {Path: "a.img", ReadOnly: true},
		"a.img:rw":   {Path: "a.img"},
		"/x:y/b:ro":  {Path: "/x:y/b", ReadOnly: true},
		"c.img:ro:x": {Path: "c.img:ro:x"},
	}
	for in, want := range tests {
		got, err := parseDisk(in)
		if err != nil {
			t.Errorf("parseDisk(%q): %v", in, err)
		}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("parseDisk(%q) (-want +got):\n%s", in, d)
		}
	}
	if _, err := parseDisk(":ro"); err == nil {
		t.Error("parseDisk(\":ro\") succeeded")
	}
}

package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/greatjail/cvm/policy"
)

// vector is the part of a testdata/measure/*.json case the CLI needs.
type vector struct {
	ID     string `json:"id"`
	Inputs struct {
		Mode          string `json:"mode"`
		Firmware      file   `json:"firmware"`
		VCPUs         int    `json:"vcpus"`
		VCPUType      string `json:"vcpu_type"`
		GuestFeatures string `json:"guest_features"`
		VMMType       string `json:"vmm_type"`
		Kernel        *file  `json:"kernel"`
		Initrd        *file  `json:"initrd"`
		Cmdline       string `json:"cmdline"`
	} `json:"inputs"`
	Expected struct {
		LaunchDigest string `json:"launch_digest_sha384"`
		MRTD         string `json:"mrtd_sha384"`
		Error        string `json:"error"`
	} `json:"expected"`
}

type file struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
}

// inputPath finds a vector input in testdata/measure/inputs or the fetched
// .cache/inputs, or returns "" when it is not present.
func inputPath(t *testing.T, name string) string {
	root := repoRoot(t)
	for _, p := range []string{filepath.Join(root, "testdata/measure/inputs", name), filepath.Join(root, ".cache/inputs", name)} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// TestMeasureVectors runs every reference vector through `cvm measure`
// exactly as a user would, and imports the JSON output into a policy.
func TestMeasureVectors(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(repoRoot(t), "testdata/measure/*.json"))
	if err != nil || len(files) < 6 {
		t.Fatalf("found %d vectors (%v)", len(files), err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var v vector
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		t.Run(v.ID, func(t *testing.T) {
			need := []file{v.Inputs.Firmware}
			var args []string
			if strings.HasPrefix(v.ID, "tdx") {
				args = []string{"measure", "tdx"}
			} else {
				args = []string{"measure", "snp", "--vcpus", strconv.Itoa(v.Inputs.VCPUs), "--vcpu-type", v.Inputs.VCPUType,
					"--guest-features", v.Inputs.GuestFeatures, "--vmm-type", v.Inputs.VMMType}
				if v.Inputs.Kernel != nil {
					need = append(need, *v.Inputs.Kernel)
				}
				if v.Inputs.Initrd != nil {
					need = append(need, *v.Inputs.Initrd)
				}
			}
			paths := map[string]string{}
			for _, in := range need {
				p := inputPath(t, in.Name)
				if p == "" {
					t.Skipf("input %s missing: run scripts/fetch-test-inputs.sh (make test does)", in.Name)
				}
				if in.SHA256 == "" || sha256File(t, p) != in.SHA256 {
					// Same name, other file (the Ubuntu vector's OVMF.fd is
					// not Debian's): the input is not available here.
					t.Skipf("input %s with SHA-256 %q is not available here (only %s, which is another build); its source is outside the package archives this project may use", in.Name, in.SHA256, p)
				}
				paths[in.Name] = p
			}
			args = append(args, "--firmware", paths[v.Inputs.Firmware.Name])
			if v.Inputs.Kernel != nil {
				args = append(args, "--kernel", paths[v.Inputs.Kernel.Name], "--cmdline", v.Inputs.Cmdline)
			}
			if v.Inputs.Initrd != nil {
				args = append(args, "--initrd", paths[v.Inputs.Initrd.Name])
			}
			r := cvm(t, args...)
			if v.Expected.Error != "" {
				if r.code != 1 || r.stdout != "" || r.stderr == "" {
					t.Errorf("rejected vector: exit %d, stdout %q, stderr %q; want exit 1 and a message", r.code, r.stdout, r.stderr)
				}
				return
			}
			want := v.Expected.LaunchDigest + v.Expected.MRTD
			if r.code != 0 || strings.TrimSpace(r.stdout) != want {
				t.Fatalf("exit %d, digest %q; want %s\n%s", r.code, strings.TrimSpace(r.stdout), want, r.stderr)
			}
			// --json is a reference-value document the broker imports.
			r = cvm(t, append(args, "--json")...)
			if r.code != 0 {
				t.Fatalf("--json: exit %d: %s", r.code, r.stderr)
			}
			rvs, err := policy.ImportMeasurement([]byte(r.stdout))
			if err != nil || len(rvs) != 1 || rvs[0].Value.String() != want {
				t.Errorf("ImportMeasurement(--json output) = %v, %v; want the digest %s", rvs, err, want)
			}
		})
	}
}

func TestMeasureUsage(t *testing.T) {
	fw := filepath.Join(repoRoot(t), "testdata/measure/inputs/ovmf_AmdSev_suffix.bin")
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"measure", "snp", "--firmware", fw, "--vcpus", "1", "--vcpu-type", "EPYC-v9", "--guest-features", "0x1", "--vmm-type", "qemu"}, "EPYC"},
		{[]string{"measure", "snp", "--firmware", fw, "--vcpus", "1", "--vcpu-type", "EPYC-v4", "--guest-features", "0x1", "--vmm-type", "xen"}, "vmm-type"},
		{[]string{"measure", "snp", "--firmware", fw, "--vcpus", "0", "--vcpu-type", "EPYC-v4", "--guest-features", "0x1", "--vmm-type", "qemu"}, "--vcpus"},
		{[]string{"measure", "snp", "--firmware", fw, "--vcpus", "1", "--vcpu-type", "EPYC-v4", "--vmm-type", "qemu"}, "--guest-features"},
		{[]string{"measure", "snp", "--firmware", fw, "--vcpus", "1", "--vcpu-type", "EPYC-v4", "--guest-features", "0x1", "--vmm-type", "qemu", "--initrd", fw}, "need --kernel"},
		{[]string{"measure", "tdx", "--firmware", "/nonexistent"}, "no such file"},
		{[]string{"measure", "tdx"}, "--firmware"},
	}
	for _, tc := range tests {
		r := cvm(t, tc.args...)
		if r.code != 2 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("cvm %v: exit %d, stderr %q; want exit 2 mentioning %q", tc.args, r.code, r.stderr, tc.want)
		}
	}
	// Names are case-insensitive, and --vcpu-sig is an alternative.
	a := cvm(t, "measure", "snp", "--firmware", fw, "--vcpus", "1", "--vcpu-type", "epyc-V4", "--guest-features", "0x1", "--vmm-type", "QEMU")
	b := cvm(t, "measure", "snp", "--firmware", fw, "--vcpus", "1", "--vcpu-sig", "0x800f12", "--guest-features", "0x1", "--vmm-type", "qemu")
	if a.code != 0 || a.stdout != b.stdout || len(strings.TrimSpace(a.stdout)) != 96 {
		t.Errorf("case-insensitive names / --vcpu-sig: %q (%s) vs %q (%s)", a.stdout, a.stderr, b.stdout, b.stderr)
	}
}

func sha256File(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

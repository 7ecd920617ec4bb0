package main

import (
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/greatjail/cvm/attestation/tdxmeasure"
	"github.com/greatjail/cvm/policy"
)

// debian12MRTD is the MRTD of Debian 12's OVMF.fd (testdata/measure vector).
const debian12MRTD = "4c7206f0f483c524f12c366c711e9049030a8d47c471ee5aa9c4999a08de4057fb887fed0744d5631a212967fb231c47"

func TestMeasureTDXUsage(t *testing.T) {
	fw := filepath.Join(repoRoot(t), "testdata/measure/inputs/ovmf_AmdSev_suffix.bin")
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--firmware", fw, "--initrd", fw}, "need --kernel"},
		{[]string{"--firmware", fw, "--cmdline", "console=ttyS0"}, "need --kernel"},
		{[]string{"--firmware", fw, "--memory", "1G"}, "need --kernel"},
		{[]string{"--firmware", fw, "--ovmf-measures", "raw"}, "need --kernel"},
		{[]string{"--firmware", fw, "--kernel", fw}, "--ovmf-measures"},
		{[]string{"--firmware", fw, "--kernel", fw, "--ovmf-measures", "cooked", "--stub-measures", "cc"}, "patched"},
		{[]string{"--firmware", fw, "--kernel", fw, "--ovmf-measures", "raw"}, "--stub-measures"},
		{[]string{"--firmware", fw, "--kernel", fw, "--ovmf-measures", "raw", "--stub-measures", "tpm"}, "--stub-measures"},
		{[]string{"--firmware", fw, "--kernel", fw, "--initrd", fw, "--ovmf-measures", "patched", "--stub-measures", "cc"}, "--memory"},
		{[]string{"--firmware", fw, "--kernel", fw, "--memory", "lots", "--ovmf-measures", "raw", "--stub-measures", "cc"}, "--memory"},
	}
	for _, tc := range tests {
		args := append([]string{"measure", "tdx"}, tc.args...)
		r := cvm(t, args...)
		if r.code != 2 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("cvm %v: exit %d, stderr %q; want exit 2 mentioning %q", args, r.code, r.stderr, tc.want)
		}
	}
}

func TestMeasureTDXHelp(t *testing.T) {
	r := cvm(t, "measure", "tdx", "--help")
	for _, want := range []string{"RTMR0", "ACPI", "RTMR3", "zero at launch", "--ovmf-measures", "patched", "raw", "--stub-measures", "initrd=initrd", "--memory"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("cvm measure tdx --help does not mention %q:\n%s", want, r.stdout)
		}
	}
}

// TestMeasureTDXDirectBoot measures Debian 12's OVMF with the Debian 13
// kernel and the tiny initrd, in text and JSON, and checks the output's
// shape and agreement with the library.
func TestMeasureTDXDirectBoot(t *testing.T) {
	fw, kernel := inputPath(t, "OVMF.fd"), inputPath(t, "vmlinuz-6.12.117+deb13-cloud-amd64")
	if fw == "" || kernel == "" {
		t.Skip("OVMF.fd or vmlinuz-6.12.117+deb13-cloud-amd64 missing from .cache/inputs: run make test-inputs")
	}
	initrd := filepath.Join(repoRoot(t), "testdata/measure/inputs/initrd-tiny.cpio")
	args := []string{"measure", "tdx", "--firmware", fw, "--kernel", kernel, "--initrd", initrd, "--cmdline", "console=ttyS0",
		"--memory", "2G", "--ovmf-measures", "PATCHED", "--stub-measures", "cc"}

	kb, err := os.ReadFile(kernel)
	if err != nil {
		t.Fatal(err)
	}
	ib, err := os.ReadFile(initrd)
	if err != nil {
		t.Fatal(err)
	}
	boot := tdxmeasure.Boot{Kernel: kb, Initrd: ib, Cmdline: "console=ttyS0", MemorySize: 2 << 30, KernelImage: tdxmeasure.KernelPatched, Stub: tdxmeasure.StubCC}
	r1, err := tdxmeasure.RTMR1(boot)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := tdxmeasure.RTMR2(boot)
	if err != nil {
		t.Fatal(err)
	}
	v1, v2 := r1.Value(), r2.Value()

	r := cvm(t, args...)
	want := debian12MRTD + "\nrtmr1 " + hex.EncodeToString(v1[:]) + "\nrtmr2 " + hex.EncodeToString(v2[:]) + "\n"
	if r.code != 0 || r.stdout != want {
		t.Fatalf("cvm %v: exit %d, stdout %q, stderr %q; want %q", args, r.code, r.stdout, r.stderr, want)
	}

	r = cvm(t, append(args, "--json")...)
	if r.code != 0 {
		t.Fatalf("--json: exit %d, %s", r.code, r.stderr)
	}
	var doc struct {
		TEE, MRTD, RTMR1, RTMR2 string
		Inputs                  []struct{ Role, SHA256 string }
		Events                  struct {
			RTMR1, RTMR2 []struct{ Name, Digest string }
		}
		Parameters map[string]string
	}
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.TEE != "tdx" || doc.MRTD != debian12MRTD || doc.RTMR1 != hex.EncodeToString(v1[:]) || doc.RTMR2 != hex.EncodeToString(v2[:]) {
		t.Errorf("--json digests: %+v", doc)
	}
	var roles []string
	for _, in := range doc.Inputs {
		roles = append(roles, in.Role)
		if len(in.SHA256) != 64 {
			t.Errorf("input %s sha256 %q", in.Role, in.SHA256)
		}
	}
	if diff := cmp.Diff([]string{"firmware", "kernel", "initrd"}, roles); diff != "" {
		t.Errorf("--json inputs (-want +got):\n%s", diff)
	}
	if len(doc.Events.RTMR1) != 5 || len(doc.Events.RTMR2) != 2 || doc.Events.RTMR2[0].Name != "EV_EVENT_TAG: LOADED_IMAGE::LoadOptions" {
		t.Errorf("--json events: %+v", doc.Events)
	}
	if diff := cmp.Diff(map[string]string{"cmdline": "console=ttyS0", "memory": "2147483648", "ovmf_measures": "patched", "stub_measures": "cc"}, doc.Parameters); diff != "" {
		t.Errorf("--json parameters (-want +got):\n%s", diff)
	}
	rvs, err := policy.ImportMeasurement([]byte(r.stdout))
	if err != nil || len(rvs) != 1 || rvs[0].Value.String() != debian12MRTD {
		t.Errorf("ImportMeasurement(--json output) = %v, %v; want the MRTD", rvs, err)
	}

	// A firmware image is no kernel: refused (exit 1) with the file named.
	for _, mode := range []string{"raw", "patched"} {
		r = cvm(t, "measure", "tdx", "--firmware", fw, "--kernel", fw, "--ovmf-measures", mode, "--stub-measures", "cc")
		if r.code != 1 || !strings.Contains(r.stderr, "kernel "+fw+": not a PE/COFF image") {
			t.Errorf("firmware as kernel (%s): exit %d, stderr %q", mode, r.code, r.stderr)
		}
	}
}

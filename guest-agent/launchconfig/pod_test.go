package launchconfig

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestLaunchModeUnchanged: adding modes must not change one byte of a
// launch configuration (launch measurements are computed from it), and an
// explicit "mode":"launch" is the same configuration.
func TestLaunchModeUnchanged(t *testing.T) {
	ca := testCA(t)
	caJSON := strings.ReplaceAll(ca, "\n", `\n`)
	// The canonical form of before modes existed, byte for byte.
	before := `{"version":1,"tee":"sim","kbs_ca_pem":"` + caJSON + `","resource":"disk-key","entrypoint":"/bin/hello","args":["a"],"env":["PATH=/bin"],"disk":{"device":"/dev/vda","fs":"ext4"}}`
	for _, mode := range []string{"", ModeLaunch} {
		c := valid(ca)
		c.Mode = mode
		b, err := c.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(before, string(b)); diff != "" {
			t.Errorf("Marshal with mode %q (-want +got):\n%s", mode, diff)
		}
	}
	explicit := strings.Replace(before, `{"version":1,`, `{"version":1,"mode":"launch",`, 1)
	c, err := Parse([]byte(explicit))
	if err != nil {
		t.Fatalf("Parse with mode launch: %v", err)
	}
	if c.IsPod() || !c.Confidential() {
		t.Errorf("mode launch: IsPod %v, Confidential %v", c.IsPod(), c.Confidential())
	}
	if b, _ := c.Marshal(); string(b) != before {
		t.Errorf("Marshal(Parse(mode launch)) = %s, want %s", b, before)
	}
	// Modules of launch mode are unchanged (the launch initramfs, and so its
	// measurement, depends on them).
	req, opt := Modules("sim")
	if diff := cmp.Diff([]string{"virtio_blk", "dm_mod", "dm_crypt", "xts", "ecb", "virtio_mmio", "vsock",
		"vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport", "virtio_rng", "virtio_console"}, req); diff != "" {
		t.Errorf("Modules(sim) changed (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"aesni_intel", "configfs", "tsm"}, opt); diff != "" {
		t.Errorf("Modules(sim) optional changed (-want +got):\n%s", diff)
	}
}

func TestPodMode(t *testing.T) {
	ca := testCA(t)
	caJSON := strings.ReplaceAll(ca, "\n", `\n`)
	tests := []struct {
		name string
		c    *Config
		want string
	}{
		{"plain", &Config{Version: 1, Mode: ModePod, TEE: TEENone}, `{"version":1,"mode":"pod","tee":"none"}`},
		{"confidential", &Config{Version: 1, Mode: ModePod, TEE: "snp", KBSCAPEM: ca, Resource: "pod-secret"},
			`{"version":1,"mode":"pod","tee":"snp","kbs_ca_pem":"` + caJSON + `","resource":"pod-secret"}`},
	}
	for _, tt := range tests {
		b, err := tt.c.Marshal()
		if err != nil {
			t.Fatalf("%s: Marshal: %v", tt.name, err)
		}
		if diff := cmp.Diff(tt.want, string(b)); diff != "" {
			t.Errorf("%s: Marshal (-want +got):\n%s", tt.name, diff)
		}
		got, err := Parse(b)
		if err != nil {
			t.Fatalf("%s: Parse: %v", tt.name, err)
		}
		if diff := cmp.Diff(tt.c, got); diff != "" {
			t.Errorf("%s: Parse(Marshal) (-want +got):\n%s", tt.name, diff)
		}
		if !got.IsPod() || got.Confidential() != (tt.c.TEE != TEENone) {
			t.Errorf("%s: IsPod %v, Confidential %v", tt.name, got.IsPod(), got.Confidential())
		}
	}
}

func TestPodModeRejects(t *testing.T) {
	ca := strings.ReplaceAll(testCA(t), "\n", `\n`)
	tests := []struct{ name, in string }{
		{"unknown-mode", `{"version":1,"mode":"vm","tee":"none"}`},
		{"null-mode", `{"version":1,"mode":null,"tee":"none"}`},
		{"none-in-launch-mode", `{"version":1,"tee":"none","kbs_ca_pem":"` + ca + `","resource":"r","entrypoint":"/e","args":[],"env":[],"disk":{"device":"/d","fs":"ext4"}}`},
		{"missing-tee", `{"version":1,"mode":"pod"}`},
		{"tee-tpm", `{"version":1,"mode":"pod","tee":"tpm","kbs_ca_pem":"` + ca + `","resource":"r"}`},
		{"none-with-ca", `{"version":1,"mode":"pod","tee":"none","kbs_ca_pem":"` + ca + `"}`},
		{"none-with-resource", `{"version":1,"mode":"pod","tee":"none","resource":"r"}`},
		{"confidential-no-ca", `{"version":1,"mode":"pod","tee":"sim","resource":"r"}`},
		{"confidential-no-resource", `{"version":1,"mode":"pod","tee":"sim","kbs_ca_pem":"` + ca + `"}`},
		{"confidential-empty-resource", `{"version":1,"mode":"pod","tee":"sim","kbs_ca_pem":"` + ca + `","resource":""}`},
		{"entrypoint", `{"version":1,"mode":"pod","tee":"none","entrypoint":"/bin/sh"}`},
		{"disk", `{"version":1,"mode":"pod","tee":"none","disk":{"device":"/d","fs":"ext4"}}`},
		{"args", `{"version":1,"mode":"pod","tee":"none","args":[]}`},
		{"version-2", `{"version":2,"mode":"pod","tee":"none"}`},
		{"duplicate-mode", `{"version":1,"mode":"pod","mode":"pod","tee":"none"}`},
	}
	for _, tt := range tests {
		if _, err := Parse([]byte(tt.in)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Parse = %v, want ErrInvalid", tt.name, err)
		}
	}
	for _, c := range []*Config{
		{Version: 1, Mode: ModePod, TEE: TEENone, Entrypoint: "/x"},
		{Version: 1, Mode: ModePod, TEE: TEENone, Args: []string{}},
		{Version: 1, Mode: "other", TEE: TEENone},
	} {
		if _, err := c.Marshal(); !errors.Is(err, ErrInvalid) {
			t.Errorf("Marshal(%+v) = %v, want ErrInvalid", c, err)
		}
	}
}

func TestPodModules(t *testing.T) {
	base := []string{"virtio_blk", "overlay", "virtio_console", "virtio_mmio", "vsock",
		"vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport", "virtio_rng"}
	tests := []struct {
		tee           string
		want, wantOpt []string
	}{
		{"none", base, []string{"erofs"}},
		{"sim", base, []string{"erofs", "configfs", "tsm"}},
		{"snp", append(append([]string{}, base...), "sev-guest"), []string{"erofs", "configfs", "tsm"}},
		{"tdx", append(append([]string{}, base...), "tdx-guest"), []string{"erofs", "configfs", "tsm"}},
	}
	for _, tt := range tests {
		req, opt := PodModules(teeOf(tt.tee))
		if diff := cmp.Diff(tt.want, req); diff != "" {
			t.Errorf("PodModules(%s) required (-want +got):\n%s", tt.tee, diff)
		}
		if diff := cmp.Diff(tt.wantOpt, opt); diff != "" {
			t.Errorf("PodModules(%s) optional (-want +got):\n%s", tt.tee, diff)
		}
		if _, err := FormatModules(append(req, opt...)); err != nil {
			t.Errorf("PodModules(%s) are not valid names: %v", tt.tee, err)
		}
	}
}

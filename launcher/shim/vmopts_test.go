package shim

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/greatjail/cvm/launcher/shim/rootimage"
)

func TestParseVMOptions(t *testing.T) {
	tests := []struct {
		name    string
		ann     map[string]string
		want    VMOptions
		wantErr string
	}{
		{"none", nil, VMOptions{}, ""},
		{"others ignored", map[string]string{"io.kubernetes.cri.sandbox-id": "p", "io.cvmx": "y"}, VMOptions{}, ""},
		{"all", map[string]string{AnnotationVCPUs: "2", AnnotationMemory: "1G", AnnotationKernel: "/opt/k/vmlinuz",
			AnnotationTEE: "none", AnnotationRootfs: "erofs"},
			VMOptions{VCPUs: 2, Memory: 1 << 30, Kernel: "/opt/k/vmlinuz", TEE: "none", Format: rootimage.EROFS}, ""},
		{"memory MiB", map[string]string{AnnotationMemory: "768M"}, VMOptions{Memory: 768 << 20}, ""},
		{"tee snp parses", map[string]string{AnnotationTEE: "snp"}, VMOptions{TEE: "snp"}, ""},
		{"vcpus zero", map[string]string{AnnotationVCPUs: "0"}, VMOptions{}, "io.cvm.vcpus"},
		{"vcpus 65", map[string]string{AnnotationVCPUs: "65"}, VMOptions{}, "io.cvm.vcpus"},
		{"memory small", map[string]string{AnnotationMemory: "64M"}, VMOptions{}, "io.cvm.memory"},
		{"memory large", map[string]string{AnnotationMemory: "65G"}, VMOptions{}, "io.cvm.memory"},
		{"memory no unit", map[string]string{AnnotationMemory: "512"}, VMOptions{}, "io.cvm.memory"},
		{"memory overflow", map[string]string{AnnotationMemory: "99999999999G"}, VMOptions{}, "io.cvm.memory"},
		{"kernel relative", map[string]string{AnnotationKernel: "vmlinuz"}, VMOptions{}, "io.cvm.kernel"},
		{"kernel unclean", map[string]string{AnnotationKernel: "/a/../etc/x"}, VMOptions{}, "io.cvm.kernel"},
		{"tee tpm", map[string]string{AnnotationTEE: "tpm"}, VMOptions{}, "io.cvm.tee"},
		{"rootfs squashfs", map[string]string{AnnotationRootfs: "squashfs"}, VMOptions{}, "io.cvm.rootfs"},
		{"typo", map[string]string{"io.cvm.memroy": "1G"}, VMOptions{}, "unknown annotation io.cvm.memroy"},
		{"broker", map[string]string{AnnotationTEE: "sim", AnnotationKBS: "kbs.example:8443", AnnotationKBSCA: "/etc/cvm/ca.pem",
			AnnotationResource: "pods/secret", AnnotationSimDir: "/var/lib/cvm/sim"},
			VMOptions{TEE: "sim", KBS: "kbs.example:8443", KBSCA: "/etc/cvm/ca.pem", Resource: "pods/secret", SimDir: "/var/lib/cvm/sim"}, ""},
		{"kbs no port", map[string]string{AnnotationKBS: "kbs.example"}, VMOptions{}, "io.cvm.kbs"},
		{"kbs port 0", map[string]string{AnnotationKBS: "kbs.example:0"}, VMOptions{}, "io.cvm.kbs"},
		{"kbs no host", map[string]string{AnnotationKBS: ":8443"}, VMOptions{}, "io.cvm.kbs"},
		{"kbs-ca relative", map[string]string{AnnotationKBSCA: "ca.pem"}, VMOptions{}, "io.cvm.kbs-ca"},
		{"sim-dir unclean", map[string]string{AnnotationSimDir: "/a/./b"}, VMOptions{}, "io.cvm.sim-dir"},
		{"resource dotdot", map[string]string{AnnotationResource: "a/../b"}, VMOptions{}, "io.cvm.resource"},
		{"resource empty", map[string]string{AnnotationResource: ""}, VMOptions{}, "io.cvm.resource"},
		{"engine builtin", map[string]string{AnnotationEngine: "builtin"}, VMOptions{Engine: EngineBuiltin}, ""},
		{"engine auto", map[string]string{AnnotationEngine: "auto"}, VMOptions{Engine: EngineAuto}, ""},
		{"engine qemu", map[string]string{AnnotationEngine: "qemu"}, VMOptions{Engine: EngineQEMU}, ""},
		{"engine upper case", map[string]string{AnnotationEngine: "QEMU"}, VMOptions{}, "io.cvm.engine=\"QEMU\": want qemu, builtin or auto"},
		{"engine empty", map[string]string{AnnotationEngine: ""}, VMOptions{}, "io.cvm.engine"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseVMOptions(tt.ann)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseVMOptions = %v, want an error naming %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseVMOptions (-want +got):\n%s", diff)
			}
		})
	}
}

func FuzzParseVMOptions(f *testing.F) {
	f.Add(AnnotationMemory, "512M")
	f.Add(AnnotationVCPUs, "4")
	f.Add(AnnotationKernel, "/boot/vmlinuz")
	f.Add(AnnotationTEE, "none")
	f.Add(AnnotationRootfs, "erofs")
	f.Add(AnnotationEngine, "builtin")
	f.Add("io.cvm.x", "")
	f.Fuzz(func(t *testing.T, k, v string) {
		o, err := ParseVMOptions(map[string]string{k: v})
		if err != nil {
			return
		}
		if o.VCPUs < 0 || o.VCPUs > 64 || (o.Memory != 0 && (o.Memory < 128<<20 || o.Memory > 64<<30 || o.Memory%(1<<20) != 0)) {
			t.Fatalf("%s=%q gave out-of-range options %+v", k, v, o)
		}
	})
}

func TestFindAgent(t *testing.T) {
	prefix := t.TempDir()
	exe := filepath.Join(prefix, "bin", "containerd-shim-cvm-v2")
	if _, err := findAgentFrom(exe); err == nil || !strings.Contains(err.Error(), "share/cvm/cvm-agent") {
		t.Errorf("findAgentFrom with no agent = %v, want an error naming where it looked", err)
	}
	installed := filepath.Join(prefix, "share", "cvm", AgentName)
	os.MkdirAll(filepath.Dir(installed), 0o755)
	os.WriteFile(installed, []byte("agent"), 0o755)
	if got, err := findAgentFrom(exe); err != nil || filepath.Clean(got) != installed {
		t.Errorf("findAgentFrom = %q, %v; want %s", got, err, installed)
	}
	beside := filepath.Join(prefix, "bin", AgentName)
	os.MkdirAll(filepath.Dir(beside), 0o755)
	os.WriteFile(beside, []byte("agent"), 0o755)
	if got, err := findAgentFrom(exe); err != nil || got != beside {
		t.Errorf("findAgentFrom = %q, %v; want %s (next to the binary first)", got, err, beside)
	}
}

func TestNewVMSandboxRefuses(t *testing.T) {
	tests := []struct {
		name, spec string
		want       error
		wantText   string
	}{
		{"confidential without a broker", `{"annotations":{"io.cvm.tee":"sim"}}`, nil, "needs io.cvm.kbs, io.cvm.kbs-ca, io.cvm.resource, io.cvm.sim-dir"},
		{"broker for a plain pod", `{"annotations":{"io.cvm.kbs":"127.0.0.1:1"}}`, nil, "are for a confidential pod"},
		{"sim dir for snp", `{"annotations":{"io.cvm.tee":"snp","io.cvm.kbs":"k:1","io.cvm.kbs-ca":"/ca.pem","io.cvm.resource":"r","io.cvm.sim-dir":"/s"}}`, nil, "only for tee sim"},
		{"missing CA file", `{"annotations":{"io.cvm.tee":"snp","io.cvm.kbs":"k:1","io.cvm.kbs-ca":"/nonexistent/ca.pem","io.cvm.resource":"r"}}`, nil, "/nonexistent/ca.pem"},
		{"bad option", `{"annotations":{"io.cvm.vcpus":"many"}}`, nil, "io.cvm.vcpus"},
		{"missing kernel", `{"annotations":{"io.cvm.kernel":"/nonexistent/vmlinuz"}}`, nil, "/nonexistent/vmlinuz"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, "config.json"), []byte(tt.spec), 0o600)
			_, err := NewVMSandbox(context.Background(), SandboxRequest{Bundle: dir, PodID: "pod"})
			if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) || !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("NewVMSandbox = %v, want %v / an error naming %q", err, tt.want, tt.wantText)
			}
		})
	}
}

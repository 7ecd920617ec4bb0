package shim

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/greatjail/cvm/launcher/shim/rootimage"
)

func TestParseShimConfig(t *testing.T) {
	all := VMOptions{VCPUs: 2, Memory: 1 << 30, Kernel: "/opt/k/vmlinuz", TEE: "sim", Format: rootimage.EROFS, Engine: EngineBuiltin,
		KBS: "127.0.0.1:8443", KBSCA: "/etc/cvm/ca.pem", Resource: "pods/a", SimDir: "/var/lib/cvm/sim"}
	tests := []struct {
		name    string
		in      string
		want    VMOptions
		wantErr string
	}{
		{"empty", "", VMOptions{}, ""},
		{"toml all", `kernel = "/opt/k/vmlinuz"
vcpus = 2
memory = "1G"
tee = "sim"
kbs = "127.0.0.1:8443"
kbs_ca = "/etc/cvm/ca.pem"
resource = "pods/a"
sim_dir = "/var/lib/cvm/sim"
rootfs = "erofs"
engine = "builtin"
`, all, ""},
		{"json all", `{"kernel":"/opt/k/vmlinuz","vcpus":2,"memory":"1G","tee":"sim","kbs":"127.0.0.1:8443",
 "kbs_ca":"/etc/cvm/ca.pem","resource":"pods/a","sim_dir":"/var/lib/cvm/sim","rootfs":"erofs","engine":"builtin"}`, all, ""},
		{"engine auto", "engine = 'auto'\n", VMOptions{Engine: EngineAuto}, ""},
		{"engine qemu", `{"engine":"qemu"}`, VMOptions{Engine: EngineQEMU}, ""},
		{"engine bad", "engine = 'firecracker'\n", VMOptions{}, "want qemu, builtin or auto"},
		{"engine empty string", "engine = ''\n", VMOptions{}, ""},
		{"engine wrong type", "engine = 1\n", VMOptions{}, "TOML"},
		{"toml unknown key", "vcpu = 2\n", VMOptions{}, "unknown keys vcpu"},
		{"toml table", "[x]\nvcpus = 2\n", VMOptions{}, "unknown keys x"},
		{"toml wrong type", "vcpus = \"2\"\n", VMOptions{}, "TOML"},
		{"toml bad", "vcpus = \n", VMOptions{}, "TOML"},
		{"json unknown key", `{"vcpu":2}`, VMOptions{}, "unknown field"},
		{"json trailing", `{"vcpus":2} {}`, VMOptions{}, "data after the object"},
		{"json wrong type", `{"vcpus":"2"}`, VMOptions{}, "JSON"},
		{"bad value", "memory = \"64M\"\n", VMOptions{}, "io.cvm.memory"},
		{"negative vcpus", "vcpus = -1\n", VMOptions{}, "vcpus -1"},
		{"too large", strings.Repeat("#", MaxShimConfig+1), VMOptions{}, "more than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseShimConfig("test.toml", []byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseShimConfig = %+v, %v; want an error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseShimConfig (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseRuntimeOptions(t *testing.T) {
	file := filepath.Join(t.TempDir(), "shim.toml")
	os.WriteFile(file, []byte("vcpus = 3\n"), 0o600)
	mk := func(o *runtimeoptions.Options) *anypb.Any {
		a, err := anypb.New(o)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	other, _ := anypb.New(&emptypb.Empty{})
	// containerd's typeurl names the type without the type.googleapis.com/ prefix.
	bare := mk(&runtimeoptions.Options{ConfigPath: file})
	bare.TypeUrl = "runtimeoptions.v1.Options"
	tests := []struct {
		name    string
		in      *anypb.Any
		want    VMOptions
		wantErr string
	}{
		{"nil", nil, VMOptions{}, ""},
		{"empty", mk(&runtimeoptions.Options{}), VMOptions{}, ""},
		{"config path", mk(&runtimeoptions.Options{ConfigPath: file}), VMOptions{VCPUs: 3}, ""},
		{"bare type URL", bare, VMOptions{VCPUs: 3}, ""},
		{"config body (CRI options table)", mk(&runtimeoptions.Options{ConfigBody: []byte("memory = '1G'\n")}), VMOptions{Memory: 1 << 30}, ""},
		{"missing file", mk(&runtimeoptions.Options{ConfigPath: "/nonexistent/shim.toml"}), VMOptions{}, "/nonexistent/shim.toml"},
		{"unknown key in body", mk(&runtimeoptions.Options{ConfigBody: []byte("SystemdCgroup = true\n")}), VMOptions{}, "unknown keys SystemdCgroup"},
		{"other type", other, VMOptions{}, "google.protobuf.Empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRuntimeOptions(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseRuntimeOptions = %+v, %v; want an error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseRuntimeOptions (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMerge(t *testing.T) {
	node := VMOptions{VCPUs: 2, Memory: 1 << 30, TEE: "sim", KBS: "k:1", KBSCA: "/ca", Resource: "r", SimDir: "/s", Engine: EngineQEMU}
	pod := VMOptions{Memory: 2 << 30, Resource: "pod-r", Engine: EngineBuiltin}
	want := VMOptions{VCPUs: 2, Memory: 2 << 30, TEE: "sim", KBS: "k:1", KBSCA: "/ca", Resource: "pod-r", SimDir: "/s", Engine: EngineBuiltin}
	if diff := cmp.Diff(want, node.Merge(pod)); diff != "" {
		t.Errorf("Merge (-want +got):\n%s", diff)
	}
	// A pod without io.cvm.engine keeps the node's engine.
	if got := node.Merge(VMOptions{}).Engine; got != EngineQEMU {
		t.Errorf("Merge without a pod engine: engine %q, want %q", got, EngineQEMU)
	}
}

func FuzzParseShimConfig(f *testing.F) {
	f.Add([]byte("vcpus = 2\nmemory = \"1G\"\ntee = \"sim\"\n"))
	f.Add([]byte(`{"kernel":"/k","kbs":"h:1","kbs_ca":"/ca","resource":"r","sim_dir":"/s"}`))
	f.Add([]byte("[x]\n"))
	f.Add([]byte(`{"vcpus":1} x`))
	f.Add([]byte("rootfs = 'erofs'"))
	f.Add([]byte("engine = 'builtin'"))
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := ParseShimConfig("fuzz", b)
		if err != nil {
			return
		}
		if o.VCPUs < 0 || o.VCPUs > 64 || (o.Memory != 0 && (o.Memory < 128<<20 || o.Memory > 64<<30)) {
			t.Fatalf("%q gave out-of-range options %+v", b, o)
		}
		if o.Kernel != "" && !filepath.IsAbs(o.Kernel) {
			t.Fatalf("%q gave a relative kernel %q", b, o.Kernel)
		}
	})
}

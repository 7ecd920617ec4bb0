package kernel

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// inputs is where `make test-inputs` puts the Debian kernels and modules.
const inputs = "../../.cache/inputs"

// fakeSetup returns a bzImage setup area with the given kernel_version string
// at 0x200+ptr (ptr 0: no string).
func fakeSetup(version string, ptr int) []byte {
	b := make([]byte, 0x1000)
	b[0x1fe], b[0x1ff] = 0x55, 0xaa
	copy(b[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(b[0x206:], 0x020f)
	binary.LittleEndian.PutUint16(b[0x20e:], uint16(ptr))
	if ptr != 0 {
		copy(b[0x200+ptr:], version+"\x00")
	}
	return b
}

func TestParseRelease(t *testing.T) {
	const ver = "6.12.117+deb13-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian 6.12.117-1 (2026-11-12)"
	ok := fakeSetup(ver, 0x300)
	mod := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), ok...)) }
	tests := []struct {
		name    string
		in      []byte
		want    string
		wantErr string
	}{
		{"debian 13", ok, "6.12.117+deb13-cloud-amd64", ""},
		{"release only", fakeSetup("6.1.0-56-cloud-amd64", 0x2c0), "6.1.0-56-cloud-amd64", ""},
		{"no NUL before the end", mod(func(b []byte) []byte { return b[:0x500+10] }), "6.12.117+d", ""},
		{"short", ok[:0x20f], "", "shorter than a setup header"},
		{"no boot flag", mod(func(b []byte) []byte { b[0x1fe] = 0; return b }), "", "no boot signature"},
		{"no HdrS", mod(func(b []byte) []byte { b[0x202] = 'h'; return b }), "", "no boot signature"},
		{"old protocol", mod(func(b []byte) []byte { b[0x207] = 1; return b }), "", "boot protocol 0x10f"},
		{"no version", fakeSetup("", 0), "", "no kernel_version string"},
		{"beyond setup", mod(func(b []byte) []byte { b[0x20f] = 0x40; return b }), "", "beyond the setup code"},
		{"empty release", fakeSetup(" x", 0x300), "", "has no release"},
		{"dotdot", fakeSetup(".. x", 0x300), "", "has no release"},
		{"slash", fakeSetup("../../etc x", 0x300), "", `"../../etc" has a character`},
		{"control", fakeSetup("6.1\n", 0x300), "", "has a character"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseRelease(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseRelease = %q, %v; want error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("parseRelease = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func FuzzParseRelease(f *testing.F) {
	f.Add(fakeSetup("6.12.117+deb13-cloud-amd64 (x) #1", 0x300))
	f.Add(fakeSetup("6.1.0-56-cloud-amd64", 0x2c0)[:0x600])
	f.Add(fakeSetup("", 0))
	f.Add([]byte("MZ"))
	if b, err := os.ReadFile(filepath.Join(inputs, "vmlinuz-"+DefaultRelease)); err == nil {
		f.Add(b[:min(len(b), 0x4400)])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		rel, err := parseRelease(b)
		if err != nil {
			return
		}
		if rel == "" || rel == "." || rel == ".." || strings.ContainsAny(rel, "/ \x00") {
			t.Fatalf("parseRelease accepted %q", rel)
		}
	})
}

// writeKernel writes a fake bzImage for release rel at dir/name.
func writeKernel(t *testing.T, dir, name, rel string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, fakeSetup(rel+" (test@example) #1 SMP", 0x300), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func mkdir(t *testing.T, p string) string {
	t.Helper()
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestOpenModulesDir(t *testing.T) {
	const rel = "6.9.9-test"
	tests := []struct {
		name        string
		nextTo      bool // a modules/<rel> next to the kernel
		system      bool // a <system>/<rel>
		wantDir     string
		wantModsErr string
	}{
		{"next to kernel", true, true, "k/modules/" + rel, ""},
		{"system", false, true, "sys/" + rel, ""},
		{"neither", false, false, "", "neither %[1]s/k/modules/" + rel + " nor %[1]s/sys/" + rel + " exists"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			kpath := writeKernel(t, filepath.Join(root, "k"), "vmlinuz", rel)
			if tt.nextTo {
				mkdir(t, filepath.Join(root, "k/modules", rel, "kernel"))
			}
			if tt.system {
				mkdir(t, filepath.Join(root, "sys", rel, "kernel"))
			}
			k, err := open(kpath, filepath.Join(root, "sys"))
			if err != nil {
				t.Fatal(err)
			}
			want := Kernel{Path: kpath, Release: rel}
			if tt.wantDir != "" {
				want.ModulesDir = filepath.Join(root, tt.wantDir)
			}
			if diff := cmp.Diff(want, *k, cmp.AllowUnexported(Kernel{}), cmp.FilterPath(func(p cmp.Path) bool {
				return p.Last().String() == ".searched"
			}, cmp.Ignore())); diff != "" {
				t.Errorf("open (-want +got):\n%s", diff)
			}
			// Asking for nothing never fails.
			if ms, err := k.Modules(nil, nil); err != nil || ms != nil {
				t.Errorf("Modules(nil, nil) = %v, %v; want nil, nil", ms, err)
			}
			_, err = k.Modules([]string{"dm_mod"}, nil)
			if tt.wantModsErr == "" {
				if err == nil || !strings.Contains(err.Error(), "dm_mod: not found") {
					t.Errorf("Modules(dm_mod) error = %v, want not found", err)
				}
				return
			}
			wantErr := strings.ReplaceAll(tt.wantModsErr, "%[1]s", root)
			if err == nil || !strings.Contains(err.Error(), wantErr) {
				t.Errorf("Modules(dm_mod) error = %v, want it to contain %q", err, wantErr)
			}
		})
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	notKernel := filepath.Join(dir, "initrd")
	if err := os.WriteFile(notKernel, []byte("070701"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ path, want string }{
		{filepath.Join(dir, "missing"), "no such file"},
		{notKernel, notKernel + ": not a bzImage"},
		{dir, "is a directory"},
	} {
		if _, err := Open(tt.path); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Open(%s) error = %v, want it to contain %q", tt.path, err, tt.want)
		}
	}
}

func TestOpenDebian(t *testing.T) {
	for _, rel := range []string{"6.1.0-56-cloud-amd64", DefaultRelease} {
		t.Run(rel, func(t *testing.T) {
			p := filepath.Join(inputs, "vmlinuz-"+rel)
			if _, err := os.Stat(p); err != nil {
				t.Skipf("%s missing: run `make test-inputs`", p)
			}
			k, err := Open(p)
			if err != nil {
				t.Fatal(err)
			}
			if k.Release != rel {
				t.Errorf("Release = %q, want %q", k.Release, rel)
			}
			if want := filepath.Join(inputs, "modules", rel); k.ModulesDir != want {
				t.Errorf("ModulesDir = %q, want %q", k.ModulesDir, want)
			}
		})
	}
}

func TestFindDefault(t *testing.T) {
	name := "vmlinuz-" + DefaultRelease
	tests := []struct {
		name    string
		files   []string // kernels to create under root
		want    string
		wantErr bool
	}{
		{"installed", []string{"share/cvm/" + name}, "share/cvm/" + name, false},
		{"repository", []string{".cache/inputs/" + name}, ".cache/inputs/" + name, false},
		{"installed first", []string{"share/cvm/" + name, ".cache/inputs/" + name}, "share/cvm/" + name, false},
		{"none", nil, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			for _, f := range tt.files {
				writeKernel(t, filepath.Join(root, filepath.Dir(f)), filepath.Base(f), DefaultRelease)
			}
			k, err := findDefault(filepath.Join(root, "bin", "cvm"), filepath.Join(root, "sys"))
			if tt.wantErr {
				for _, want := range []string{root + "/share/cvm/" + name, root + "/.cache/inputs/" + name, "make test-inputs"} {
					if err == nil || !strings.Contains(err.Error(), want) {
						t.Errorf("findDefault error = %v, want it to contain %q", err, want)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := filepath.Join(root, tt.want); k.Path != want || k.Release != DefaultRelease {
				t.Errorf("findDefault = %s (%s), want %s (%s)", k.Path, k.Release, want, DefaultRelease)
			}
		})
	}
}

func TestDefaultEnv(t *testing.T) {
	p := writeKernel(t, t.TempDir(), "vmlinuz-custom", "6.9.9-custom")
	t.Setenv("CVM_KERNEL", p)
	k, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	if k.Path != p || k.Release != "6.9.9-custom" {
		t.Errorf("Default() = %s (%s), want %s (6.9.9-custom)", k.Path, k.Release, p)
	}
}

package kernel

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"errors"
	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/guest-agent/launchconfig"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/ulikunitz/xz"
)

// fakeModule returns a minimal ELF64 relocatable object whose only content
// is a .modinfo section holding info.
func fakeModule(info string) []byte {
	const shstr = "\x00.modinfo\x00.shstrtab\x00"
	infoOff := uint64(64)
	strOff := infoOff + uint64(len(info))
	shOff := (strOff + uint64(len(shstr)) + 7) &^ 7
	var b bytes.Buffer
	h := elf.Header64{
		Type: uint16(elf.ET_REL), Machine: uint16(elf.EM_X86_64), Version: uint32(elf.EV_CURRENT),
		Shoff: shOff, Ehsize: 64, Shentsize: 64, Shnum: 3, Shstrndx: 2,
	}
	copy(h.Ident[:], elf.ELFMAG)
	h.Ident[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	h.Ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	h.Ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	binary.Write(&b, binary.LittleEndian, h)
	b.WriteString(info)
	b.WriteString(shstr)
	b.Write(make([]byte, shOff-uint64(b.Len())))
	for _, s := range []elf.Section64{
		{},
		{Name: 1, Type: uint32(elf.SHT_PROGBITS), Flags: uint64(elf.SHF_ALLOC), Off: infoOff, Size: uint64(len(info)), Addralign: 1},
		{Name: 10, Type: uint32(elf.SHT_STRTAB), Off: strOff, Size: uint64(len(shstr)), Addralign: 1},
	} {
		binary.Write(&b, binary.LittleEndian, s)
	}
	return b.Bytes()
}

const testRelease = "6.9.9-test"

// info builds a .modinfo section the way modpost lays it out.
func info(name string, depends ...string) string {
	return "license=GPL\x00alias=fs-" + name + "\x00depends=" + strings.Join(depends, ",") +
		"\x00name=" + name + "\x00vermagic=" + testRelease + " SMP mod_unload \x00\x00\x00"
}

func xzData(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := xz.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(b)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzData(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// tree writes a module tree: files maps paths under kernel/ to contents.
func tree(t *testing.T, files map[string][]byte, builtin ...string) *Kernel {
	t.Helper()
	dir := t.TempDir()
	for p, b := range files {
		p = filepath.Join(dir, "kernel", p)
		mkdir(t, filepath.Dir(p))
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mkdir(t, filepath.Join(dir, "kernel"))
	var bi string
	for _, b := range builtin {
		bi += "kernel/" + b + "\n"
	}
	if err := os.WriteFile(filepath.Join(dir, "modules.builtin"), []byte(bi), 0o644); err != nil {
		t.Fatal(err)
	}
	return &Kernel{Path: "vmlinuz-test", Release: testRelease, ModulesDir: dir}
}

type got struct {
	Name    string
	Depends []string
}

func names(ms []Module) []got {
	var out []got
	for _, m := range ms {
		out = append(out, got{m.Name, m.Depends})
	}
	return out
}

func TestModulesSynthetic(t *testing.T) {
	diamond := map[string][]byte{
		"a/a.ko":    fakeModule(info("a", "b", "c")),
		"b/b.ko":    fakeModule(info("b", "d")),
		"c/c.ko.xz": xzData(t, fakeModule(info("c", "d", "bi"))),
		"d/d.ko.gz": gzData(t, fakeModule(info("d"))),
		"x-y.ko":    fakeModule(info("x_y", "d")),
		"lone.ko":   fakeModule(info("lone")),
	}
	tests := []struct {
		name               string
		files              map[string][]byte
		builtin            []string
		required, optional []string
		want               []got
		wantErr            string
		wantNotFound       bool
	}{
		{
			name: "diamond", files: diamond, builtin: []string{"fs/bi.ko"},
			required: []string{"a"},
			want:     []got{{"d", nil}, {"b", []string{"d"}}, {"c", []string{"d"}}, {"a", []string{"b", "c"}}},
		},
		{
			name: "request order", files: diamond, builtin: []string{"fs/bi.ko"},
			required: []string{"lone", "c", "a"},
			want:     []got{{"lone", nil}, {"d", nil}, {"c", []string{"d"}}, {"b", []string{"d"}}, {"a", []string{"b", "c"}}},
		},
		{
			name: "each once, dashes and underscores", files: diamond, builtin: []string{"fs/bi.ko"},
			required: []string{"x-y", "x_y", "d"}, optional: []string{"x-y", "d"},
			want: []got{{"d", nil}, {"x_y", []string{"d"}}},
		},
		{
			name: "built in", files: diamond, builtin: []string{"fs/bi.ko", "lone.ko"},
			required: []string{"bi", "lone"}, optional: []string{"bi"},
			want: nil,
		},
		{
			name: "optional missing", files: diamond, builtin: []string{"fs/bi.ko"},
			required: []string{"lone"}, optional: []string{"nosuch", "d"},
			want: []got{{"lone", nil}, {"d", nil}},
		},
		{
			name: "required missing", files: diamond, builtin: []string{"fs/bi.ko"},
			required: []string{"lone", "no-such"},
			wantErr:  "kernel " + testRelease + ": module no-such: not found in", wantNotFound: true,
		},
		{
			name: "dependency missing", files: diamond, // bi not built in now
			required: []string{"a"},
			wantErr:  "module a -> c needs bi: not found in", wantNotFound: true,
		},
		{
			name: "cycle",
			files: map[string][]byte{
				"p.ko": fakeModule(info("p", "q")),
				"q.ko": fakeModule(info("q", "r")),
				"r.ko": fakeModule(info("r", "p")),
			},
			required: []string{"p"},
			wantErr:  "module dependency cycle: p -> q -> r -> p",
		},
		{
			name:     "self cycle",
			files:    map[string][]byte{"p.ko": fakeModule(info("p", "p"))},
			required: []string{"p"},
			wantErr:  "cycle: p -> p",
		},
		{
			name:     "wrong kernel",
			files:    map[string][]byte{"p.ko": fakeModule("name=p\x00vermagic=6.1.0-1-amd64 SMP \x00")},
			required: []string{"p"},
			wantErr:  "is for kernel 6.1.0-1-amd64, not " + testRelease,
		},
		{
			name:     "wrong name",
			files:    map[string][]byte{"p.ko": fakeModule(info("q"))},
			required: []string{"p"},
			wantErr:  `calls itself "q"`,
		},
		{
			name:     "not ELF",
			files:    map[string][]byte{"p.ko": []byte("not a module")},
			required: []string{"p"},
			wantErr:  "not an ELF object",
		},
		{
			name:     "zstd",
			files:    map[string][]byte{"p.ko.zst": {0x28, 0xb5, 0x2f, 0xfd}},
			required: []string{"p"},
			wantErr:  "zstd-compressed modules are not supported",
		},
		{
			name:     "corrupt xz",
			files:    map[string][]byte{"p.ko.xz": []byte("\xfd7zXZ\x00garbage")},
			required: []string{"p"},
			wantErr:  "p.ko.xz: xz",
		},
		{
			name:     "two files",
			files:    map[string][]byte{"a/p.ko": fakeModule(info("p")), "b/p.ko.xz": xzData(t, fakeModule(info("p")))},
			required: []string{"lone"},
			wantErr:  "module p is both",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := tree(t, tt.files, tt.builtin...)
			ms, err := k.Modules(tt.required, tt.optional)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Modules error = %v, want it to contain %q", err, tt.wantErr)
				}
				if errors.Is(err, ErrNotFound) != tt.wantNotFound {
					t.Errorf("errors.Is(%v, ErrNotFound) = %v, want %v", err, !tt.wantNotFound, tt.wantNotFound)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, names(ms)); diff != "" {
				t.Errorf("Modules (-want +got):\n%s", diff)
			}
			for _, m := range ms {
				if !bytes.HasPrefix(m.Data, []byte("\x7fELF")) {
					t.Errorf("%s: data is not a decompressed ELF object", m.Name)
				}
			}
		})
	}
}

func TestParseModinfo(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    modinfo
		wantErr string
	}{
		{"modpost layout", info("dm_crypt", "dm-mod", "", "dm_mod", "dm-bufio"),
			modinfo{name: "dm_crypt", vermagic: testRelease + " SMP mod_unload ", depends: []string{"dm_mod", "dm_bufio"}}, ""},
		{"empty", "", modinfo{}, ""},
		{"only padding", "\x00\x00\x00", modinfo{}, ""},
		{"no depends", "name=xts\x00", modinfo{name: "xts"}, ""},
		{"value with =", "parm=x:a=b\x00name=n\x00", modinfo{name: "n"}, ""},
		{"repeated alias", "alias=a\x00alias=b\x00", modinfo{}, ""},
		{"not key=value", "license\x00", modinfo{}, `entry "license" is not key=value`},
		{"empty key", "=x\x00", modinfo{}, "is not key=value"},
		{"depends twice", "depends=a\x00depends=b\x00", modinfo{}, "depends= twice"},
		{"name twice", "name=a\x00name=b\x00", modinfo{}, "name= twice"},
		{"bad dependency", "depends=../../x\x00", modinfo{}, `depends= names "../../x"`},
		{"bad name", "name=a/b\x00", modinfo{}, `name= "a/b" is not`},
		{"long name", "name=" + strings.Repeat("n", 65) + "\x00", modinfo{}, "is not a module name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseModinfo([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseModinfo error = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(modinfo{})); diff != "" {
				t.Errorf("parseModinfo (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseModule(t *testing.T) {
	noModinfo := fakeModule("x")
	copy(noModinfo[bytes.Index(noModinfo, []byte(".modinfo")):], ".modinfX")
	for _, tt := range []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "not an ELF object"},
		{"truncated", fakeModule(info("a"))[:100], "not an ELF object"},
		{"no .modinfo", noModinfo, "no .modinfo section"},
	} {
		if _, err := parseModule(tt.in); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: parseModule error = %v, want it to contain %q", tt.name, err, tt.want)
		}
	}
	got, err := parseModule(fakeModule(info("a", "b")))
	if err != nil || got.name != "a" || !slices.Equal(got.depends, []string{"b"}) {
		t.Errorf("parseModule = %+v, %v; want name a, depends [b]", got, err)
	}
}

func FuzzParseModinfo(f *testing.F) {
	f.Add([]byte(info("dm_crypt", "dm_mod")))
	f.Add([]byte("depends=\x00name=xts\x00"))
	f.Add([]byte("depends=a,b,,c\x00\x00\x00alias=x=y\x00"))
	f.Add([]byte("=\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		info, err := parseModinfo(b)
		if err != nil {
			return
		}
		for _, d := range info.depends {
			if !validName(d) || strings.Contains(d, "-") {
				t.Fatalf("accepted dependency %q", d)
			}
		}
		if info.name != "" && !validName(info.name) {
			t.Fatalf("accepted name %q", info.name)
		}
	})
}

func FuzzParseModule(f *testing.F) {
	f.Add(fakeModule(info("dm_crypt", "dm_mod")))
	f.Add(fakeModule(""))
	f.Add([]byte("\x7fELF"))
	f.Fuzz(func(t *testing.T, b []byte) {
		parseModule(b) // must not panic
	})
}

// The module set the launcher puts into every initramfs, as launchconfig
// defines it (the sim set), with the SEV-SNP and TDX guest drivers as
// optional extras so both kernels are exercised with them.
var launchRequired, launchOptional = func() ([]string, []string) {
	req, opt := launchconfig.Modules(attestation.TEESim)
	return req, append(opt, "sev-guest", "tdx-guest")
}()

func TestModulesDebian(t *testing.T) {
	tests := []struct {
		release     string
		builtin     []string // asked for as required, must be skipped
		mustInclude []string
		missing     string // neither present nor built in
	}{
		{
			release:     "6.1.0-56-cloud-amd64",
			builtin:     []string{"ext4"},
			mustInclude: []string{"virtio", "virtio_ring", "dm_mod", "dm_crypt", "vsock", "vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport", "aesni_intel"},
			missing:     "sev-guest",
		},
		{
			release:     DefaultRelease,
			builtin:     []string{"ext4", "virtio", "virtio_ring", "ecb", "virtio_console"},
			mustInclude: []string{"dm_mod", "dm_crypt", "vsock", "vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport", "aesni_intel", "tsm", "sev_guest", "tdx_guest"},
			missing:     "no_such_module",
		},
	}
	for _, tt := range tests {
		t.Run(tt.release, func(t *testing.T) {
			dir := filepath.Join(inputs, "modules", tt.release)
			if _, err := os.Stat(dir); err != nil {
				t.Skipf("%s missing: run `make test-inputs`", dir)
			}
			k := &Kernel{Path: "vmlinuz-" + tt.release, Release: tt.release, ModulesDir: dir}
			ms, err := k.Modules(append(slices.Clone(launchRequired), tt.builtin...), launchOptional)
			if err != nil {
				t.Fatal(err)
			}
			pos := map[string]int{}
			for i, m := range ms {
				if _, dup := pos[m.Name]; dup {
					t.Errorf("%s appears twice", m.Name)
				}
				pos[m.Name] = i
				if !bytes.HasPrefix(m.Data, []byte("\x7fELF")) {
					t.Errorf("%s: data does not start with \\x7fELF", m.Name)
				}
			}
			for _, m := range ms {
				for _, d := range m.Depends {
					if p, ok := pos[d]; !ok || p > pos[m.Name] {
						t.Errorf("%s depends on %s, which is not loaded before it", m.Name, d)
					}
				}
			}
			for _, n := range slices.Concat(launchRequired, tt.mustInclude) {
				if slices.Contains(tt.builtin, n) {
					continue // asserted skipped below
				}
				if _, ok := pos[normalise(n)]; !ok {
					t.Errorf("%s missing from the resolved modules", n)
				}
			}
			for _, n := range tt.builtin {
				if _, ok := pos[n]; ok {
					t.Errorf("%s is built in but resolved as a module", n)
				}
			}
			deps := map[string][]string{}
			for _, m := range ms {
				deps[m.Name] = m.Depends
			}
			for n, want := range map[string][]string{
				"dm_crypt":                   {"dm_mod"},
				"vmw_vsock_virtio_transport": {"vmw_vsock_virtio_transport_common", "vsock"},
			} {
				for _, w := range want {
					if !slices.Contains(deps[n], w) {
						t.Errorf("%s depends on %v, want it to include %s", n, deps[n], w)
					}
				}
			}
			// The same request resolves to the same order every time.
			again, err := k.Modules(append(slices.Clone(launchRequired), tt.builtin...), launchOptional)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(names(ms), names(again)); diff != "" {
				t.Errorf("second resolution differs (-first +second):\n%s", diff)
			}
			_, err = k.Modules([]string{"dm_crypt", tt.missing}, nil)
			if err == nil || !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), tt.missing) || !strings.Contains(err.Error(), tt.release) {
				t.Errorf("Modules(%s) error = %v, want ErrNotFound naming it and %s", tt.missing, err, tt.release)
			}
		})
	}
}

package kernel

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ulikunitz/xz"
)

// ErrNotFound is wrapped by the error for a required module (or a
// dependency) that is neither in the module tree nor built into the kernel.
var ErrNotFound = errors.New("not found")

// Module is one loadable module, ready for finit_module.
type Module struct {
	Name    string   // the kernel's name for it: underscores, e.g. "dm_crypt"
	Data    []byte   // the decompressed ELF object
	Depends []string // names of the modules it needs (from .modinfo depends=)
}

// maxModuleSize bounds a decompressed module (the largest Debian modules are
// a few MiB), so a corrupt or hostile file cannot exhaust memory.
const maxModuleSize = 64 << 20

// Modules resolves module names (as modprobe takes them: "-" and "_" are
// the same) into modules with their dependencies, ordered so that each comes
// after everything it depends on, each once. The order is deterministic:
// the requests in the order given (required, then optional), each preceded
// by its dependencies in depends= order. A name listed in modules.builtin is
// built into the kernel and skipped. A required module that is neither
// present nor built in is an error (wrapping ErrNotFound), an optional one
// is skipped; a missing dependency of any module is an error.
func (k *Kernel) Modules(required, optional []string) ([]Module, error) {
	if len(required) == 0 && len(optional) == 0 {
		return nil, nil
	}
	if k.ModulesDir == "" {
		where := "no module tree"
		if len(k.searched) > 0 {
			where = "neither " + strings.Join(k.searched, " nor ") + " exists"
		}
		return nil, fmt.Errorf("kernel %s: modules for %s: %s", k.Path, k.Release, where)
	}
	r := &resolver{k: k, state: map[string]int{}}
	var err error
	if r.files, err = indexModules(k.ModulesDir); err != nil {
		return nil, err
	}
	if r.builtin, err = readBuiltin(filepath.Join(k.ModulesDir, "modules.builtin")); err != nil {
		return nil, err
	}
	for i, name := range slices.Concat(required, optional) {
		n := normalise(name)
		if r.builtin[n] {
			continue
		}
		if _, ok := r.files[n]; !ok {
			if i < len(required) {
				return nil, fmt.Errorf("kernel %s: module %s: %w in %s and not built in", k.Release, name, ErrNotFound, k.ModulesDir)
			}
			continue
		}
		if err := r.visit(n, nil); err != nil {
			return nil, err
		}
	}
	return r.order, nil
}

// normalise maps a module name to the kernel's spelling (underscores).
func normalise(name string) string { return strings.ReplaceAll(name, "-", "_") }

// moduleName returns the normalised module name of a module file name, or ""
// if it is not one.
func moduleName(file string) string {
	for _, ext := range []string{".ko", ".ko.xz", ".ko.gz", ".ko.zst"} {
		if n, ok := strings.CutSuffix(file, ext); ok && n != "" {
			return normalise(n)
		}
	}
	return ""
}

// indexModules maps each module name under dir/kernel to its file.
func indexModules(dir string) (map[string]string, error) {
	files := map[string]string{}
	err := filepath.WalkDir(filepath.Join(dir, "kernel"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		n := moduleName(d.Name())
		if n == "" {
			return nil
		}
		if other, ok := files[n]; ok {
			return fmt.Errorf("module %s is both %s and %s", n, other, p)
		}
		files[n] = p
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("kernel: index modules: %w", err)
	}
	return files, nil
}

// readBuiltin reads modules.builtin (lines like "kernel/fs/ext4/ext4.ko").
// A tree without one has no built-in modules listed.
func readBuiltin(path string) (map[string]bool, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]bool{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("kernel: %w", err)
	}
	defer f.Close()
	builtin := map[string]bool{}
	s := bufio.NewScanner(f)
	for s.Scan() {
		if n := moduleName(filepath.Base(strings.TrimSpace(s.Text()))); n != "" {
			builtin[n] = true
		}
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("kernel: read %s: %w", path, err)
	}
	return builtin, nil
}

type resolver struct {
	k       *Kernel
	files   map[string]string // module name -> file
	builtin map[string]bool
	state   map[string]int // visiting or done
	order   []Module
}

const (
	visiting = 1
	done     = 2
)

// visit appends module n after its dependencies. path is the chain of
// modules that led here, for cycle and missing-dependency errors.
func (r *resolver) visit(n string, path []string) error {
	switch r.state[n] {
	case done:
		return nil
	case visiting:
		return fmt.Errorf("kernel %s: module dependency cycle: %s -> %s", r.k.Release, strings.Join(path, " -> "), n)
	}
	r.state[n] = visiting
	path = append(path, n)
	file := r.files[n]
	data, err := readModule(file)
	if err != nil {
		return err
	}
	info, err := parseModule(data)
	if err != nil {
		return fmt.Errorf("kernel: module %s: %w", file, err)
	}
	if info.name != "" && info.name != n {
		return fmt.Errorf("kernel: module %s calls itself %q", file, info.name)
	}
	if v, _, _ := strings.Cut(info.vermagic, " "); info.vermagic != "" && v != r.k.Release {
		return fmt.Errorf("kernel: module %s is for kernel %s, not %s", file, v, r.k.Release)
	}
	var deps []string
	for _, d := range info.depends {
		if r.builtin[d] {
			continue
		}
		if _, ok := r.files[d]; !ok {
			return fmt.Errorf("kernel %s: module %s needs %s: %w in %s and not built in", r.k.Release, strings.Join(path, " -> "), d, ErrNotFound, r.k.ModulesDir)
		}
		if err := r.visit(d, path); err != nil {
			return err
		}
		deps = append(deps, d)
	}
	r.state[n] = done
	r.order = append(r.order, Module{Name: n, Data: data, Depends: deps})
	return nil
}

// readModule reads and decompresses a module file.
func readModule(file string) ([]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("kernel: %w", err)
	}
	defer f.Close()
	var rd io.Reader = f
	switch {
	case strings.HasSuffix(file, ".ko.xz"):
		if rd, err = xz.NewReader(bufio.NewReader(f)); err != nil {
			return nil, fmt.Errorf("kernel: module %s: xz: %w", file, err)
		}
	case strings.HasSuffix(file, ".ko.gz"):
		zr, err := gzip.NewReader(bufio.NewReader(f))
		if err != nil {
			return nil, fmt.Errorf("kernel: module %s: gzip: %w", file, err)
		}
		defer zr.Close()
		rd = zr
	case strings.HasSuffix(file, ".ko.zst"):
		return nil, fmt.Errorf("kernel: module %s: zstd-compressed modules are not supported (use .ko or .ko.xz)", file)
	}
	data, err := io.ReadAll(io.LimitReader(rd, maxModuleSize+1))
	if err != nil {
		return nil, fmt.Errorf("kernel: module %s: %w", file, err)
	}
	if len(data) > maxModuleSize {
		return nil, fmt.Errorf("kernel: module %s: larger than %d MiB decompressed", file, maxModuleSize>>20)
	}
	return data, nil
}

// modinfo is what Modules uses of a module's .modinfo section.
type modinfo struct {
	name     string   // "name=", normalised
	vermagic string   // "vermagic=", e.g. "6.12.117+deb13-cloud-amd64 SMP preempt mod_unload modversions "
	depends  []string // "depends=", normalised, in order
}

// parseModule reads the .modinfo section of a module's ELF object.
func parseModule(data []byte) (modinfo, error) {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return modinfo{}, fmt.Errorf("not an ELF object: %w", err)
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return modinfo{}, errors.New("no .modinfo section")
	}
	if sec.Type == elf.SHT_NOBITS || sec.Size > uint64(len(data)) {
		return modinfo{}, fmt.Errorf(".modinfo section of %d bytes does not fit the file", sec.Size)
	}
	b, err := sec.Data()
	if err != nil {
		return modinfo{}, fmt.Errorf("read .modinfo: %w", err)
	}
	return parseModinfo(b)
}

// parseModinfo parses a .modinfo section: NUL-separated "key=value"
// strings (with NUL padding between them). Keys may repeat (alias=, parm=);
// name, vermagic and depends must not.
func parseModinfo(b []byte) (modinfo, error) {
	var info modinfo
	seen := map[string]bool{}
	for _, kv := range bytes.Split(b, []byte{0}) {
		if len(kv) == 0 {
			continue
		}
		k, v, ok := strings.Cut(string(kv), "=")
		if !ok || k == "" {
			return modinfo{}, fmt.Errorf(".modinfo entry %q is not key=value", truncate(kv))
		}
		switch k {
		case "name", "vermagic", "depends":
			if seen[k] {
				return modinfo{}, fmt.Errorf(".modinfo has %s= twice", k)
			}
			seen[k] = true
		}
		switch k {
		case "name":
			info.name = normalise(v)
		case "vermagic":
			info.vermagic = v
		case "depends":
			for d := range strings.SplitSeq(v, ",") {
				if d == "" {
					continue
				}
				if !validName(d) {
					return modinfo{}, fmt.Errorf(".modinfo depends= names %q, not a module name", truncate([]byte(d)))
				}
				d = normalise(d)
				if !slices.Contains(info.depends, d) {
					info.depends = append(info.depends, d)
				}
			}
		}
	}
	if info.name != "" && !validName(info.name) {
		return modinfo{}, fmt.Errorf(".modinfo name= %q is not a module name", truncate([]byte(info.name)))
	}
	return info, nil
}

// validName reports whether s can be a module name (and so a file name).
func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func truncate(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + "…"
	}
	return string(b)
}

// Package kernel finds a guest kernel and the modules its initramfs needs.
//
// Open reads a bzImage's release string from its setup header and locates
// the matching module tree (lib/modules/<release> as the Debian package
// ships it). Modules resolves module names as modprobe takes them into
// decompressed module files, dependencies first, using each module's own
// .modinfo "depends=" list, so no modules.dep (and no depmod) is needed.
package kernel

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// DefaultRelease is the release of the default guest kernel: the Debian 13
// cloud kernel (package linux-image-6.12.117+deb13-cloud-amd64 6.12.117-1).
const DefaultRelease = "6.12.117+deb13-cloud-amd64"

// systemModules is where a distribution installs module trees.
const systemModules = "/lib/modules"

// Kernel is a guest kernel image and its module tree.
type Kernel struct {
	Path    string // the bzImage
	Release string // e.g. "6.12.117+deb13-cloud-amd64"
	// ModulesDir holds kernel/…, modules.builtin, … for Release. Empty when
	// Open found no tree; then Modules fails for any module asked for.
	ModulesDir string

	// searched lists the module tree locations Open tried, for errors.
	searched []string
}

// Open reads the kernel at path and finds its module tree: first
// <dir of path>/modules/<release>, then /lib/modules/<release>. A kernel
// without a module tree opens; Modules then reports both places.
func Open(path string) (*Kernel, error) {
	return open(path, systemModules)
}

func open(path, systemDir string) (*Kernel, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("kernel: %w", err)
	}
	defer f.Close()
	// The version string lives in the setup code, which is at most
	// 0x200 + 0xffff bytes plus the string itself.
	hdr := make([]byte, setupReadSize)
	n, err := io.ReadFull(f, hdr)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("kernel: read %s: %w", path, err)
	}
	rel, err := parseRelease(hdr[:n])
	if err != nil {
		return nil, fmt.Errorf("kernel: %s: %w", path, err)
	}
	k := &Kernel{Path: path, Release: rel}
	for _, dir := range []string{
		filepath.Join(filepath.Dir(path), "modules", rel),
		filepath.Join(systemDir, rel),
	} {
		k.searched = append(k.searched, dir)
		if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
			k.ModulesDir = dir
			break
		}
	}
	return k, nil
}

// setupReadSize covers the largest kernel_version offset (0xffff + 0x200)
// and a release string after it.
const setupReadSize = 0x200 + 0xffff + maxVersionLen

// maxVersionLen bounds the kernel_version string ("6.12.117+deb13-cloud-amd64
// (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian …").
const maxVersionLen = 512

// parseRelease returns the kernel release (the first word of the kernel_version
// string) of a bzImage, given at least its setup code. It checks the boot
// sector signature, the "HdrS" magic and the boot protocol version, and
// accepts only releases made of letters, digits and ".+-_~" (the release
// becomes a directory name).
func parseRelease(setup []byte) (string, error) {
	const (
		bootFlag   = 0x1fe // 0xaa55
		magic      = 0x202 // "HdrS"
		version    = 0x206 // boot protocol version
		versionPtr = 0x20e // kernel_version, relative to 0x200
	)
	if len(setup) < versionPtr+2 {
		return "", fmt.Errorf("not a bzImage: %d bytes is shorter than a setup header", len(setup))
	}
	le16 := func(off int) int { return int(setup[off]) | int(setup[off+1])<<8 }
	if le16(bootFlag) != 0xaa55 || string(setup[magic:magic+4]) != "HdrS" {
		return "", errors.New("not a bzImage: no boot signature 0xaa55 and \"HdrS\" setup header magic")
	}
	if v := le16(version); v < 0x0200 {
		return "", fmt.Errorf("bzImage boot protocol %#x has no kernel_version field (need 2.00 or later)", v)
	}
	ptr := le16(versionPtr)
	if ptr == 0 {
		return "", errors.New("bzImage has no kernel_version string (field at 0x20e is 0)")
	}
	start := ptr + 0x200
	if start >= len(setup) {
		return "", fmt.Errorf("bzImage kernel_version at %#x is beyond the setup code (%d bytes)", start, len(setup))
	}
	s := setup[start:min(len(setup), start+maxVersionLen)]
	end := 0
	for end < len(s) && s[end] != 0 && s[end] != ' ' {
		end++
	}
	rel := string(s[:end])
	if rel == "" || rel == "." || rel == ".." {
		return "", fmt.Errorf("bzImage kernel_version at %#x has no release", start)
	}
	for _, c := range []byte(rel) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(".+-_~", c) >= 0) {
			return "", fmt.Errorf("bzImage release %q has a character other than letters, digits and \".+-_~\"", rel)
		}
	}
	return rel, nil
}

// Default opens the default guest kernel (DefaultRelease): the file named by
// $CVM_KERNEL if set, else vmlinuz-<DefaultRelease> in ../share/cvm/ or
// ../.cache/inputs/ next to the running executable's directory (an
// installation, or a build in the repository's bin/).
func Default() (*Kernel, error) {
	if p := os.Getenv("CVM_KERNEL"); p != "" {
		return Open(p)
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("kernel: find the default kernel: %w", err)
	}
	if r, err := filepath.EvalSymlinks(exe); err == nil {
		exe = r
	}
	return findDefault(exe, systemModules)
}

func findDefault(exe, systemDir string) (*Kernel, error) {
	base := filepath.Dir(filepath.Dir(exe))
	name := "vmlinuz-" + DefaultRelease
	places := []string{
		filepath.Join(base, "share", "cvm", name),
		filepath.Join(base, ".cache", "inputs", name),
	}
	for _, p := range places {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return open(p, systemDir)
		}
	}
	return nil, fmt.Errorf("kernel: no default kernel %s: looked in $CVM_KERNEL (unset), %s; `make test-inputs` fetches it into .cache/inputs",
		name, strings.Join(places, ", "))
}

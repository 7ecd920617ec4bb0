// Package testhost is the VM test tier: it boots real Linux guests with the
// builtin VMM (`cvm vm run`) and checks what they report.
//
// The check suite ([Check]) runs one guest: it writes a pattern on a disk
// image, starts `cvm vm run` with that disk, an entropy device and a hybrid
// vsock socket, and reads the guest's console. The guest's /init (command
// internal/testhost/guestinit) loads the virtio modules and reports, line by
// line: that it reached /init, the vCPUs online, the disk pattern it read (and
// it writes one back), a vsock round trip it initiated (to <uds>_5001), one the
// host initiated (CONNECT 5000 through the socket), and entropy bytes; then it
// powers off, and `cvm vm run` must exit 0.
//
// Where /dev/kvm is backed by hardware virtualization, the test runs the
// suite directly. Elsewhere it starts a disposable test host ([Boot]): QEMU in
// TCG mode with -cpu max (which exposes SVM and nested paging), a Debian cloud
// kernel, and an initramfs whose /init (command internal/testhost/hostinit)
// loads irqbypass, kvm and kvm-amd from the kernel's own module tree and then
// runs the same suite inside, printing each report as one JSON line on the
// serial console.
//
// Inputs (kernels and their module trees) come from .cache/inputs, filled by
// `make test-inputs`; [FindKernel] names exactly what is missing.
package testhost

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// ErrMissing is wrapped by errors about a missing prerequisite (an input
// file, a program); tests skip on it and name the error.
var ErrMissing = errors.New("testhost: missing prerequisite")

// Releases are the Debian cloud kernels the VM tier boots: Debian 13's
// (the default guest kernel) and Debian 12's.
var Releases = []string{"6.12.117+deb13-cloud-amd64", "6.1.0-56-cloud-amd64"}

// Kernel is one Debian cloud kernel from .cache/inputs.
type Kernel struct {
	Release string
	Image   string // bzImage
	Modules string // the unpacked /lib/modules/<release> tree
}

// RepoRoot returns the directory of the cvm module's go.mod, searching up
// from the working directory.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("testhost: %w", err)
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(b, []byte("module github.com/greatjail/cvm\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("testhost: no go.mod of github.com/greatjail/cvm above the working directory")
		}
		dir = parent
	}
}

// FindKernel locates release's image and module tree under
// root/.cache/inputs. A missing one yields an error wrapping ErrMissing
// that names the file and `make test-inputs`.
func FindKernel(root, release string) (Kernel, error) {
	in := filepath.Join(root, ".cache", "inputs")
	k := Kernel{
		Release: release,
		Image:   filepath.Join(in, "vmlinuz-"+release),
		Modules: filepath.Join(in, "modules", release),
	}
	for _, p := range []string{k.Image, filepath.Join(k.Modules, "modules.builtin")} {
		if _, err := os.Stat(p); err != nil {
			return Kernel{}, fmt.Errorf("%w: %s (run `make test-inputs`)", ErrMissing, p)
		}
	}
	return k, nil
}

// QEMU returns the path of qemu-system-x86_64, or an error wrapping
// ErrMissing.
func QEMU() (string, error) {
	p, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return "", fmt.Errorf("%w: qemu-system-x86_64 (Debian package qemu-system-x86)", ErrMissing)
	}
	return p, nil
}

// HardwareKVM reports whether /dev/kvm exists and the CPU advertises
// VT-x or AMD-V. A /dev/kvm without them (a software nested-virtualization
// module) cannot run a Linux guest at a usable speed.
func HardwareKVM() bool {
	if _, err := os.Stat("/dev/kvm"); err != nil {
		return false
	}
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "flags" {
			for _, f := range strings.Fields(v) {
				if f == "vmx" || f == "svm" {
					return true
				}
			}
			return false
		}
	}
	return false
}

// goTool returns the go command.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}

// BuildTest compiles the tests of package pkg (relative to root) as a
// static linux/amd64 test binary at out (go test -c).
func BuildTest(root, pkg, out string) error {
	cmd := exec.Command(goTool(), "test", "-c", "-trimpath", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("testhost: go test -c %s: %w\n%s", pkg, err, b)
	}
	return nil
}

// BuildGo builds the main package pkg (relative to root, like ./cmd/cvm)
// as a static linux/amd64 binary at out.
func BuildGo(root, pkg, out string) error {
	cmd := exec.Command(goTool(), "build", "-trimpath", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("testhost: go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

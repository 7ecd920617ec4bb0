package testhost

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/greatjail/cvm/internal/testhost/wire"
	"github.com/greatjail/cvm/launcher/initramfs"
	"github.com/greatjail/cvm/launcher/kernel"
)

// GuestModules are the modules the test guest loads (with their
// dependencies): the virtio-mmio transport and the three device drivers.
var GuestModules = []string{"virtio_mmio", "virtio_blk", "vmw_vsock_virtio_transport", "virtio_rng"}

// HostModules are the modules the test host loads to get /dev/kvm.
var HostModules = []string{"irqbypass", "kvm", "kvm_amd"}

// HostConfigPath is where the test host's /init finds its HostConfig.
const HostConfigPath = "/etc/cvmtest/host.json"

// HostConfig tells the test host's /init what to run.
type HostConfig struct {
	VMM    string        // the cvm binary
	Guests []GuestConfig // run in this order
	// Tests are Go test binaries (go test -c) to run with -test.v once
	// /dev/kvm works: the kvm tier of vmm/kvm and vmm, for real.
	Tests []string `json:",omitempty"`
	// Bench lists guests to time (TimeBoot) with the VMM and, when QEMU
	// is set, with QEMU -M microvm on KVM, alternating, Rounds times each.
	Bench  []GuestConfig `json:",omitempty"`
	QEMU   string        `json:",omitempty"`
	Rounds int           `json:",omitempty"`
}

// TestRun is the outcome of one test binary in the test host.
type TestRun struct {
	Name    string
	OK      bool
	Summary string // the "--- FAIL", "--- SKIP" and "--- PASS" lines
}

// GuestConfig is one guest for Check.
type GuestConfig struct {
	Name    string
	Kernel  string // bzImage path
	Initrd  string // initramfs path
	VCPUs   int
	Memory  string // `cvm vm run --memory` syntax
	Cmdline string
}

// Modules resolves names in k's module tree (launcher/kernel): the modules
// with their dependencies first, decompressed, built-in ones left out.
func Modules(k Kernel, names ...string) ([]kernel.Module, error) {
	kk, err := kernel.Open(k.Image)
	if err != nil {
		return nil, fmt.Errorf("testhost: %w", err)
	}
	if kk.Release != k.Release {
		return nil, fmt.Errorf("testhost: %s is release %s, want %s", k.Image, kk.Release, k.Release)
	}
	kk.ModulesDir = k.Modules
	mods, err := kk.Modules(names, nil)
	if err != nil {
		return nil, fmt.Errorf("testhost: %w", err)
	}
	return mods, nil
}

// initramfsWith builds an initramfs with init as /init, the modules as
// /lib/modules/NAME.ko listed in load order in wire.ModuleList, the
// usual mount points, /dev/console, and the extra files.
func initramfsWith(init []byte, mods []kernel.Module, extra map[string][]byte) ([]byte, error) {
	a := initramfs.New()
	var names []string
	errs := []error{a.AddFile("init", init, 0o755)}
	for _, m := range mods {
		errs = append(errs, a.AddFile("lib/modules/"+m.Name+".ko", m.Data, 0o644))
		names = append(names, m.Name)
	}
	errs = append(errs, a.AddFile(strings.TrimPrefix(wire.ModuleList, "/"), []byte(strings.Join(names, "\n")+"\n"), 0o644))
	for _, d := range []string{"dev", "proc", "sys", "tmp", "run"} {
		errs = append(errs, a.AddDir(d, 0o755))
	}
	errs = append(errs, a.AddCharDev("dev/console", 0o600, 5, 1), a.AddCharDev("dev/kmsg", 0o600, 1, 11))
	for name, data := range extra {
		errs = append(errs, a.AddFile(name, data, 0o755))
	}
	for _, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("testhost: initramfs: %w", err)
		}
	}
	var b bytes.Buffer
	if _, err := a.WriteTo(&b); err != nil {
		return nil, fmt.Errorf("testhost: initramfs: %w", err)
	}
	return b.Bytes(), nil
}

// GuestInitramfs returns the test guest's initramfs for kernel k, with
// init (the guestinit binary) as /init.
func GuestInitramfs(init []byte, k Kernel) ([]byte, error) {
	mods, err := Modules(k, GuestModules...)
	if err != nil {
		return nil, err
	}
	return initramfsWith(init, mods, nil)
}

// HostInitramfs returns the test host's initramfs for kernel k: init (the
// hostinit binary) as /init, kvm-amd and its dependencies, the files
// (absolute path in the test host → contents: the cvm binary, guest kernels
// and initramfs images) and cfg at HostConfigPath.
func HostInitramfs(init []byte, k Kernel, cfg HostConfig, files map[string][]byte) ([]byte, error) {
	mods, err := Modules(k, HostModules...)
	if err != nil {
		return nil, err
	}
	j, err := json.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("testhost: %w", err)
	}
	extra := map[string][]byte{strings.TrimPrefix(HostConfigPath, "/"): j}
	for p, b := range files {
		extra[strings.TrimPrefix(p, "/")] = b
	}
	return initramfsWith(init, mods, extra)
}

package launchconfig

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/greatjail/cvm/attestation"
)

// MaxModules bounds the module order file.
const MaxModules = 256

// Modules returns the kernel modules an initramfs for tee carries, by
// name (the file is ModulesDir/<name>.ko). Required modules must be in the
// kernel's module tree unless built in; optional ones are skipped when the
// kernel lacks them. Dependencies (modinfo depends=) come on top, and load
// order is the builder's job. The set is the same for every engine, so the
// measurement does not depend on the engine.
func Modules(tee attestation.TEE) (required, optional []string) {
	required = []string{
		// dm-crypt's aes-xts-plain64 is xts over ecb(aes): ecb is a module
		// in Debian 12's kernel, built into Debian 13's.
		"virtio_blk", "dm_mod", "dm_crypt", "xts", "ecb", "virtio_mmio", "vsock",
		"vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport", "virtio_rng",
		// The qemu engine's link is a virtio-serial port: built into
		// Debian 13's kernel, a module in Debian 12's.
		"virtio_console",
	}
	switch tee {
	case attestation.TEESEVSNP:
		required = append(required, "sev-guest")
	case attestation.TEETDX:
		required = append(required, "tdx-guest")
	}
	return required, []string{"aesni_intel", "configfs", "tsm"}
}

// PodModules returns the kernel modules of a pod-mode initramfs for tee
// (TEENone for a plain pod): the disks (each container's root file system
// is a read-only ext4 or erofs disk), overlayfs for the writable layers,
// both links (virtio-serial for the qemu engine, vsock for the builtin
// one), entropy and, in a confidential pod, the TEE's guest driver. No
// dm-crypt: container disks are not encrypted. Modules (launch mode) is
// not affected, so launch measurements stay what they were.
func PodModules(tee attestation.TEE) (required, optional []string) {
	required = []string{
		"virtio_blk", "overlay", "virtio_console", "virtio_mmio", "vsock",
		"vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport", "virtio_rng",
	}
	switch tee {
	case attestation.TEESEVSNP:
		required = append(required, "sev-guest")
	case attestation.TEETDX:
		required = append(required, "tdx-guest")
	}
	optional = []string{"erofs"}
	if tee != TEENone {
		optional = append(optional, "configfs", "tsm")
	}
	return required, optional
}

// FormatModules writes the module order file: one name per line.
func FormatModules(names []string) ([]byte, error) {
	if len(names) > MaxModules {
		return nil, fmt.Errorf("%w: %d modules, limit %d", ErrInvalid, len(names), MaxModules)
	}
	var b bytes.Buffer
	for _, n := range names {
		if err := checkModuleName(n); err != nil {
			return nil, err
		}
		b.WriteString(n)
		b.WriteByte('\n')
	}
	return b.Bytes(), nil
}

// ParseModules reads the module order file: one module name per line, in
// load order. Blank lines are ignored; names are letters, digits, _ and -.
func ParseModules(b []byte) ([]string, error) {
	if len(b) > MaxModules*64 {
		return nil, fmt.Errorf("%w: module list of %d bytes is too long", ErrInvalid, len(b))
	}
	var names []string
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if err := checkModuleName(line); err != nil {
			return nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		names = append(names, line)
	}
	if len(names) > MaxModules {
		return nil, fmt.Errorf("%w: %d modules, limit %d", ErrInvalid, len(names), MaxModules)
	}
	return names, nil
}

func checkModuleName(n string) error {
	if n == "" || len(n) > 56 {
		return fmt.Errorf("%w: module name %q: empty or over 56 bytes", ErrInvalid, n)
	}
	for _, r := range n {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '_' || r == '-') {
			return fmt.Errorf("%w: module name %q: %q is not a letter, digit, _ or -", ErrInvalid, n, r)
		}
	}
	return nil
}

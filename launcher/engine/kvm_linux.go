package engine

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// KVM ioctls (linux/kvm.h): _IO(KVMIO, 0x00) and _IO(KVMIO, 0x01).
const (
	kvmGetAPIVersion = 0xAE00
	kvmCreateVM      = 0xAE01
	kvmAPIVersion    = 12
)

// ProbeKVM reports whether /dev/kvm is usable: it opens, its API version
// is 12, and KVM_CREATE_VM succeeds (the VM is closed again at once).
func ProbeKVM() error { return probeKVM("/dev/kvm") }

func probeKVM(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err // *fs.PathError: "open /dev/kvm: ..."
	}
	defer f.Close()
	v, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), kvmGetAPIVersion, 0)
	if errno != 0 {
		return fmt.Errorf("%s: KVM_GET_API_VERSION: %w", path, errno)
	}
	if v != kvmAPIVersion {
		return fmt.Errorf("%s: KVM API version %d, want %d", path, v, kvmAPIVersion)
	}
	vm, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), kvmCreateVM, 0)
	if errno != 0 {
		return fmt.Errorf("%s: KVM_CREATE_VM: %w", path, errno)
	}
	unix.Close(int(vm))
	return nil
}

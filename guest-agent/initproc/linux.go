package initproc

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// Linux is the real System. Its KillAll and PowerOff act only in PID 1.
type Linux struct{}

// Mount creates target and mounts fstype there.
func (Linux) Mount(source, target, fstype string, flags uintptr, data string) error {
	if err := os.MkdirAll(target, 0o755); err != nil {
		return err
	}
	return unix.Mount(source, target, fstype, flags, data)
}

// LoadModule loads a module file with finit_module.
func (Linux) LoadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.FinitModule(int(f.Fd()), "", 0)
}

var errNotInit = errors.New("initproc: not PID 1")

// KillAll sends sig to every process but PID 1 (kill(-1)).
func (Linux) KillAll(sig syscall.Signal) error {
	if os.Getpid() != 1 {
		return errNotInit
	}
	err := unix.Kill(-1, sig)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	return err
}

// PowerOff syncs and powers off. It returns only on failure.
func (Linux) PowerOff() error {
	if os.Getpid() != 1 {
		return errNotInit
	}
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		return fmt.Errorf("initproc: power off: %w", err)
	}
	return nil
}

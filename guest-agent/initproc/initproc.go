// Package initproc does what PID 1 of the microVM must: mount the kernel
// file systems, load the initramfs's kernel modules in order, reap every
// child (orphans included) without stealing the exit status of a process
// the agent waits for, and power the machine off.
//
// The system calls sit behind the System interface so the sequencing can
// be tested unprivileged; Linux is the real implementation.
package initproc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/greatjail/cvm/guest-agent/launchconfig"
)

// System is what PID 1 asks of the kernel.
type System interface {
	// Mount mounts fstype at target (creating target).
	Mount(source, target, fstype string, flags uintptr, data string) error
	// LoadModule loads the module file at path (finit_module).
	LoadModule(path string) error
	// KillAll sends sig to every process but the caller.
	KillAll(sig syscall.Signal) error
	// PowerOff syncs the file systems and powers the machine off.
	PowerOff() error
}

// Logf logs one line.
type Logf func(format string, args ...any)

// A mount PID 1 makes.
type mount struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
	optional               bool
}

const (
	msNoSuid = syscall.MS_NOSUID
	msNoDev  = syscall.MS_NODEV
	msNoExec = syscall.MS_NOEXEC
)

// earlyMounts are made before modules are loaded.
var earlyMounts = []mount{
	{"proc", "/proc", "proc", msNoSuid | msNoDev | msNoExec, "", false},
	{"sysfs", "/sys", "sysfs", msNoSuid | msNoDev | msNoExec, "", false},
	{"devtmpfs", "/dev", "devtmpfs", msNoSuid, "mode=0755", false},
	{"tmpfs", "/run", "tmpfs", msNoSuid | msNoDev, "mode=0755", false},
	{"tmpfs", "/tmp", "tmpfs", msNoSuid | msNoDev, "mode=1777", false},
	{"devpts", "/dev/pts", "devpts", msNoSuid | msNoExec, "mode=0620,ptmxmode=0666", true},
}

// configfsMount is made after modules (configfs may be one).
var configfsMount = mount{"configfs", "/sys/kernel/config", "configfs", msNoSuid | msNoDev | msNoExec, "", true}

func doMount(sys System, m mount, logf Logf) error {
	err := sys.Mount(m.source, m.target, m.fstype, m.flags, m.data)
	if errors.Is(err, syscall.EBUSY) {
		return nil // already mounted (the kernel mounted devtmpfs itself)
	}
	if err != nil {
		if m.optional {
			logf("initproc: no %s at %s: %v", m.fstype, m.target, err)
			return nil
		}
		return fmt.Errorf("initproc: mount %s at %s: %w", m.fstype, m.target, err)
	}
	return nil
}

// Setup is PID 1's start: the early mounts, the modules listed in
// modulesFile (from modulesDir) in order, then configfs.
func Setup(sys System, modulesFile, modulesDir string, logf Logf) error {
	for _, m := range earlyMounts {
		if err := doMount(sys, m, logf); err != nil {
			return err
		}
	}
	names, err := ReadModules(modulesFile)
	if err != nil {
		return err
	}
	if err := LoadModules(sys, modulesDir, names, logf); err != nil {
		return err
	}
	return doMount(sys, configfsMount, logf)
}

// SetupDefault is Setup with the initramfs's fixed paths.
func SetupDefault(sys System, logf Logf) error {
	return Setup(sys, launchconfig.ModulesPath, launchconfig.ModulesDir, logf)
}

// ReadModules reads the module order file. A missing file means no
// modules.
func ReadModules(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("initproc: %w", err)
	}
	names, err := launchconfig.ParseModules(b)
	if err != nil {
		return nil, fmt.Errorf("initproc: %s: %w", path, err)
	}
	return names, nil
}

// LoadModules loads dir/<name>.ko for each name, in order. A module
// already loaded (EEXIST) is fine; a driver with no device (ENODEV, ENXIO)
// is logged and skipped; any other failure stops the loading with an
// error naming the module.
func LoadModules(sys System, dir string, names []string, logf Logf) error {
	for _, n := range names {
		p := filepath.Join(dir, n+".ko")
		err := sys.LoadModule(p)
		switch {
		case err == nil, errors.Is(err, syscall.EEXIST):
		case errors.Is(err, syscall.ENODEV), errors.Is(err, syscall.ENXIO):
			logf("initproc: module %s: no device (%v), skipped", n, err)
		default:
			return fmt.Errorf("initproc: loading module %s (%s): %w", n, p, err)
		}
	}
	return nil
}

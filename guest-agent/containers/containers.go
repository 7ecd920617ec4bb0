// Package containers is the guest agent's pod mode: it runs the containers
// of one pod sandbox inside the microVM on behalf of the containerd shim,
// and serves them as the ttrpc service Containers
// (proto/cvm/agent/v1/containers.proto).
//
// A container is a root file system prepared under the state directory
// (a read-only ext4/erofs block device with a writable overlay layer on
// tmpfs, or a directory), the mounts of its OCI spec on top of it, and the
// processes started in it: each is chrooted into that root with the
// arguments, environment, working directory, user and rlimits of its OCI
// process spec. Processes of a container are found by their root
// directory, so Pids, Stats and Signal(all) see the descendants too. A
// process whose spec asks for a terminal gets a pseudo-terminal (tty_linux.go),
// and a confidential pod's released secrets appear under SecretsDir.
//
// Not yet done: PID/UTS/IPC namespaces per container, capabilities,
// seccomp, cgroup limits. The rlimits are applied right after
// the process starts (prlimit), not before its first instruction.
package containers

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/runtime-spec/specs-go"
)

// Errors the service maps to status codes.
var (
	// ErrNotFound: no such container or process.
	ErrNotFound = errors.New("containers: not found")
	// ErrExists: the container or exec ID is in use.
	ErrExists = errors.New("containers: already exists")
	// ErrState: the request does not fit the process's state.
	ErrState = errors.New("containers: wrong state")
	// ErrInvalid: a malformed request or OCI spec.
	ErrInvalid = errors.New("containers: invalid argument")
)

// OutputChunk bounds the data of one output chunk or stdin write.
const OutputChunk = 32 << 10

// Manager holds the containers of one pod.
type Manager struct {
	dir   string // state directory: <dir>/<container id>/...
	start Starter

	sysBlock, devDir string
	diskWait         time.Duration
	secrets          func() []Secret

	mu         sync.Mutex
	containers map[string]*container // guarded by mu
}

// Starter starts a command and delivers its exit status once. The agent,
// which is PID 1 and reaps every child, passes its reaper's Start
// (initproc.Reaper.Start); nothing else may wait for the child then.
type Starter func(*exec.Cmd) (<-chan syscall.WaitStatus, error)

// Options configure a Manager.
type Options struct {
	// Dir keeps the containers' mounts and state (created if needed),
	// e.g. /run/cvm/containers.
	Dir string
	// Start starts processes; nil means exec.Cmd.Start and Wait.
	Start Starter
	// SysBlock is where block devices are listed (default /sys/block),
	// and DevDir where their nodes are (default /dev): for Rootfs.Serial.
	SysBlock, DevDir string
	// Secrets returns the secrets released to the pod, which every
	// container created afterwards finds under SecretsDir; nil means none.
	Secrets func() []Secret
	// DiskWait bounds the wait for a disk named by serial to appear
	// (default 30 s: a hot-plugged disk shows up asynchronously).
	DiskWait time.Duration
}

// New returns a Manager.
func New(opts Options) (*Manager, error) {
	if opts.Dir == "" {
		return nil, fmt.Errorf("%w: no state directory", ErrInvalid)
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("containers: state directory %s: %w", opts.Dir, err)
	}
	start := opts.Start
	if start == nil {
		start = startAndWait
	}
	m := &Manager{dir: opts.Dir, start: start, containers: map[string]*container{},
		sysBlock: opts.SysBlock, devDir: opts.DevDir, diskWait: opts.DiskWait, secrets: opts.Secrets}
	if m.sysBlock == "" {
		m.sysBlock = "/sys/block"
	}
	if m.devDir == "" {
		m.devDir = "/dev"
	}
	if m.diskWait == 0 {
		m.diskWait = 30 * time.Second
	}
	return m, nil
}

// startAndWait is the Starter of a process that is not PID 1.
func startAndWait(cmd *exec.Cmd) (<-chan syscall.WaitStatus, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	ch := make(chan syscall.WaitStatus, 1)
	go func() {
		cmd.Wait()
		ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
		ch <- ws
	}()
	return ch, nil
}

// Rootfs says where a container's root file system comes from: Device (a
// block device holding an FSType image, mounted read-only under a writable
// overlay layer), Serial (the same, the block device named by its serial:
// a disk hot-plugged after boot; with Size, the exact size in bytes the
// disk must show) or Directory.
type Rootfs struct {
	Device    string
	Serial    string
	Size      uint64
	FSType    string
	Directory string
}

type container struct {
	id   string
	spec *specs.Spec
	dir  string // <Manager.dir>/<id>
	root string // dir/rootfs, the processes' root

	// mounts are the mount points set up, in order; unmounted in reverse.
	mounts []string
	// pts is the container's own devpts instance (its spec mounts devpts
	// at /dev/pts, as containerd's and CRI's specs do), or "": terminals
	// come from it, so that they have a name in the container.
	pts string

	mu    sync.Mutex
	procs map[string]*process // exec ID -> process; guarded by mu
}

// Exit is the outcome of a finished process.
type Exit struct {
	Status uint32 // code, or 128+signal
	At     time.Time
}

// validID accepts container and exec IDs that are safe as path elements.
func validID(id string, empty bool) error {
	if id == "" && empty {
		return nil
	}
	if id == "" || len(id) > 128 || id == "." || id == ".." || filepath.Base(id) != id {
		return fmt.Errorf("%w: bad id %q", ErrInvalid, id)
	}
	return nil
}

func (m *Manager) get(id string) (*container, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.containers[id]
	if !ok {
		return nil, fmt.Errorf("%w: container %q", ErrNotFound, id)
	}
	return c, nil
}

func (c *container) process(execID string) (*process, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.procs[execID]
	if !ok {
		return nil, fmt.Errorf("%w: process %q in container %q", ErrNotFound, execID, c.id)
	}
	return p, nil
}

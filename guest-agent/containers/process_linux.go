package containers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// process is one process the Manager started (or is about to start).
type process struct {
	execID string
	spec   *specs.Process

	// Set once by start, before done can close; read-only after.
	pid    int
	stdin  *os.File    // write end; nil if not wanted
	output [2]*os.File // read ends of stdout, stderr; nil if not wanted
	// tty is the master of the process's terminal (nil without one): for
	// resizing and typing EOF. stdin and output[0] are further
	// descriptors of it.
	tty *os.File

	mu        sync.Mutex
	outTaken  [2]bool // guarded by mu
	stdinDone bool    // guarded by mu; stdin closed
	exit      Exit    // guarded by mu; valid once done is closed
	isStarted bool    // guarded by mu

	done chan struct{} // closed when the process has exited and been reaped
}

func (p *process) started() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.isStarted
}

// closeFiles closes the agent's ends of the process's pipes.
func (p *process) closeFiles() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stdin != nil && !p.stdinDone {
		p.stdin.Close()
		p.stdinDone = true
	}
	if p.tty != nil {
		p.tty.Close() // closing it again is harmless
	}
	for i, f := range p.output {
		if f != nil && !p.outTaken[i] {
			f.Close()
			p.outTaken[i] = true
		}
	}
}

// Stdio says which standard streams the caller will use. A process whose
// spec asks for a terminal gets one as its stdin, stdout and stderr; its
// output is the Stdout stream, so it needs Stdout and no Stderr.
type Stdio struct {
	Stdin, Stdout, Stderr bool
	// TerminalWidth and TerminalHeight are the terminal's initial window
	// size (at most 65535); 0 and 0 mean the spec's consoleSize.
	TerminalWidth, TerminalHeight uint32
}

// Start starts a process in container id: the init process when execID is
// "" (from the container's OCI spec), an exec process otherwise (from
// processSpec, the JSON of an OCI process). It returns the guest PID.
func (m *Manager) Start(ctx context.Context, id, execID string, processSpec []byte, stdio Stdio) (int, error) {
	if err := validID(execID, true); err != nil {
		return 0, err
	}
	c, err := m.get(id)
	if err != nil {
		return 0, err
	}
	spec := c.spec.Process
	if execID != "" {
		spec = new(specs.Process)
		if err := json.Unmarshal(processSpec, spec); err != nil {
			return 0, fmt.Errorf("%w: process spec of %q in %q: %v", ErrInvalid, execID, id, err)
		}
	}
	if len(spec.Args) == 0 {
		return 0, fmt.Errorf("%w: process %q in %q has no args", ErrInvalid, execID, id)
	}
	if err := checkProcess(spec); err != nil {
		return 0, fmt.Errorf("process %q in %q: %w", execID, id, err)
	}

	c.mu.Lock()
	if _, ok := c.procs[execID]; ok {
		c.mu.Unlock()
		return 0, fmt.Errorf("%w: process %q in container %q", ErrExists, execID, id)
	}
	if execID != "" {
		if init, ok := c.procs[""]; !ok || !init.started() {
			c.mu.Unlock()
			return 0, fmt.Errorf("%w: exec %q in %q before the container's init process started", ErrState, execID, id)
		}
	}
	p := &process{execID: execID, spec: spec, done: make(chan struct{})}
	c.procs[execID] = p
	c.mu.Unlock()

	if err := c.start(p, stdio, m.start); err != nil {
		c.mu.Lock()
		delete(c.procs, execID)
		c.mu.Unlock()
		return 0, err
	}
	return p.pid, nil
}

// start forks and executes p chrooted into c's root.
func (c *container) start(p *process, stdio Stdio, starter Starter) (err error) {
	var parentEnds, childEnds []*os.File
	defer func() {
		for _, f := range childEnds {
			f.Close()
		}
		if err != nil {
			for _, f := range parentEnds {
				f.Close()
			}
		}
	}()
	pipe := func() (r, w *os.File, err error) {
		r, w, err = os.Pipe()
		if err != nil {
			return nil, nil, fmt.Errorf("containers: pipe for %q: %w", c.id, err)
		}
		return r, w, nil
	}

	argv0, err := lookPath(c.root, p.spec.Args[0], p.spec.Env)
	if err != nil {
		return err
	}
	cwd := p.spec.Cwd
	if cwd == "" {
		cwd = "/"
	}
	if !path.IsAbs(cwd) {
		return fmt.Errorf("%w: cwd %q of %q is not absolute", ErrInvalid, cwd, c.id)
	}
	cmd := &exec.Cmd{
		Path: argv0,
		Args: p.spec.Args,
		Env:  p.spec.Env,
		Dir:  cwd,
		SysProcAttr: &syscall.SysProcAttr{
			Chroot:    c.root,
			Setsid:    true,
			Pdeathsig: syscall.SIGKILL,
			Credential: &syscall.Credential{
				Uid:    p.spec.User.UID,
				Gid:    p.spec.User.GID,
				Groups: p.spec.User.AdditionalGids,
			},
		},
	}
	if cmd.Env == nil {
		cmd.Env = []string{}
	}
	if p.spec.Terminal {
		if err := c.startTerminal(p, stdio, cmd, &parentEnds, &childEnds); err != nil {
			return err
		}
	}
	if stdio.Stdin && !p.spec.Terminal {
		r, w, err := pipe()
		if err != nil {
			return err
		}
		childEnds, parentEnds = append(childEnds, r), append(parentEnds, w)
		cmd.Stdin, p.stdin = r, w
	}
	for i, want := range []bool{stdio.Stdout, stdio.Stderr} {
		if !want || p.spec.Terminal {
			continue
		}
		r, w, err := pipe()
		if err != nil {
			return err
		}
		childEnds, parentEnds = append(childEnds, w), append(parentEnds, r)
		p.output[i] = r
		if i == 0 {
			cmd.Stdout = w
		} else {
			cmd.Stderr = w
		}
	}
	exited, err := starter(cmd)
	if err != nil {
		return fmt.Errorf("containers: start %q in %q: %w", p.spec.Args[0], c.id, err)
	}
	p.pid = cmd.Process.Pid
	// The rlimits apply from here on; the first instructions of the
	// program run with the agent's limits (see the package doc).
	for _, rl := range p.spec.Rlimits {
		if err := setRlimit(p.pid, rl); err != nil {
			cmd.Process.Kill()
			<-exited
			return fmt.Errorf("containers: %q in %q: %w", p.spec.Args[0], c.id, err)
		}
	}
	p.mu.Lock()
	p.isStarted = true
	p.mu.Unlock()
	go p.wait(exited)
	return nil
}

// wait records the process's exit when its status arrives.
func (p *process) wait(exited <-chan syscall.WaitStatus) {
	ws := <-exited
	status := uint32(ws.ExitStatus())
	if ws.Signaled() {
		status = 128 + uint32(ws.Signal())
	}
	p.mu.Lock()
	p.exit = Exit{Status: status, At: time.Now()}
	p.mu.Unlock()
	close(p.done)
}

var rlimits = map[string]int{
	"RLIMIT_AS": unix.RLIMIT_AS, "RLIMIT_CORE": unix.RLIMIT_CORE, "RLIMIT_CPU": unix.RLIMIT_CPU,
	"RLIMIT_DATA": unix.RLIMIT_DATA, "RLIMIT_FSIZE": unix.RLIMIT_FSIZE, "RLIMIT_LOCKS": unix.RLIMIT_LOCKS,
	"RLIMIT_MEMLOCK": unix.RLIMIT_MEMLOCK, "RLIMIT_MSGQUEUE": unix.RLIMIT_MSGQUEUE, "RLIMIT_NICE": unix.RLIMIT_NICE,
	"RLIMIT_NOFILE": unix.RLIMIT_NOFILE, "RLIMIT_NPROC": unix.RLIMIT_NPROC, "RLIMIT_RSS": unix.RLIMIT_RSS,
	"RLIMIT_RTPRIO": unix.RLIMIT_RTPRIO, "RLIMIT_RTTIME": unix.RLIMIT_RTTIME, "RLIMIT_SIGPENDING": unix.RLIMIT_SIGPENDING,
	"RLIMIT_STACK": unix.RLIMIT_STACK,
}

func setRlimit(pid int, rl specs.POSIXRlimit) error {
	res, ok := rlimits[rl.Type]
	if !ok {
		return fmt.Errorf("%w: unknown rlimit %q", ErrInvalid, rl.Type)
	}
	lim := unix.Rlimit{Cur: rl.Soft, Max: rl.Hard}
	if err := unix.Prlimit(pid, res, &lim, nil); err != nil {
		return fmt.Errorf("rlimit %s: %w", rl.Type, err)
	}
	return nil
}

// lookPath finds name as the container will execute it: a path with a
// slash as it is, otherwise the first executable in the PATH of env
// (inside root).
func lookPath(root, name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	search := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			search = v
		}
	}
	for _, dir := range filepath.SplitList(search) {
		if !path.IsAbs(dir) {
			continue
		}
		p := path.Join(dir, name)
		if fi, err := os.Stat(filepath.Join(root, p)); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		} else if err == nil {
			continue
		}
		// An absolute symlink in the image resolves against the agent's
		// root, not the container's: try it as a link inside root.
		if fi, err := os.Lstat(filepath.Join(root, p)); err == nil && fi.Mode()&os.ModeSymlink != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: %q not found in PATH %s of the container", ErrInvalid, name, search)
}

// Output returns the read end of one of a process's output streams
// (stream 1 = stdout, 2 = stderr). Each stream is handed out once; the
// caller reads it to EOF and closes it.
func (m *Manager) Output(id, execID string, stream int) (io.ReadCloser, error) {
	if stream != 1 && stream != 2 {
		return nil, fmt.Errorf("%w: output stream %d", ErrInvalid, stream)
	}
	c, err := m.get(id)
	if err != nil {
		return nil, err
	}
	p, err := c.process(execID)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	f := p.output[stream-1]
	if f == nil || p.outTaken[stream-1] {
		return nil, fmt.Errorf("%w: output stream %d of %q in %q was not requested or is taken", ErrState, stream, execID, id)
	}
	p.outTaken[stream-1] = true
	if p.tty != nil {
		return ptyReader{f}, nil
	}
	return f, nil
}

// WriteStdin writes data to a process's standard input.
func (m *Manager) WriteStdin(id, execID string, data []byte) error {
	p, err := m.proc(id, execID)
	if err != nil {
		return err
	}
	p.mu.Lock()
	w, closed := p.stdin, p.stdinDone
	p.mu.Unlock()
	if w == nil || closed {
		return fmt.Errorf("%w: stdin of %q in %q is not open", ErrState, execID, id)
	}
	if _, err := w.Write(data); err != nil {
		return fmt.Errorf("containers: stdin of %q in %q: %w", execID, id, err)
	}
	return nil
}

// CloseStdin closes a process's standard input; closing it twice is fine.
// For a process with a terminal it types the terminal's EOF character
// (see typeEOF) and refuses further writes.
func (m *Manager) CloseStdin(id, execID string) error {
	p, err := m.proc(id, execID)
	if err != nil {
		return err
	}
	p.mu.Lock()
	w, tty := p.stdin, p.tty != nil
	if w == nil || p.stdinDone {
		p.mu.Unlock()
		return nil
	}
	p.stdinDone = true
	p.mu.Unlock()
	// Not under p.mu: typing into a terminal whose input is full blocks
	// until the process reads (or exits), and Signal needs p.mu.
	if tty {
		// EIO: no process holds the terminal any more.
		if err := typeEOF(w); err != nil && !errors.Is(err, syscall.EIO) {
			w.Close()
			return fmt.Errorf("containers: EOF to the terminal of %q in %q: %w", execID, id, err)
		}
	}
	return w.Close()
}

func (m *Manager) proc(id, execID string) (*process, error) {
	c, err := m.get(id)
	if err != nil {
		return nil, err
	}
	return c.process(execID)
}

// Signal sends sig to a process, or with all to every process of the
// container. Signalling a process that has exited is ErrState.
func (m *Manager) Signal(id, execID string, sig syscall.Signal, all bool) error {
	c, err := m.get(id)
	if err != nil {
		return err
	}
	if all {
		c.signalAll(sig)
		return nil
	}
	p, err := c.process(execID)
	if err != nil {
		return err
	}
	if !p.started() {
		return fmt.Errorf("%w: process %q in %q has not started", ErrState, execID, id)
	}
	select {
	case <-p.done:
		return fmt.Errorf("%w: process %q in %q has exited", ErrState, execID, id)
	default:
	}
	if p.pid <= 0 { // never signal a process group by accident
		return fmt.Errorf("containers: process %q in %q has no pid", execID, id)
	}
	if err := unix.Kill(p.pid, sig); err != nil {
		return fmt.Errorf("containers: signal %d to %q in %q: %w", sig, execID, id, err)
	}
	return nil
}

// signalAll signals every process whose root is c's root.
func (c *container) signalAll(sig syscall.Signal) {
	for _, pid := range c.pids() {
		if pid > 1 {
			unix.Kill(pid, sig)
		}
	}
}

// Wait blocks until the process exits, or ctx ends.
func (m *Manager) Wait(ctx context.Context, id, execID string) (Exit, error) {
	p, err := m.proc(id, execID)
	if err != nil {
		return Exit{}, err
	}
	if !p.started() {
		return Exit{}, fmt.Errorf("%w: process %q in %q has not started", ErrState, execID, id)
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		return Exit{}, ctx.Err()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exit, nil
}

// Process is one process of a container, as Pids reports it.
type Process struct {
	Pid    int
	ExecID string // set for the processes the Manager started
}

// Pids lists the processes of container id.
func (m *Manager) Pids(id string) ([]Process, error) {
	c, err := m.get(id)
	if err != nil {
		return nil, err
	}
	started := map[int]string{}
	c.mu.Lock()
	for _, p := range c.procs {
		if p.started() {
			started[p.pid] = p.execID
		}
	}
	c.mu.Unlock()
	var out []Process
	for _, pid := range c.pids() {
		out = append(out, Process{Pid: pid, ExecID: started[pid]})
	}
	return out, nil
}

// pids lists the processes whose root directory is c's root: the started
// processes and everything they started.
func (c *container) pids() []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil || pid <= 0 {
			continue
		}
		root, err := os.Readlink(fmt.Sprintf("/proc/%d/root", pid))
		if err == nil && root == c.root {
			out = append(out, pid)
		}
	}
	return out
}

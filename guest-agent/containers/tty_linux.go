package containers

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// maxWinsize bounds a terminal's width and height (struct winsize holds
// 16-bit fields).
const maxWinsize = 65535

// agentPts is the devpts instance the agent allocates pseudo-terminals
// from for a container without one of its own. In the guest the agent
// mounts devtmpfs at /dev and devpts at /dev/pts (guest-agent/initproc);
// /dev/ptmx allocates from that devpts.
const agentPts = "/dev/pts"

// openPty allocates a pseudo-terminal from the devpts instance mounted at
// pts (its multiplexer pts/ptmx; "/dev/ptmx" for agentPts, which is the
// same there and works where the host's pts/ptmx has mode 0): its master
// (pollable, for the agent) and its slave (for the process). Neither
// becomes the agent's controlling terminal. A slave from the container's
// own instance is /dev/pts/N inside the container: ttyname works.
func openPty(pts string) (master, slave *os.File, err error) {
	ptmx := filepath.Join(pts, "ptmx")
	if pts == agentPts {
		ptmx = "/dev/ptmx"
	}
	master, err = os.OpenFile(ptmx, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("containers: open %s: %w", ptmx, err)
	}
	defer func() {
		if err != nil {
			master.Close()
		}
	}()
	var sfd int
	var cerr error
	err = ctl(master, func(fd int) {
		if cerr = unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); cerr != nil {
			cerr = fmt.Errorf("unlock: %w", cerr)
			return
		}
		// TIOCGPTPEER (Linux 4.13) opens the slave without a path lookup.
		r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TIOCGPTPEER, uintptr(unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC))
		if errno == 0 {
			sfd = int(r)
			return
		}
		n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
		if err != nil {
			cerr = fmt.Errorf("TIOCGPTPEER: %v; TIOCGPTN: %w", errno, err)
			return
		}
		name := filepath.Join(pts, strconv.Itoa(n))
		if sfd, cerr = unix.Open(name, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0); cerr != nil {
			cerr = fmt.Errorf("open %s: %w", name, cerr)
		}
	})
	if err == nil {
		err = cerr
	}
	if err != nil {
		return nil, nil, fmt.Errorf("containers: pseudo-terminal from %s: %w", ptmx, err)
	}
	return master, os.NewFile(uintptr(sfd), "pty slave"), nil
}

// ctl runs fn on f's descriptor, safely against a concurrent Close.
func ctl(f *os.File, fn func(fd int)) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	return rc.Control(func(fd uintptr) { fn(int(fd)) })
}

// dupFile returns a second descriptor of f's open file (pollable like f).
func dupFile(f *os.File) (*os.File, error) {
	var nfd int
	var derr error
	if err := ctl(f, func(fd int) { nfd, derr = unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("containers: dup %s: %w", f.Name(), derr)
	}
	return os.NewFile(uintptr(nfd), f.Name()), nil
}

// setWinsize sets the window size of the terminal whose master is f.
func setWinsize(f *os.File, width, height uint16) error {
	var ierr error
	err := ctl(f, func(fd int) {
		ierr = unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Col: width, Row: height})
	})
	if err == nil {
		err = ierr
	}
	return err
}

// typeEOF types the terminal's end-of-file character (VEOF, normally ^D)
// into the terminal whose master is f, as a user closing the input would:
// a program reading a line in canonical mode reads end-of-file, a shell
// with line editing sees ^D on an empty line and exits. This is how the
// agent closes the standard input of a process with a terminal: closing
// the master instead would hang the terminal up and lose its pending
// output.
func typeEOF(f *os.File) error {
	var t *unix.Termios
	var terr error
	if err := ctl(f, func(fd int) { t, terr = unix.IoctlGetTermios(fd, unix.TCGETS) }); err != nil {
		return err
	}
	if terr != nil {
		return terr
	}
	eof := t.Cc[unix.VEOF]
	if eof == 0 { // _POSIX_VDISABLE
		eof = 4
	}
	_, err := f.Write([]byte{eof})
	return err
}

// initialWinsize is the window size a process's terminal starts with: the
// request's, else the spec's consoleSize, else none (0x0).
func initialWinsize(spec *specs.Process, stdio Stdio) (width, height uint16, err error) {
	w, h := uint(stdio.TerminalWidth), uint(stdio.TerminalHeight)
	if w == 0 && h == 0 && spec.ConsoleSize != nil {
		w, h = spec.ConsoleSize.Width, spec.ConsoleSize.Height
	}
	if w > maxWinsize || h > maxWinsize {
		return 0, 0, fmt.Errorf("%w: terminal window size %dx%d (limit %d)", ErrInvalid, w, h, maxWinsize)
	}
	return uint16(w), uint16(h), nil
}

// ptyReader reads a terminal's master: once every descriptor of the slave
// is closed (the process and its children are gone), Linux reports EIO,
// which is the end of the output.
type ptyReader struct{ *os.File }

func (r ptyReader) Read(b []byte) (int, error) {
	n, err := r.File.Read(b)
	if errors.Is(err, syscall.EIO) {
		err = io.EOF
	}
	return n, err
}

// ResizePty sets the window size of a process's terminal; the process
// gets SIGWINCH. A process without a terminal, or not started, is
// ErrState.
func (m *Manager) ResizePty(id, execID string, width, height uint16) error {
	p, err := m.proc(id, execID)
	if err != nil {
		return err
	}
	if !p.started() {
		return fmt.Errorf("%w: process %q in %q has not started", ErrState, execID, id)
	}
	if p.tty == nil {
		return fmt.Errorf("%w: process %q in %q has no terminal", ErrState, execID, id)
	}
	if err := setWinsize(p.tty, width, height); err != nil {
		if errors.Is(err, os.ErrClosed) {
			return fmt.Errorf("%w: terminal of %q in %q is closed", ErrState, execID, id)
		}
		return fmt.Errorf("containers: resize terminal of %q in %q: %w", execID, id, err)
	}
	return nil
}

// startTerminal gives the process about to start a new pseudo-terminal as
// its stdin, stdout, stderr and controlling terminal, and keeps the
// master's descriptors in p: p.tty, p.output[0] (the output) and p.stdin
// (if wanted). The descriptors are added to parentEnds (closed on failure)
// and childEnds (closed once the process started).
func (c *container) startTerminal(p *process, stdio Stdio, cmd *exec.Cmd, parentEnds, childEnds *[]*os.File) error {
	if !stdio.Stdout || stdio.Stderr {
		return fmt.Errorf("%w: process %q in %q has a terminal: it needs stdout and no stderr", ErrInvalid, p.execID, c.id)
	}
	width, height, err := initialWinsize(p.spec, stdio)
	if err != nil {
		return err
	}
	pts := c.pts
	if pts == "" {
		pts = agentPts
	}
	master, slave, err := openPty(pts)
	if err != nil {
		return err
	}
	*parentEnds, *childEnds = append(*parentEnds, master), append(*childEnds, slave)
	if width != 0 || height != 0 {
		if err := setWinsize(master, width, height); err != nil {
			return fmt.Errorf("containers: terminal window size of %q in %q: %w", p.execID, c.id, err)
		}
	}
	// The process's user owns its terminal, as login does it.
	var cerr error
	if err := ctl(slave, func(fd int) { cerr = unix.Fchown(fd, int(p.spec.User.UID), -1) }); err != nil || cerr != nil {
		return fmt.Errorf("containers: chown terminal of %q in %q: %w", p.execID, c.id, errors.Join(err, cerr))
	}
	out, err := dupFile(master)
	if err != nil {
		return err
	}
	*parentEnds = append(*parentEnds, out)
	p.tty, p.output[0] = master, out
	if stdio.Stdin {
		in, err := dupFile(master)
		if err != nil {
			return err
		}
		*parentEnds = append(*parentEnds, in)
		p.stdin = in
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr.Setsid = true
	cmd.SysProcAttr.Setctty = true
	cmd.SysProcAttr.Ctty = 0 // the child's descriptor 0, the slave
	return nil
}

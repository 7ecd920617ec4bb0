package shim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/fifo"
	"github.com/containerd/log"

	agentv1 "github.com/greatjail/cvm/proto/cvm/agent/v1"
)

// drainGrace bounds how long the shim waits, after a process exited, for
// its output streams to end (a background child may hold them open).
const drainGrace = 5 * time.Second

type exit struct {
	status uint32
	at     time.Time
}

// proc is one process of a task: the init process or an exec process.
type proc struct {
	id, execID            string
	stdin, stdout, stderr string // containerd's FIFO paths ("" = not used)
	spec                  []byte // exec processes: the OCI process JSON
	// terminal: the process has a terminal in the guest; its output is
	// the stdout stream and stderr is not used.
	terminal bool

	mu     sync.Mutex
	status task.Status // guarded by mu
	pid    uint32      // guarded by mu
	exit   exit        // guarded by mu; valid once done is closed
	// stdinR is the shim's reader of the stdin FIFO while it copies;
	// stdinKeep the shim's own writer of it, held so that the reader sees
	// EOF only after CloseIO (as runc's shim does). Guarded by mu.
	stdinR, stdinKeep io.Closer
	stdinOK           bool // guarded by mu; CloseIO came (or the copy ended)
	// size is the terminal's window size (width, height) as ResizePty last
	// set it; sent is what the agent has. Guarded by mu.
	size, sent [2]uint32
	// resizeMu orders the resizes sent to the agent.
	resizeMu sync.Mutex

	done chan struct{} // closed once the process has exited and its IO closed

	// cancel stops the IO copies (Delete of a process that never drained).
	cancel context.CancelFunc
	copies sync.WaitGroup // the output copies
}

func newProc(id, execID, stdin, stdout, stderr string) *proc {
	return &proc{id: id, execID: execID, stdin: stdin, stdout: stdout, stderr: stderr,
		status: task.Status_CREATED, done: make(chan struct{})}
}

func (p *proc) name() string {
	if p.execID == "" {
		return "init process"
	}
	return fmt.Sprintf("exec %q", p.execID)
}

// eventID is the ID of the process in TaskExit: the exec ID, or the
// container ID for the init process.
func (p *proc) eventID() string {
	if p.execID == "" {
		return p.id
	}
	return p.execID
}

func (p *proc) state() task.Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status
}

func (p *proc) pidValue() uint32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pid
}

func (p *proc) exitValue() exit {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exit
}

// markExited records an exit for a process that never started; false if
// it has started (or is already marked).
func (p *proc) markExited(status uint32, at time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.status != task.Status_CREATED {
		return false
	}
	p.status = task.Status_STOPPED
	p.exit = exit{status, at}
	close(p.done)
	return true
}

// start asks the agent to start the process and begins the stdio copies.
func (p *proc) start(ctx context.Context, c agentv1.ContainersClient) error {
	p.mu.Lock()
	if p.status != task.Status_CREATED {
		p.mu.Unlock()
		return fmt.Errorf("%s of task %q: already started: %w", p.name(), p.id, errdefs.ErrFailedPrecondition)
	}
	p.status = task.Status_RUNNING // claimed; undone on failure
	size := p.size
	p.mu.Unlock()

	stderr := p.stderr
	if p.terminal {
		stderr = "" // everything arrives as stdout
	}
	resp, err := c.Start(ctx, &agentv1.StartProcessRequest{
		ContainerId: p.id, ExecId: p.execID, Process: p.spec,
		Stdin: p.stdin != "", Stdout: p.stdout != "", Stderr: stderr != "",
		TerminalWidth: size[0], TerminalHeight: size[1],
	})
	if err != nil {
		p.mu.Lock()
		p.status = task.Status_CREATED
		p.mu.Unlock()
		return fmt.Errorf("%s of task %q: agent start: %w", p.name(), p.id, err)
	}
	p.mu.Lock()
	p.pid = resp.GetPid()
	p.sent = size
	p.mu.Unlock()
	if p.terminal {
		// A resize that arrived while the agent was starting the process.
		if err := p.resize(ctx, c); err != nil {
			log.G(ctx).WithError(err).WithField("id", p.id).WithField("exec", p.execID).Warn("shim: resize terminal")
		}
	}

	// The copies outlive the request: they end when the process's output
	// ends, or when cancel is called.
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p.cancel = cancel
	for _, o := range []struct {
		path   string
		stream agentv1.StdioStream
	}{{p.stdout, agentv1.StdioStream_STDIO_STREAM_STDOUT}, {stderr, agentv1.StdioStream_STDIO_STREAM_STDERR}} {
		if o.path == "" {
			continue
		}
		p.copies.Add(1)
		go func() {
			defer p.copies.Done()
			if err := p.copyOut(cctx, c, o.path, o.stream); err != nil && cctx.Err() == nil {
				log.G(ctx).WithError(err).WithField("id", p.id).WithField("exec", p.execID).Warn("shim: output copy")
			}
		}()
	}
	if p.stdin != "" {
		go func() {
			if err := p.copyIn(cctx, c); err != nil && cctx.Err() == nil {
				log.G(ctx).WithError(err).WithField("id", p.id).WithField("exec", p.execID).Warn("shim: stdin copy")
			}
		}()
	}
	return nil
}

// setSize records a terminal window size and, once the process runs in
// the guest, sends it to the agent. Before that, start sends it.
func (p *proc) setSize(ctx context.Context, c agentv1.ContainersClient, width, height uint32) error {
	p.mu.Lock()
	p.size = [2]uint32{width, height}
	p.mu.Unlock()
	return p.resize(ctx, c)
}

// resize sends the recorded window size to the agent if the process runs
// there with another size. A process that exited meanwhile is fine.
func (p *proc) resize(ctx context.Context, c agentv1.ContainersClient) error {
	p.resizeMu.Lock()
	defer p.resizeMu.Unlock()
	p.mu.Lock()
	size, running := p.size, p.status == task.Status_RUNNING && p.pid != 0
	if !running || size == p.sent {
		p.mu.Unlock()
		return nil
	}
	p.sent = size
	p.mu.Unlock()
	_, err := c.ResizePty(ctx, &agentv1.ResizePtyRequest{ContainerId: p.id, ExecId: p.execID, Width: size[0], Height: size[1]})
	if err != nil && errdefs.IsFailedPrecondition(errgrpc.ToNative(err)) {
		return nil // exited, or its terminal is closed
	}
	if err != nil {
		return fmt.Errorf("%s of task %q: agent resize: %w", p.name(), p.id, err)
	}
	return nil
}

// copyOut copies one output stream of the process from the agent into
// containerd's FIFO, and closes the FIFO when the stream ends.
func (p *proc) copyOut(ctx context.Context, c agentv1.ContainersClient, path string, stream agentv1.StdioStream) error {
	// Opening for writing blocks until the reader (containerd's client)
	// has the FIFO open; fifo.OpenFifo gives up when ctx ends.
	w, err := fifo.OpenFifo(ctx, path, syscall.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer w.Close()
	out, err := c.Output(ctx, &agentv1.ProcessOutputRequest{ContainerId: p.id, ExecId: p.execID, Stream: stream})
	if err != nil {
		return fmt.Errorf("agent output: %w", err)
	}
	for {
		chunk, err := out.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("agent output: %w", err)
		}
		if _, err := w.Write(chunk.GetData()); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
}

// copyIn copies containerd's stdin FIFO to the process until EOF, then
// closes the process's stdin. The shim holds a writer of the FIFO until
// CloseIO, so EOF means: the client closed its end and asked for stdin
// to end, and everything it wrote before has been read. Closing the
// reader at CloseIO instead would drop what is still in the FIFO's
// buffer (`printf … | ctr run -i` loses its input), and a CloseIO before
// the copy started would leave the process waiting for input forever.
func (p *proc) copyIn(ctx context.Context, c agentv1.ContainersClient) error {
	defer p.closeStdinWith(context.WithoutCancel(ctx), c)
	// O_NONBLOCK so the open does not wait for a writer; fifo sets the
	// file back to blocking reads.
	r, err := fifo.OpenFifo(ctx, p.stdin, syscall.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", p.stdin, err)
	}
	// With a reader open, a non-blocking open for writing succeeds.
	keep, err := fifo.OpenFifo(ctx, p.stdin, syscall.O_WRONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		r.Close()
		return fmt.Errorf("open %s for writing: %w", p.stdin, err)
	}
	p.mu.Lock()
	p.stdinR = r
	if p.stdinOK {
		keep.Close() // CloseIO came first: read what is there, then EOF
	} else {
		p.stdinKeep = keep
	}
	p.mu.Unlock()
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := c.WriteStdin(ctx, &agentv1.WriteStdinRequest{ContainerId: p.id, ExecId: p.execID, Data: buf[:n]}); werr != nil {
				return fmt.Errorf("agent stdin: %w", werr)
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, os.ErrClosed) {
				return nil
			}
			return fmt.Errorf("read %s: %w", p.stdin, err)
		}
	}
}

// closeStdin handles CloseIO: it drops the shim's writer of the FIFO, so
// copyIn reads what is left and then sees EOF once the client's end is
// closed too.
func (p *proc) closeStdin() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stdinOK = true
	if p.stdinKeep != nil {
		p.stdinKeep.Close()
		p.stdinKeep = nil
	}
}

// closeStdinWith ends the copy's side: the FIFO is closed and the
// process's stdin closed in the guest.
func (p *proc) closeStdinWith(ctx context.Context, c agentv1.ContainersClient) {
	p.stopStdin()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c.CloseStdin(ctx, &agentv1.CloseStdinRequest{ContainerId: p.id, ExecId: p.execID})
}

// stopStdin closes both of the shim's ends of the stdin FIFO, which ends
// a copy blocked in a read.
func (p *proc) stopStdin() {
	p.closeStdin()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stdinR != nil {
		p.stdinR.Close()
		p.stdinR = nil
	}
}

// closeIO stops every copy of a process (Delete).
func (p *proc) closeIO() {
	if p.cancel != nil {
		p.cancel()
	}
	p.stopStdin()
}

// waitExit waits for the process to exit in the guest, lets its output
// drain into the FIFOs (bounded by drainGrace), closes the shim's FIFO
// copies, records the exit and returns it. The caller publishes TaskExit.
func (p *proc) waitExit(c agentv1.ContainersClient) exit {
	var e exit
	resp, err := c.Wait(context.Background(), &agentv1.WaitProcessRequest{ContainerId: p.id, ExecId: p.execID})
	if err != nil {
		// The sandbox is gone: report the process as killed.
		e = exit{status: 128 + uint32(syscall.SIGKILL), at: time.Now()}
	} else {
		e = exit{status: resp.GetExitStatus(), at: time.Unix(0, resp.GetExitedAtUnixNano())}
	}
	drained := make(chan struct{})
	go func() {
		p.copies.Wait()
		close(drained)
	}()
	select {
	case <-drained:
	case <-time.After(drainGrace):
	}
	p.closeIO()
	<-drained
	p.mu.Lock()
	p.status = task.Status_STOPPED
	p.exit = e
	p.mu.Unlock()
	close(p.done)
	return e
}

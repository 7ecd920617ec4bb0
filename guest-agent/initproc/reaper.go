package initproc

import (
	"errors"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"syscall"
)

// Reaper collects every exited child of this process with wait4(-1), as
// PID 1 must (orphans are re-parented to it), and hands each status to
// whoever started that child through Start. Nothing else in the process
// may wait for children: exec.Cmd.Wait and os.Process.Wait would race the
// reaper for statuses. Start a child with Reaper.Start and read its status
// from the returned channel instead.
//
// The reap loop runs in one goroutine, owned by the Reaper, from
// NewReaper until Stop.
type Reaper struct {
	sigs     chan os.Signal
	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once

	// mu guards waiters, and is held across starting a child and
	// registering it, so the reap loop never sees a child's status
	// before its waiter exists.
	mu      sync.Mutex
	waiters map[int]chan syscall.WaitStatus
	// Orphan is called (if set before NewReaper returns) for each status
	// nobody waited for.
	orphan func(pid int, ws syscall.WaitStatus)
}

// NewReaper starts reaping. orphan, if not nil, is called with every
// status of a child nobody registered (from the reap goroutine).
func NewReaper(orphan func(pid int, ws syscall.WaitStatus)) *Reaper {
	r := &Reaper{
		sigs:    make(chan os.Signal, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		waiters: map[int]chan syscall.WaitStatus{},
		orphan:  orphan,
	}
	signal.Notify(r.sigs, syscall.SIGCHLD)
	go r.loop()
	return r
}

func (r *Reaper) loop() {
	defer close(r.done)
	for {
		r.reap()
		select {
		case <-r.sigs:
		case <-r.stop:
			return
		}
	}
}

// reap collects every child that has exited so far.
func (r *Reaper) reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return // ECHILD: no children; 0: none exited
		}
		if !ws.Exited() && !ws.Signaled() {
			continue // stopped or continued: not an exit
		}
		r.mu.Lock()
		ch, ok := r.waiters[pid]
		delete(r.waiters, pid)
		r.mu.Unlock()
		switch {
		case ok:
			ch <- ws // buffered: never blocks
		case r.orphan != nil:
			r.orphan(pid, ws)
		}
	}
}

// ErrStopped means the reaper has been stopped.
var ErrStopped = errors.New("initproc: reaper stopped")

// Start starts cmd and returns a channel that receives its exit status
// once. Never call cmd.Wait: on success the reaper owns the child's
// status; cmd.Process stays usable for Signal. Give cmd *os.File (or nil)
// stdio: other writers and readers need copy goroutines that only
// cmd.Wait would finish.
func (r *Reaper) Start(cmd *exec.Cmd) (<-chan syscall.WaitStatus, error) {
	select {
	case <-r.stop:
		return nil, ErrStopped
	default:
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	ch := make(chan syscall.WaitStatus, 1)
	r.waiters[cmd.Process.Pid] = ch
	return ch, nil
}

// Stop ends the reap loop. Children still running are no longer reaped.
func (r *Reaper) Stop() {
	r.stopOnce.Do(func() {
		signal.Stop(r.sigs)
		close(r.stop)
	})
	<-r.done
}

// ExitCode converts a status the way a shell does: the exit code, or
// 128+N when killed by signal N; signal is N, or 0.
func ExitCode(ws syscall.WaitStatus) (code, signal int) {
	if ws.Signaled() {
		return 128 + int(ws.Signal()), int(ws.Signal())
	}
	return ws.ExitStatus(), 0
}

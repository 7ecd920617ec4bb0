package launcher

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/greatjail/cvm/guest-agent/link"
	"github.com/greatjail/cvm/internal/guesttext"
	"github.com/greatjail/cvm/launcher/engine"
	agentv1 "github.com/greatjail/cvm/proto/cvm/agent/v1"
)

// Files in a launch's state directory.
const (
	ConsoleLog   = "console.log"
	AgentLog     = "agent.log"
	EngineLog    = "engine.log"
	InitramfsOut = "initramfs.cpio"
	linkSocket   = "link.sock"
)

// Timeouts of the steps after boot.
const (
	launchTimeout   = 5 * time.Minute
	shutdownTimeout = 10 * time.Second
	exitGrace       = 10 * time.Second
	outputDrain     = 5 * time.Second
	statusPoll      = 100 * time.Millisecond
)

// selectEngine is engine.Select; tests replace it with a fake engine.
var selectEngine = engine.Select

// Result is how a launch went.
type Result struct {
	// ExitCode is the workload's exit status (128+N when killed by signal N).
	ExitCode int
	// Engine and Accel name the engine used and its acceleration.
	Engine, Accel string
	// Digest is the launch measurement (hex).
	Digest string
	// StateDir holds console.log, agent.log and engine.log. Run removes a
	// temporary one after a successful launch; then this is "".
	StateDir string
	// Durations of the steps: building the launch, booting to a ready
	// agent, and (from the agent) attesting, fetching the key and
	// unlocking the disk; FirstOutput is from the start of Run to the
	// workload's first output byte (0 if it printed nothing).
	Build, Boot, Attest, Fetch, Unlock, FirstOutput time.Duration
}

// IO is where a launch writes: the workload's stdout and stderr, and the
// launcher's progress lines (Stderr, unless Spec.Quiet).
type IO struct {
	Stdout, Stderr io.Writer
}

// Run launches s and returns when the workload has exited and the guest
// has stopped. With a nil error, Result.ExitCode is the workload's exit
// code; otherwise ExitCode(err) is the launch's. The Result is never nil.
func Run(ctx context.Context, s Spec, out IO) (*Result, error) {
	start := time.Now()
	s = s.withDefaults()
	if out.Stdout == nil {
		out.Stdout = io.Discard
	}
	if out.Stderr == nil {
		out.Stderr = io.Discard
	}
	res := &Result{}
	if err := s.Validate(); err != nil {
		return res, err
	}
	p := &progress{w: out.Stderr, quiet: s.Quiet}
	r := &run{spec: s, out: out, res: res, p: p, start: start}
	err := r.run(ctx)
	r.finish(err)
	if err != nil && r.h != nil && res.StateDir != "" {
		err = fmt.Errorf("%w\n(the launch's logs are kept in %s: %s, %s, %s)", err, res.StateDir, ConsoleLog, AgentLog, EngineLog)
	}
	return res, err
}

// run is one launch in progress.
type run struct {
	spec  Spec
	out   IO
	res   *Result
	p     *progress
	start time.Time
	dir   string
	temp  bool // dir is a temporary directory of ours
	// hostOpts configure the host side of the link; linkHost serves it
	// once the guest is up (nil before).
	hostOpts HostOptions
	linkHost *LinkHost
	// link is the host's end of the link; nil before the guest is up.
	link *link.Session
	// stopStreams ends the streams host serves (set with link).
	stopStreams context.CancelFunc
	h           engine.Handle
}

func (r *run) run(ctx context.Context) error {
	s := r.spec
	// The state directory first, so that every failure after this keeps
	// its logs.
	if s.StateDir != "" {
		if err := os.MkdirAll(s.StateDir, 0o700); err != nil {
			return fmt.Errorf("%w: --state-dir: %w", ErrInvalid, err)
		}
		r.dir = s.StateDir
	} else {
		d, err := os.MkdirTemp("", "cvm-launch-")
		if err != nil {
			return fmt.Errorf("%w: state directory: %w", ErrLaunch, err)
		}
		r.dir, r.temp = d, true
	}
	r.res.StateDir = r.dir

	t := r.p.step("building the launch (initramfs, measurement)")
	l, err := Build(s)
	if err != nil {
		return err
	}
	r.res.Build = time.Since(r.start)
	r.res.Digest = l.DigestHex()
	t.done("measurement %s…", r.res.Digest[:16])
	initrd := filepath.Join(r.dir, InitramfsOut)
	if err := os.WriteFile(initrd, l.Initramfs, 0o600); err != nil {
		return fmt.Errorf("%w: %w", ErrLaunch, err)
	}

	agentLog, err := os.OpenFile(filepath.Join(r.dir, AgentLog), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrLaunch, err)
	}
	defer agentLog.Close()
	r.hostOpts = HostOptions{KBS: s.KBS, AgentLog: agentLog}
	if s.TEE == "sim" {
		a, err := s.loadSim()
		if err != nil {
			return err
		}
		if r.hostOpts.PSP, err = SimPSP(a, l.Digest); err != nil {
			return fmt.Errorf("%w: %w", ErrLaunch, err)
		}
	}

	choice, err := selectEngine(s.Engine, nil)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	eng := choice.Engine
	r.res.Engine, r.res.Accel = eng.Name(), eng.Accel()
	sock, cleanup, err := socketPath(r.dir)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrLaunch, err)
	}
	defer cleanup()
	m := engine.Machine{
		Kernel: l.Kernel.Path, Initrd: initrd, Cmdline: l.Cmdline,
		VCPUs: l.VCPUs, Memory: l.Memory, Disk: s.Disk,
		LinkSocket: sock,
		ConsoleLog: filepath.Join(r.dir, ConsoleLog),
		EngineLog:  filepath.Join(r.dir, EngineLog),
	}
	bootStart := time.Now()
	t = r.p.step("booting (engine %s, %s: %s)", eng.Name(), eng.Accel(), choice.Why)
	h, err := eng.Start(ctx, m)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrLaunch, err)
	}
	r.h = h
	agent, status, err := r.boot(ctx, s.BootTimeout)
	if err != nil {
		return err
	}
	r.res.Boot = time.Since(bootStart)
	t.done("kernel %s, agent %s", guesttext.Line(status.GetKernelRelease(), 128), guesttext.Line(status.GetAgentVersion(), 128))

	host, _ := kbsHost(s.KBS)
	t = r.p.step("attesting to %s and unlocking the disk", s.KBS)
	lctx, cancel := context.WithTimeout(ctx, launchTimeout)
	lr, err := agent.Launch(lctx, &agentv1.LaunchRequest{KbsServerName: host})
	cancel()
	if err != nil {
		return r.launchError(err)
	}
	r.res.Attest = time.Duration(lr.GetAttestMs()) * time.Millisecond
	r.res.Fetch = time.Duration(lr.GetFetchMs()) * time.Millisecond
	r.res.Unlock = time.Duration(lr.GetUnlockMs()) * time.Millisecond
	t.done("attested %v, key %v, unlocked %v", r.res.Attest, r.res.Fetch, r.res.Unlock)

	r.p.line("running %s", s.Entrypoint)
	code, err := r.workload(ctx, agent, lr.GetProcessId())
	if err != nil {
		return err
	}
	r.res.ExitCode = code
	r.stop(agent)
	return nil
}

// maxGuestMessage bounds a guest's error message in the launcher's own.
const maxGuestMessage = 2048

// socketPath returns a Unix socket path for the link: in dir when the path
// fits sockaddr_un, else in a fresh short temporary directory.
func socketPath(dir string) (string, func(), error) {
	p := filepath.Join(dir, linkSocket)
	if len(p) < 100 {
		os.Remove(p) // left over from an earlier launch in this state dir
		return p, func() { os.Remove(p) }, nil
	}
	d, err := os.MkdirTemp("", "cvm-link-")
	if err != nil {
		return "", nil, err
	}
	return filepath.Join(d, linkSocket), func() { os.RemoveAll(d) }, nil
}

// boot waits for the guest's link and a ready agent, within timeout.
func (r *run) boot(ctx context.Context, timeout time.Duration) (agentv1.AgentClient, *agentv1.StatusResponse, error) {
	bctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// The guest dying ends the wait at once.
	go func() {
		select {
		case <-r.h.Exited():
			cancel()
		case <-bctx.Done():
		}
	}()
	fail := func(what string, err error) error {
		if StoppedWithin(r.h, StopGrace) {
			return fmt.Errorf("%w: the guest stopped while %s (%s)%s", ErrLaunch, what, r.stopReason(), r.consoleTail())
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w: %s: %w", ErrLaunch, what, ctx.Err())
		}
		if bctx.Err() != nil {
			return fmt.Errorf("%w: the guest agent was not ready within %v (%s)%s", ErrLaunch, timeout, what, r.consoleTail())
		}
		return fmt.Errorf("%w: %s: %w%s", ErrLaunch, what, err, r.consoleTail())
	}
	conn, err := r.h.Link(bctx)
	if err != nil {
		return nil, nil, fail("waiting for the link", err)
	}
	sess, err := link.Host(conn)
	if err != nil {
		conn.Close()
		return nil, nil, fail("starting the link", err)
	}
	r.link = sess
	// The streams live until finish, not until ctx ends (a Shutdown
	// still goes over the link after an interrupt).
	sctx, stopStreams := context.WithCancel(context.WithoutCancel(ctx))
	r.stopStreams = stopStreams
	r.linkHost = ServeLink(sctx, sess, r.hostOpts)
	stream, err := sess.Open(link.KindTTRPC)
	if err != nil {
		return nil, nil, fail("opening the agent stream", err)
	}
	agent := agentv1.NewAgentClient(ttrpc.NewClient(stream))
	for {
		st, err := agent.Status(bctx, &agentv1.StatusRequest{})
		if err != nil {
			return nil, nil, fail("waiting for the agent", err)
		}
		switch st.GetPhase() {
		case agentv1.Phase_PHASE_READY:
			return agent, st, nil
		case agentv1.Phase_PHASE_FAILED:
			return nil, nil, fail("booting", fmt.Errorf("the agent failed: %s", guesttext.Line(st.GetError(), maxGuestMessage)))
		}
		if err := sleepCtx(bctx, statusPoll); err != nil {
			return nil, nil, fail("waiting for the agent", err)
		}
	}
}

// launchError turns the agent's Launch error into the launch's.
func (r *run) launchError(err error) error {
	st, _ := status.FromError(err)
	switch st.Code() {
	case codes.PermissionDenied:
		return ErrDenied
	case codes.Unavailable:
		var kerr error
		var reached bool
		if r.linkHost != nil {
			kerr, reached = r.linkHost.KBSState()
		}
		switch {
		case kerr != nil:
			return fmt.Errorf("%w at %s: %w", ErrUnreachable, r.spec.KBS, kerr)
		case reached:
			// The relay connected, yet the guest could not talk to the
			// broker: its TLS handshake failed (the CA pinned in the
			// measured launch did not issue the certificate of what
			// answers at --kbs, or the server name does not match), or
			// something else than the broker answers there.
			return fmt.Errorf("%w: the guest reached %s but could not open a session with the key broker there "+
				"(is --kbs-ca the CA of the broker at --kbs?): %s", ErrLaunch, r.spec.KBS, guesttext.Line(st.Message(), maxGuestMessage))
		}
		return fmt.Errorf("%w at %s: %s", ErrUnreachable, r.spec.KBS, guesttext.Line(st.Message(), maxGuestMessage))
	case codes.FailedPrecondition:
		return fmt.Errorf("%w: the disk %s: %s", ErrLaunch, r.spec.Disk, guesttext.Line(st.Message(), maxGuestMessage))
	default:
		select {
		case <-r.h.Exited():
			return fmt.Errorf("%w: the guest stopped during the launch (%s)%s", ErrLaunch, r.stopReason(), r.consoleTail())
		default:
		}
		return fmt.Errorf("%w: the guest agent: %s", ErrLaunch, guesttext.Line(st.Message(), maxGuestMessage))
	}
}

// workload streams the workload's output and returns its exit code.
func (r *run) workload(ctx context.Context, agent agentv1.AgentClient, id string) (int, error) {
	var wg sync.WaitGroup
	octx, ocancel := context.WithCancel(context.WithoutCancel(ctx))
	defer ocancel()
	stream, err := agent.Output(octx, &agentv1.OutputRequest{ProcessId: id})
	if err != nil {
		return 0, fmt.Errorf("%w: workload output: %w", ErrLaunch, err)
	}
	var first sync.Once
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := stream.Recv()
			if err != nil {
				return
			}
			if len(c.GetData()) > 0 {
				first.Do(func() { r.res.FirstOutput = time.Since(r.start) })
			}
			if c.GetStream() == agentv1.Stream_STREAM_STDERR {
				r.out.Stderr.Write(c.GetData())
			} else {
				r.out.Stdout.Write(c.GetData())
			}
		}
	}()
	// An interrupt (ctx ends) is passed on to the workload as SIGTERM; the
	// launch then still waits for its exit status, and kills the guest
	// only if it has not exited after exitGrace.
	waitDone := make(chan struct{})
	defer close(waitDone)
	go func() {
		select {
		case <-ctx.Done():
		case <-waitDone:
			return
		}
		r.p.line("interrupted: sending SIGTERM to the workload")
		sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		agent.Signal(sctx, &agentv1.SignalRequest{ProcessId: id, Signal: int32(syscall.SIGTERM)})
		cancel()
		select {
		case <-time.After(exitGrace):
			r.h.Kill()
		case <-waitDone:
		}
	}()
	w, err := agent.Wait(context.WithoutCancel(ctx), &agentv1.WaitRequest{ProcessId: id})
	if err != nil {
		return 0, fmt.Errorf("%w: waiting for the workload: %w", ErrLaunch, err)
	}
	// The output ends once the workload's pipes close; do not hang on a
	// descendant that keeps them open.
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(outputDrain):
		ocancel()
		<-done
	}
	return int(w.GetExitCode()), nil
}

// stop asks the agent to shut the guest down and waits for the engine,
// killing it after a grace period.
func (r *run) stop(agent agentv1.AgentClient) {
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	agent.Shutdown(sctx, &agentv1.ShutdownRequest{})
	cancel()
	select {
	case <-r.h.Exited():
	case <-time.After(exitGrace):
		r.h.Kill()
	}
}

// finish releases everything: the link, the engine (killed if still
// running), the state directory (removed if temporary and the launch
// succeeded, otherwise named on stderr).
func (r *run) finish(err error) {
	if r.h != nil {
		select {
		case <-r.h.Exited():
		default:
			// A failed launch: nothing in the guest is worth waiting for.
			r.h.Kill()
		}
		r.h.Wait()
	}
	if r.link != nil {
		r.stopStreams()
		r.link.Close()
	}
	if r.linkHost != nil {
		r.linkHost.Wait()
	}
	if r.dir == "" {
		return
	}
	// A temporary directory goes after a success, and after a failure
	// before the guest started (it holds no logs then).
	if r.temp && (err == nil || r.h == nil) {
		os.RemoveAll(r.dir)
		r.res.StateDir = ""
		return
	}
}

// stopReason says how the stopped engine ended.
func (r *run) stopReason() string { return StopReason(r.h) }

// consoleTail returns the last lines of the console log, prefixed for an
// error message.
func (r *run) consoleTail() string { return ConsoleTail(filepath.Join(r.dir, ConsoleLog)) }

// StopGrace is how long StoppedWithin is given after a broken link: the
// link usually breaks just before the engine is reaped.
const StopGrace = 2 * time.Second

// StoppedWithin reports whether the guest of h has stopped, or stops
// within grace, so that an error can say it stopped (and why) rather than
// only that its link broke.
func StoppedWithin(h engine.Handle, grace time.Duration) bool {
	select {
	case <-h.Exited():
		return true
	case <-time.After(grace):
		return false
	}
}

// StopReason says how the stopped engine of h ended, for an error message.
func StopReason(h engine.Handle) string {
	if err := h.Wait(); err != nil {
		return err.Error()
	}
	return "it powered off or rebooted"
}

// ConsoleTail returns the last 20 lines of the guest console log at path,
// escaped (guesttext) and prefixed for an error message, with the
// kernel's panic line first if it is further up.
func ConsoleTail(path string) string {
	tail, panicLine, err := guesttext.Tail(path, 20, "Kernel panic")
	switch {
	case err != nil:
		return fmt.Sprintf("; the console log %s: %v", path, err)
	case tail == "":
		return fmt.Sprintf("; the console log %s is empty", path)
	}
	if panicLine != "" && !strings.Contains(tail, panicLine) {
		tail = panicLine + "\n...\n" + tail
	}
	return fmt.Sprintf("; the console log %s ends with:\n  %s", path, strings.ReplaceAll(tail, "\n", "\n  "))
}

// progress prints the launcher's progress lines.
type progress struct {
	w     io.Writer
	quiet bool
}

type stepTimer struct {
	p     *progress
	what  string
	start time.Time
}

func (p *progress) line(format string, a ...any) {
	if !p.quiet {
		fmt.Fprintf(p.w, "cvm launch: "+format+"\n", a...)
	}
}

func (p *progress) step(format string, a ...any) *stepTimer {
	what := fmt.Sprintf(format, a...)
	p.line("%s", what)
	return &stepTimer{p: p, what: what, start: time.Now()}
}

func (t *stepTimer) done(format string, a ...any) {
	t.p.line("  done in %v: %s", time.Since(t.start).Round(time.Millisecond), fmt.Sprintf(format, a...))
}

// Package agent is the guest agent's ttrpc service (proto/cvm/agent/v1):
// it runs the measured launch configuration — attest to the key broker
// and fetch the disk key (kbs/client over a kbs link stream, TLS to the
// broker with the configuration's CA pinned), unlock and mount the disk,
// start the entrypoint chrooted into it — then streams the workload's
// output, relays signals, reports its exit and shuts the guest down.
//
// Nothing in a request chooses what the guest attests as, which CA it
// trusts, which resource it asks for or what it runs: those come from the
// launch configuration, which is measured. The host can only supply the
// broker's TLS server name, which can only make the launch fail.
//
// In pod mode (launchconfig.ModePod) the agent also serves the Containers
// service (guest-agent/containers) for the containerd shim. A plain pod
// (tee none) serves it at once; a confidential pod refuses container
// Create until Launch has attested to the broker (and fetched the
// configuration's resource, which proves the broker accepted the guest).
package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/containerd/ttrpc"
	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/guest-agent/containers"
	"github.com/greatjail/cvm/guest-agent/initproc"
	"github.com/greatjail/cvm/guest-agent/launchconfig"
	"github.com/greatjail/cvm/kbs/client"
	agentv1 "github.com/greatjail/cvm/proto/cvm/agent/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// WorkloadID is the process id of the entrypoint.
const WorkloadID = "workload"

// ChunkSize bounds one OutputChunk.
const ChunkSize = 32 << 10

// Unlocker opens the encrypted disk with key and mounts its file system,
// returning the mount point and a func that unmounts and closes it.
type Unlocker interface {
	Unlock(ctx context.Context, device string, key []byte) (root string, close func() error, err error)
}

// Starter starts a process and delivers its exit status (initproc.Reaper).
type Starter interface {
	Start(cmd *exec.Cmd) (<-chan syscall.WaitStatus, error)
}

// System is what Shutdown asks of PID 1 (initproc.System).
type System interface {
	KillAll(sig syscall.Signal) error
	PowerOff() error
}

// Options are the agent's dependencies.
type Options struct {
	Config *launchconfig.Config
	// Provider produces the evidence (evidence.ForConfig).
	Provider client.Provider
	// DialKBS opens a byte stream to the key broker (a kbs link stream).
	DialKBS  func(ctx context.Context) (net.Conn, error)
	Unlocker Unlocker
	Starter  Starter
	System   System
	// Rand is the randomness for the broker exchange's ephemeral key.
	Rand io.Reader
	// Logf logs a line (never a secret).
	Logf func(format string, args ...any)
	// Version is reported by Status; KernelRelease too (uname -r).
	Version, KernelRelease string
	// Start is when the agent started, for Status.uptime_ms.
	Start time.Time
	// Containers is the pod's container service, served beside Agent in
	// pod mode (required there, refused in launch mode).
	Containers agentv1.ContainersService
}

// Agent implements agentv1.AgentService.
type Agent struct {
	opts Options

	// mu guards the fields below.
	mu       sync.Mutex
	phase    agentv1.Phase
	err      string // in PHASE_FAILED
	launched bool
	attested bool     // pod mode: Launch attested; containers may be created
	proc     *process // the workload, once started
	unmount  func() error
	shutdown bool
	// secret is a confidential pod's released resource, which its
	// containers read under containers.SecretsDir; cleared at Shutdown.
	secret []byte

	// shutdownDone is closed once Shutdown has stopped everything.
	shutdownDone chan struct{}
}

// New returns an agent in PHASE_READY.
func New(opts Options) (*Agent, error) {
	switch cfg := opts.Config; {
	case cfg == nil || opts.System == nil:
		return nil, errors.New("agent: Config and System are required")
	case !cfg.IsPod() && (opts.Provider == nil || opts.DialKBS == nil || opts.Unlocker == nil ||
		opts.Starter == nil || opts.Rand == nil || opts.Containers != nil):
		return nil, errors.New("agent: launch mode requires Provider, DialKBS, Unlocker, Starter and Rand, and serves no Containers")
	case cfg.IsPod() && opts.Containers == nil:
		return nil, errors.New("agent: pod mode requires Containers")
	case cfg.IsPod() && cfg.Confidential() && (opts.Provider == nil || opts.DialKBS == nil || opts.Rand == nil):
		return nil, errors.New("agent: a confidential pod requires Provider, DialKBS and Rand")
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	if opts.Start.IsZero() {
		opts.Start = time.Now()
	}
	return &Agent{opts: opts, phase: agentv1.Phase_PHASE_READY, shutdownDone: make(chan struct{})}, nil
}

var _ agentv1.AgentService = (*Agent)(nil)

// Status reports the phase.
func (a *Agent) Status(ctx context.Context, _ *agentv1.StatusRequest) (*agentv1.StatusResponse, error) {
	tee, _ := attestation.TEEToProto(a.opts.Config.TEE)
	a.mu.Lock()
	defer a.mu.Unlock()
	return &agentv1.StatusResponse{
		Phase:         a.phase,
		Tee:           tee,
		KernelRelease: a.opts.KernelRelease,
		UptimeMs:      uint64(time.Since(a.opts.Start).Milliseconds()),
		AgentVersion:  a.opts.Version,
		Error:         a.err,
	}, nil
}

func (a *Agent) setPhase(p agentv1.Phase) {
	a.mu.Lock()
	a.phase = p
	a.mu.Unlock()
}

// fail records a failed launch and returns the status error for it.
func (a *Agent) fail(code codes.Code, msg string, cause error) error {
	if cause != nil && !strings.Contains(msg, cause.Error()) {
		a.opts.Logf("agent: launch failed: %s (%v)", msg, cause)
	} else {
		a.opts.Logf("agent: launch failed: %s", msg)
	}
	a.mu.Lock()
	a.phase = agentv1.Phase_PHASE_FAILED
	a.err = msg
	a.mu.Unlock()
	return status.Error(code, msg)
}

// Launch runs the launch configuration; see the proto for the error codes.
func (a *Agent) Launch(ctx context.Context, req *agentv1.LaunchRequest) (*agentv1.LaunchResponse, error) {
	if req.GetKbsServerName() == "" {
		return nil, status.Error(codes.InvalidArgument, "kbs_server_name is required")
	}
	a.mu.Lock()
	switch {
	case a.shutdown:
		a.mu.Unlock()
		return nil, status.Error(codes.FailedPrecondition, "the agent is shutting down")
	case a.launched:
		a.mu.Unlock()
		return nil, status.Error(codes.FailedPrecondition, "Launch was already called")
	}
	if cfg := a.opts.Config; cfg.IsPod() && !cfg.Confidential() {
		a.mu.Unlock()
		return nil, status.Error(codes.FailedPrecondition, "a plain pod (tee none) has nothing to attest: create containers directly")
	}
	a.launched = true
	a.phase = agentv1.Phase_PHASE_ATTESTING
	a.mu.Unlock()
	cfg := a.opts.Config
	resp := &agentv1.LaunchResponse{}
	if cfg.IsPod() {
		return a.attestPod(ctx, req.GetKbsServerName())
	}

	a.opts.Logf("agent: attesting to the key broker (%s) as %s for resource %q", req.GetKbsServerName(), cfg.TEE, cfg.Resource)
	key, attest, fetch, err := a.fetchKey(ctx, req.GetKbsServerName())
	resp.AttestMs, resp.FetchMs = uint64(attest.Milliseconds()), uint64(fetch.Milliseconds())
	if err != nil {
		return nil, a.fail(brokerCode(err), brokerMessage(err), err)
	}
	defer clear(key)

	a.setPhase(agentv1.Phase_PHASE_UNLOCKING)
	a.opts.Logf("agent: unlocking %s", cfg.Disk.Device)
	t := time.Now()
	root, unmount, err := a.opts.Unlocker.Unlock(ctx, cfg.Disk.Device, key)
	clear(key)
	resp.UnlockMs = uint64(time.Since(t).Milliseconds())
	if err != nil {
		return nil, a.fail(codes.FailedPrecondition, fmt.Sprintf("the disk %s could not be opened: %v", cfg.Disk.Device, err), err)
	}

	a.mu.Lock()
	stopping := a.shutdown
	a.mu.Unlock()
	if stopping {
		err := unmount()
		return nil, a.fail(codes.FailedPrecondition, "the agent is shutting down", err)
	}
	p, err := a.start(root)
	if err != nil {
		err = errors.Join(err, unmount())
		return nil, a.fail(codes.Internal, fmt.Sprintf("starting %s: %v", cfg.Entrypoint, err), err)
	}
	a.mu.Lock()
	if a.shutdown {
		// Shutdown ran while the workload was starting and saw no process
		// to stop: stop it here, and close the disk it would have closed.
		a.mu.Unlock()
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		_ = p.cmd.Process.Kill()
		select {
		case <-p.exited:
		case <-time.After(killGrace):
		}
		return nil, a.fail(codes.FailedPrecondition, "the agent is shutting down", unmount())
	}
	// Shutdown reads proc and unmount under mu: from here on it kills p.
	a.proc, a.unmount = p, unmount
	a.phase = agentv1.Phase_PHASE_RUNNING
	a.mu.Unlock()
	go func() {
		<-p.exited
		a.mu.Lock()
		if a.phase == agentv1.Phase_PHASE_RUNNING {
			a.phase = agentv1.Phase_PHASE_EXITED
		}
		a.mu.Unlock()
		a.opts.Logf("agent: %s exited with %d", cfg.Entrypoint, p.code)
	}()
	resp.ProcessId = WorkloadID
	a.opts.Logf("agent: %s started (attest %d ms, fetch %d ms, unlock %d ms)", cfg.Entrypoint, resp.AttestMs, resp.FetchMs, resp.UnlockMs)
	return resp, nil
}

// attestPod is Launch in a confidential pod: attest and fetch the
// configuration's resource, then open the Containers gate. Fetching the
// resource proves the broker accepted this guest; the agent keeps it in
// guest memory for the pod's containers (Secrets).
func (a *Agent) attestPod(ctx context.Context, serverName string) (*agentv1.LaunchResponse, error) {
	cfg := a.opts.Config
	a.opts.Logf("agent: pod: attesting to the key broker (%s) as %s for resource %q", serverName, cfg.TEE, cfg.Resource)
	key, attest, fetch, err := a.fetchKey(ctx, serverName)
	resp := &agentv1.LaunchResponse{AttestMs: uint64(attest.Milliseconds()), FetchMs: uint64(fetch.Milliseconds())}
	if err != nil {
		clear(key)
		return nil, a.fail(brokerCode(err), brokerMessage(err), err)
	}
	a.mu.Lock()
	if a.shutdown {
		a.mu.Unlock() // fail takes mu itself
		clear(key)
		return nil, a.fail(codes.FailedPrecondition, "the agent is shutting down", nil)
	}
	a.secret = key
	a.attested = true
	a.phase = agentv1.Phase_PHASE_RUNNING
	a.mu.Unlock()
	a.opts.Logf("agent: pod: attested (attest %d ms, fetch %d ms); containers may be created", resp.AttestMs, resp.FetchMs)
	return resp, nil
}

// Secrets returns what the key broker released to a confidential pod
// once it has attested: the configuration's resource, named by its
// broker path. Each call returns a copy. A plain pod, or one that has not
// attested or is shutting down, has none.
func (a *Agent) Secrets() []containers.Secret {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.attested || a.shutdown || a.secret == nil {
		return nil
	}
	return []containers.Secret{{Name: a.opts.Config.Resource, Data: append([]byte(nil), a.secret...)}}
}

// containersGate says whether a container may be created now: always in a
// plain pod, only after a successful Launch in a confidential one.
func (a *Agent) containersGate() error {
	if !a.opts.Config.Confidential() {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case a.shutdown:
		return status.Error(codes.FailedPrecondition, "the agent is shutting down")
	case !a.attested:
		return status.Errorf(codes.FailedPrecondition, "a confidential pod (tee %s) creates no container before it has attested to the key broker: call Launch first", a.opts.Config.TEE)
	}
	return nil
}

// gatedContainers is the Containers service behind the attestation gate.
type gatedContainers struct {
	agentv1.ContainersService
	gate func() error
}

func (g gatedContainers) Create(ctx context.Context, r *agentv1.CreateContainerRequest) (*agentv1.CreateContainerResponse, error) {
	if err := g.gate(); err != nil {
		return nil, err
	}
	return g.ContainersService.Create(ctx, r)
}

func (g gatedContainers) Start(ctx context.Context, r *agentv1.StartProcessRequest) (*agentv1.StartProcessResponse, error) {
	if err := g.gate(); err != nil {
		return nil, err
	}
	return g.ContainersService.Start(ctx, r)
}

// getResource is the broker method whose start ends the attest step.
const getResource = "/cvm.kbs.v1.Broker/GetResource"

// fetchKey attests and fetches the resource, timing the attest step
// (challenge to token) and the fetch step (resource and unseal).
func (a *Agent) fetchKey(ctx context.Context, serverName string) (key []byte, attest, fetch time.Duration, err error) {
	cfg := a.opts.Config
	cas, err := cfg.CACertificates()
	if err != nil {
		return nil, 0, 0, err
	}
	pool := x509.NewCertPool()
	for _, c := range cas {
		pool.AddCert(c)
	}
	creds := credentials.NewTLS(&tls.Config{RootCAs: pool, ServerName: serverName, MinVersion: tls.VersionTLS13})
	start := time.Now()
	var mu sync.Mutex
	var fetchStart time.Time
	timing := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if method == getResource {
			mu.Lock()
			fetchStart = time.Now()
			mu.Unlock()
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	conn, err := grpc.NewClient("passthrough:///kbs",
		grpc.WithTransportCredentials(creds),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return a.opts.DialKBS(ctx) }),
		grpc.WithUnaryInterceptor(timing),
	)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("agent: broker connection: %w", err)
	}
	defer conn.Close()
	c := &client.Client{Conn: conn, Provider: a.opts.Provider, Rand: a.opts.Rand}
	key, err = c.Fetch(ctx, cfg.Resource)
	end := time.Now()
	mu.Lock()
	defer mu.Unlock()
	if fetchStart.IsZero() {
		return key, end.Sub(start), 0, err
	}
	return key, fetchStart.Sub(start), end.Sub(fetchStart), err
}

func brokerCode(err error) codes.Code {
	if errors.Is(err, client.ErrDenied) {
		return codes.PermissionDenied
	}
	switch status.Code(err) {
	case codes.PermissionDenied:
		return codes.PermissionDenied
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		return codes.Unavailable
	}
	return codes.Internal
}

func brokerMessage(err error) string {
	switch brokerCode(err) {
	case codes.PermissionDenied:
		return "the key broker denied this guest"
	case codes.Unavailable:
		return fmt.Sprintf("the key broker could not be reached: %v", err)
	}
	return fmt.Sprintf("fetching the disk key: %v", err)
}

// process is a started workload.
type process struct {
	cmd    *exec.Cmd
	output chan *agentv1.OutputChunk // closed when stdout and stderr are
	// reading is set by the one Output call allowed.
	reading bool
	exited  chan struct{} // closed after code and signal are set
	code    int
	signal  int
}

// start runs the entrypoint chrooted into root, stdout and stderr on pipes.
func (a *Agent) start(root string) (*process, error) {
	cfg := a.opts.Config
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, err
	}
	cmd := &exec.Cmd{
		Path:        cfg.Entrypoint,
		Args:        append([]string{cfg.Entrypoint}, cfg.Args...),
		Env:         append([]string{}, cfg.Env...),
		Dir:         "/",
		Stdout:      outW,
		Stderr:      errW,
		SysProcAttr: &syscall.SysProcAttr{Chroot: root, Setsid: true},
	}
	statusCh, err := a.opts.Starter.Start(cmd)
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return nil, err
	}
	p := &process{cmd: cmd, output: make(chan *agentv1.OutputChunk, 64), exited: make(chan struct{})}
	var readers sync.WaitGroup
	for _, s := range []struct {
		f    *os.File
		kind agentv1.Stream
	}{{outR, agentv1.Stream_STREAM_STDOUT}, {errR, agentv1.Stream_STREAM_STDERR}} {
		readers.Add(1)
		go func() {
			defer readers.Done()
			defer s.f.Close()
			for {
				buf := make([]byte, ChunkSize)
				n, err := s.f.Read(buf)
				if n > 0 {
					p.output <- &agentv1.OutputChunk{Stream: s.kind, Data: buf[:n]}
				}
				if err != nil {
					return
				}
			}
		}()
	}
	go func() {
		readers.Wait()
		close(p.output)
	}()
	go func() {
		ws := <-statusCh
		p.code, p.signal = initproc.ExitCode(ws)
		close(p.exited)
	}()
	return p, nil
}

// lookup returns the process named id.
func (a *Agent) lookup(id string) (*process, error) {
	if id != WorkloadID {
		return nil, status.Errorf(codes.NotFound, "no process %q (the workload is %q)", id, WorkloadID)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.proc == nil {
		return nil, status.Error(codes.FailedPrecondition, "the workload has not been started")
	}
	return a.proc, nil
}

// Output streams the workload's stdout and stderr until both close.
func (a *Agent) Output(ctx context.Context, req *agentv1.OutputRequest, srv agentv1.Agent_OutputServer) error {
	p, err := a.lookup(req.GetProcessId())
	if err != nil {
		return err
	}
	a.mu.Lock()
	if p.reading {
		a.mu.Unlock()
		return status.Error(codes.FailedPrecondition, "the output is already being read")
	}
	p.reading = true
	a.mu.Unlock()
	for {
		select {
		case c, ok := <-p.output:
			if !ok {
				return nil
			}
			if err := srv.Send(c); err != nil {
				return err
			}
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}

// Signal sends a signal to the workload. After it has exited, Signal does
// nothing.
func (a *Agent) Signal(ctx context.Context, req *agentv1.SignalRequest) (*agentv1.SignalResponse, error) {
	p, err := a.lookup(req.GetProcessId())
	if err != nil {
		return nil, err
	}
	sig := req.GetSignal()
	if sig <= 0 || sig > 64 {
		return nil, status.Errorf(codes.InvalidArgument, "signal %d is not a Linux signal number", sig)
	}
	select {
	case <-p.exited:
		return &agentv1.SignalResponse{}, nil
	default:
	}
	if err := p.cmd.Process.Signal(syscall.Signal(sig)); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return nil, status.Errorf(codes.Internal, "signal %d: %v", sig, err)
	}
	return &agentv1.SignalResponse{}, nil
}

// Wait blocks until the workload exits.
func (a *Agent) Wait(ctx context.Context, req *agentv1.WaitRequest) (*agentv1.WaitResponse, error) {
	p, err := a.lookup(req.GetProcessId())
	if err != nil {
		return nil, err
	}
	select {
	case <-p.exited:
		return &agentv1.WaitResponse{ExitCode: int32(p.code), Signal: int32(p.signal)}, nil
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

// killGrace is how long Shutdown waits for the workload after SIGKILL.
const killGrace = 5 * time.Second

// Shutdown kills every process, unmounts and closes the disk. The guest
// powers off after the reply (see Serve).
func (a *Agent) Shutdown(ctx context.Context, _ *agentv1.ShutdownRequest) (*agentv1.ShutdownResponse, error) {
	a.mu.Lock()
	if a.shutdown {
		a.mu.Unlock()
		<-a.shutdownDone
		return &agentv1.ShutdownResponse{}, nil
	}
	a.shutdown = true
	p, unmount := a.proc, a.unmount
	clear(a.secret)
	a.secret = nil
	a.mu.Unlock()
	defer close(a.shutdownDone)
	a.opts.Logf("agent: shutting down")
	var errs []error
	if p != nil {
		select {
		case <-p.exited:
		default:
			// The workload leads its own session: kill its group.
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			_ = p.cmd.Process.Kill()
		}
	}
	if err := a.opts.System.KillAll(syscall.SIGKILL); err != nil {
		a.opts.Logf("agent: killing remaining processes: %v", err)
	}
	if p != nil {
		select {
		case <-p.exited:
		case <-time.After(killGrace):
			errs = append(errs, fmt.Errorf("the workload did not exit after SIGKILL"))
		}
	}
	if unmount != nil {
		if err := unmount(); err != nil {
			errs = append(errs, fmt.Errorf("closing the disk: %w", err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		a.opts.Logf("agent: shutdown: %v", err)
		return nil, status.Errorf(codes.Internal, "shutdown: %v", err)
	}
	return &agentv1.ShutdownResponse{}, nil
}

// ShutdownDone is closed when a Shutdown call has finished its work.
func (a *Agent) ShutdownDone() <-chan struct{} { return a.shutdownDone }

// Serve serves the agent on l until ctx ends or Shutdown has been called;
// after a Shutdown it waits for the reply to go out (bounded by
// flushTimeout) and powers off through System.
func (a *Agent) Serve(ctx context.Context, l net.Listener) error {
	srv, err := ttrpc.NewServer()
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	agentv1.RegisterAgentService(srv, a)
	if a.opts.Containers != nil {
		agentv1.RegisterContainersService(srv, gatedContainers{a.opts.Containers, a.containersGate})
	}
	// ttrpc's Server.Shutdown may close a connection whose Shutdown reply
	// is still queued (it judges idleness before the reply is counted), so
	// Serve waits for a write after the Shutdown handler has finished.
	wl := &writeWatchListener{Listener: l, wrote: make(chan struct{}, 1)}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ctx, wl) }()
	select {
	case <-ctx.Done():
		srv.Close()
		<-serveErr
		return ctx.Err()
	case err := <-serveErr:
		srv.Close()
		return fmt.Errorf("agent: serving: %w", err)
	case <-a.shutdownDone:
	}
	fctx, cancel := context.WithTimeout(context.Background(), flushTimeout)
	defer cancel()
	wl.armed.Store(true)
	select {
	case <-wl.wrote: // the Shutdown reply (or the last one) went out
		// Let the link below carry it before the connection closes.
		select {
		case <-time.After(shutdownGrace):
		case <-fctx.Done():
		}
	case <-fctx.Done():
	}
	_ = srv.Shutdown(fctx)
	a.opts.Logf("agent: powering off")
	return a.opts.System.PowerOff()
}

const flushTimeout = 2 * time.Second

// shutdownGrace is how long Serve lets the link carry the last reply.
const shutdownGrace = 200 * time.Millisecond

// writeWatchListener signals wrote on the first write to any accepted
// connection once armed.
type writeWatchListener struct {
	net.Listener
	armed atomic.Bool
	wrote chan struct{}
}

func (l *writeWatchListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &writeWatchConn{Conn: c, l: l}, nil
}

type writeWatchConn struct {
	net.Conn
	l *writeWatchListener
}

func (c *writeWatchConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if c.l.armed.Load() {
		select {
		case c.l.wrote <- struct{}{}:
		default:
		}
	}
	return n, err
}

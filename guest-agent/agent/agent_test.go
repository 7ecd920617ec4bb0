package agent

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/attestation/sim"
	"github.com/greatjail/cvm/guest-agent/evidence"
	"github.com/greatjail/cvm/guest-agent/initproc"
	"github.com/greatjail/cvm/guest-agent/launchconfig"
	"github.com/greatjail/cvm/guest-agent/link"
	"github.com/greatjail/cvm/kbs"
	"github.com/greatjail/cvm/kbs/audit"
	"github.com/greatjail/cvm/kbs/challenge"
	"github.com/greatjail/cvm/kbs/pki"
	"github.com/greatjail/cvm/kbs/resources"
	"github.com/greatjail/cvm/kbs/store/storetest"
	"github.com/greatjail/cvm/kbs/token"
	agentv1 "github.com/greatjail/cvm/proto/cvm/agent/v1"
	attestationv1 "github.com/greatjail/cvm/proto/cvm/attestation/v1"
	kbsv1 "github.com/greatjail/cvm/proto/cvm/kbs/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// The reaper collects every child of the test binary, as PID 1 does in
// the guest; nothing else in this package's tests waits for children.
var reaper *initproc.Reaper

// rootDir is the fake unlocked disk: /bin/work, the static workload.
var rootDir string

// skipReason is set when the environment cannot run the agent's workload.
var skipReason string

func TestMain(m *testing.M) {
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "agent-root-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		rootDir = dir
		switch {
		case os.Geteuid() != 0:
			skipReason = "starting the workload chroots into the disk, which needs root (CAP_SYS_CHROOT)"
		default:
			goBin := filepath.Join(os.Getenv("GOROOT"), "bin", "go")
			if _, err := os.Stat(goBin); err != nil {
				goBin = "go"
			}
			build := exec.Command(goBin, "build", "-o", filepath.Join(dir, "bin", "work"), "./testdata/workload")
			build.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := build.CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "building the static test workload: %v\n%s", err, out)
				return 1
			}
		}
		reaper = initproc.NewReaper(nil)
		defer reaper.Stop()
		return m.Run()
	}())
}

const resourceName = "disk-key"

// broker is one in-process key broker for the whole test binary, built as
// kbs's own end-to-end tests build it, trusting one sim authority.
type broker struct {
	addr   string
	caPEM  []byte
	admin  kbsv1.AdminClient // lives as long as the test binary
	auth   *sim.Authority
	secret []byte
	good   [48]byte // the registered reference measurement
}

var theBroker = sync.OnceValues(startBroker)

func startBroker() (*broker, error) {
	now := time.Now()
	auth, err := sim.New(rand.Reader, now.Add(-time.Hour))
	if err != nil {
		return nil, err
	}
	st := storetest.NewMemory()
	kek, err := resources.LoadKEK(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		return nil, err
	}
	res, err := resources.New(st, []*resources.KEK{kek}, rand.Reader, time.Now)
	if err != nil {
		return nil, err
	}
	issuer, err := challenge.NewIssuer(bytes.Repeat([]byte{1}, 32), challenge.Options{Now: time.Now, Rand: rand.Reader})
	if err != nil {
		return nil, err
	}
	tokKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	signer, err := token.NewSigner(tokKey, token.Options{Now: time.Now, Rand: rand.Reader})
	if err != nil {
		return nil, err
	}
	jwks, err := signer.JWKS()
	if err != nil {
		return nil, err
	}
	tv, err := token.NewVerifier(jwks, time.Now)
	if err != nil {
		return nil, err
	}
	sv, err := sim.NewVerifier(auth.RootPEM(), time.Now)
	if err != nil {
		return nil, err
	}
	srv, err := kbs.New(kbs.Options{
		Verifiers: map[attestation.TEE]attestation.Verifier{attestation.TEESim: sv},
		Store:     st, Resources: res, Audit: audit.New(st, time.Now),
		Challenges: issuer, Nonces: challenge.NewUsedNonces(st), Tokens: signer, TokenVerifier: tv, Now: time.Now,
	})
	if err != nil {
		return nil, err
	}
	ca, err := pki.NewCA(rand.Reader, now, "agent-test")
	if err != nil {
		return nil, err
	}
	scert, skey, err := ca.IssueServer(rand.Reader, now, []string{"127.0.0.1"})
	if err != nil {
		return nil, err
	}
	stls, err := pki.ServerTLS(scert, skey, ca.CertPEM())
	if err != nil {
		return nil, err
	}
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(stls)))
	srv.Register(g)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go g.Serve(lis) // lives as long as the test binary

	// Register the good measurement and the disk key, as an admin.
	acert, akey, err := ca.IssueClient(rand.Reader, now, pki.RoleAdmin, "agent-test-admin")
	if err != nil {
		return nil, err
	}
	ctls, err := pki.ClientTLS(ca.CertPEM(), acert, akey, "127.0.0.1")
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(ctls)))
	if err != nil {
		return nil, err
	}
	b := &broker{addr: lis.Addr().String(), caPEM: ca.CertPEM(), auth: auth, secret: make([]byte, 64), admin: kbsv1.NewAdminClient(conn)}
	copy(b.good[:], "the measured launch of the agent tests")
	if _, err := rand.Read(b.secret); err != nil {
		return nil, err
	}
	admin := b.admin
	ctx := context.Background()
	if _, err := admin.AddReferenceValue(ctx, &kbsv1.AddReferenceValueRequest{Value: &kbsv1.ReferenceValue{
		Tee: attestationv1.Tee_TEE_SIM, Kind: "measurement", Value: b.good[:]}}); err != nil {
		return nil, fmt.Errorf("AddReferenceValue: %w", err)
	}
	if _, err := admin.PutResource(ctx, &kbsv1.PutResourceRequest{Name: resourceName, Data: b.secret}); err != nil {
		return nil, fmt.Errorf("PutResource: %w", err)
	}
	return b, nil
}

// countingConn counts the writes of the host's ttrpc client.
type countingConn struct {
	net.Conn
	mu     sync.Mutex
	cond   *sync.Cond
	writes int
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.mu.Lock()
	c.writes++
	c.cond.Broadcast()
	c.mu.Unlock()
	return n, err
}

func (c *countingConn) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes
}

func (c *countingConn) await(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.writes < n {
		c.cond.Wait()
	}
}

// fakeUnlocker hands out rootDir and records what it was given.
type fakeUnlocker struct {
	fail error

	mu     sync.Mutex
	device string
	key    []byte
	calls  int
	closed int
}

func (u *fakeUnlocker) Unlock(_ context.Context, device string, key []byte) (string, func() error, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.calls++
	u.device, u.key = device, append([]byte(nil), key...)
	if u.fail != nil {
		return "", nil, u.fail
	}
	return rootDir, func() error {
		u.mu.Lock()
		defer u.mu.Unlock()
		u.closed++
		return nil
	}, nil
}

// fakeSystem records Shutdown's requests of PID 1.
type fakeSystem struct {
	mu       sync.Mutex
	killAll  int
	poweroff chan struct{}
}

func (s *fakeSystem) KillAll(syscall.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.killAll++
	return nil
}

func (s *fakeSystem) PowerOff() error { close(s.poweroff); return nil }

// world is one guest (agent on a link session) and its host (the test:
// ttrpc client, kbs relay, simulated PSP).
type world struct {
	t        *testing.T
	b        *broker
	unlocker *fakeUnlocker
	sys      *fakeSystem
	client   agentv1.AgentClient
	served   chan error
	output   chan string // the result of a background output command
	wait     chan string // the result of a background wait command
	conn     *countingConn
}

// hostOptions say how the host behaves.
type hostOptions struct {
	measurement [48]byte
	kbsDown     bool
	log         io.Writer // the guest's log stream; discarded when nil
}

func newWorld(t *testing.T, c command) *world {
	b, err := theBroker()
	if err != nil {
		t.Fatalf("starting the test broker: %v", err)
	}
	ho := hostOptions{measurement: b.good, kbsDown: c.args["kbs"] == "down"}
	if c.args["measurement"] == "bad" {
		copy(ho.measurement[:], "some other launch")
	}
	var args []string
	if a := c.args["args"]; a != "" {
		args = strings.Split(a, ",")
	}
	cfg := &launchconfig.Config{
		Version: 1, TEE: attestation.TEESim, KBSCAPEM: string(b.caPEM), Resource: resourceName,
		Entrypoint: "/bin/work", Args: args, Env: []string{"PATH=/bin", "GREETING=hi"},
		Disk: launchconfig.Disk{Device: "/dev/vda", FS: "ext4"},
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ga, ha := net.Pipe()
	guest, err := link.Guest(ga)
	if err != nil {
		t.Fatal(err)
	}
	host, err := link.Host(ha)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { host.Close(); guest.Close() })
	go serveHost(host, b, ho)

	w := &world{t: t, b: b, unlocker: &fakeUnlocker{}, sys: &fakeSystem{poweroff: make(chan struct{})}, served: make(chan error, 1)}
	if c.args["unlock"] == "fail" {
		w.unlocker.fail = errors.New("luks2: the key does not match the header's digest")
	}
	provider, err := evidence.ForConfig(cfg, guest)
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Options{
		Config: cfg, Provider: provider,
		DialKBS:  func(context.Context) (net.Conn, error) { return guest.Open(link.KindKBS) },
		Unlocker: w.unlocker, Starter: reaper, System: w.sys, Rand: rand.Reader,
		Logf:    t.Logf,
		Version: "test", KernelRelease: "6.12.0-test",
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() { w.served <- a.Serve(ctx, guest.Listener(link.KindTTRPC)) }()
	conn, err := host.Open(link.KindTTRPC)
	if err != nil {
		t.Fatal(err)
	}
	w.conn = &countingConn{Conn: conn}
	w.conn.cond = sync.NewCond(&w.conn.mu)
	tc := ttrpc.NewClient(w.conn)
	t.Cleanup(func() { tc.Close() })
	w.client = agentv1.NewAgentClient(tc)
	return w
}

// serveHost plays the host: relays kbs streams to the broker, answers psp
// streams with the sim authority, drops log streams.
func serveHost(h *link.Session, b *broker, o hostOptions) {
	for {
		kind, c, err := h.Accept()
		if err != nil {
			return
		}
		switch kind {
		case link.KindKBS:
			go relay(c, b.addr, o.kbsDown)
		case link.KindPSP:
			go func() {
				defer c.Close()
				link.AnswerPSP(c, func(r link.PSPRequest) ([]byte, []byte, error) {
					rep, err := b.auth.Report(sim.Request{Measurement: o.measurement, ReportData: r.ReportData, VMPL: r.VMPL})
					if err != nil {
						return nil, nil, err
					}
					table, err := b.auth.CertTable()
					return rep, table, err
				})
			}()
		default:
			w := o.log
			if w == nil {
				w = io.Discard
			}
			go func() { io.Copy(w, c); c.Close() }()
		}
	}
}

func relay(c net.Conn, addr string, down bool) {
	defer c.Close()
	if down {
		return // the host could not reach the broker
	}
	up, err := net.Dial("tcp", addr)
	if err != nil {
		return
	}
	defer up.Close()
	done := make(chan struct{}, 2)
	go func() { io.Copy(up, c); done <- struct{}{} }()
	go func() { io.Copy(c, up); done <- struct{}{} }()
	<-done
}

// ctx bounds each RPC of a transcript: a hang fails the test, it does not
// measure anything.
func rpcCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 60*time.Second)
}

func statusLine(err error) string {
	s := status.Convert(err)
	msg := s.Message()
	// A call on a connection the power-off closed fails in ttrpc or in the
	// link below it, whichever sees the close first: both say "closed".
	if msg == "stream closed" {
		msg = "ttrpc: closed"
	}
	return fmt.Sprintf("error %s: %s", s.Code(), msg)
}

func (w *world) run(c command) string {
	ctx, cancel := rpcCtx()
	defer cancel()
	switch c.name {
	case "launch":
		name := "127.0.0.1"
		if v, ok := c.args["server"]; ok {
			name = v
		}
		r, err := w.client.Launch(ctx, &agentv1.LaunchRequest{KbsServerName: name})
		if err != nil && c.args["show"] == "code" {
			return "error " + status.Code(err).String()
		}
		if err != nil {
			return statusLine(err)
		}
		return "ok process_id=" + r.GetProcessId()
	case "status":
		r, err := w.client.Status(ctx, &agentv1.StatusRequest{})
		if err != nil {
			return statusLine(err)
		}
		s := fmt.Sprintf("phase=%s tee=%s kernel=%s version=%s", r.GetPhase(), r.GetTee(), r.GetKernelRelease(), r.GetAgentVersion())
		if r.GetError() != "" {
			s += "\nerror: " + r.GetError()
		}
		return s
	case "output":
		id := WorkloadID
		if v, ok := c.args["id"]; ok {
			id = v
		}
		if until, ok := c.args["until"]; ok {
			// Read in the background; return once stdout holds until.
			w.output = make(chan string, 1)
			seen := make(chan struct{})
			go func() {
				ctx, cancel := rpcCtx()
				defer cancel()
				w.output <- w.readOutput(ctx, id, until, seen)
			}()
			select {
			case <-seen:
				return "seen " + until
			case s := <-w.output:
				return "ended early: " + s
			case <-ctx.Done():
				return "never saw " + until
			}
		}
		return w.readOutput(ctx, id, "", nil)
	case "output-result":
		select {
		case s := <-w.output:
			return s
		case <-ctx.Done():
			return "no output result"
		}
	case "wait":
		if c.args["background"] == "true" {
			// Return once the request has been written, so the next
			// command's request follows it on the connection.
			w.wait = make(chan string, 1)
			before := w.conn.count()
			defer w.conn.await(before + 1)
			go func() {
				ctx, cancel := rpcCtx()
				defer cancel()
				w.wait <- w.waitOnce(ctx)
			}()
			return "waiting"
		}
		return w.waitOnce(ctx)
	case "wait-result":
		select {
		case s := <-w.wait:
			return s
		case <-ctx.Done():
			return "no wait result"
		}
	case "signal":
		var sig int
		fmt.Sscan(c.args["sig"], &sig)
		if _, err := w.client.Signal(ctx, &agentv1.SignalRequest{ProcessId: WorkloadID, Signal: int32(sig)}); err != nil {
			return statusLine(err)
		}
		return "ok"
	case "shutdown":
		if _, err := w.client.Shutdown(ctx, &agentv1.ShutdownRequest{}); err != nil {
			return statusLine(err)
		}
		return "ok"
	case "poweroff":
		select {
		case <-w.sys.poweroff:
		case <-ctx.Done():
			return "not powered off"
		}
		err := <-w.served
		w.sys.mu.Lock()
		defer w.sys.mu.Unlock()
		return fmt.Sprintf("powered off (serve: %v) killall=%d", err, w.sys.killAll)
	case "disk":
		u := w.unlocker
		u.mu.Lock()
		defer u.mu.Unlock()
		return fmt.Sprintf("unlock calls=%d device=%s key_is_the_resource=%t closed=%d", u.calls, u.device, bytes.Equal(u.key, w.b.secret), u.closed)
	}
	w.t.Fatalf("line %d: unknown command %q", c.line, c.name)
	return ""
}

func (w *world) waitOnce(ctx context.Context) string {
	r, err := w.client.Wait(ctx, &agentv1.WaitRequest{ProcessId: WorkloadID})
	if err != nil {
		return statusLine(err)
	}
	return fmt.Sprintf("exit_code=%d signal=%d", r.GetExitCode(), r.GetSignal())
}

// readOutput reads a process's output to the end and describes it.
// Once stdout contains until, it closes seen.
func (w *world) readOutput(ctx context.Context, id, until string, seen chan struct{}) string {
	s, err := w.client.Output(ctx, &agentv1.OutputRequest{ProcessId: id})
	if err != nil {
		return statusLine(err)
	}
	var out, errs bytes.Buffer
	maxChunk := 0
	for {
		c, err := s.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return statusLine(err)
		}
		maxChunk = max(maxChunk, len(c.GetData()))
		switch c.GetStream() {
		case agentv1.Stream_STREAM_STDOUT:
			out.Write(c.GetData())
			if seen != nil && bytes.Contains(out.Bytes(), []byte(until)) {
				close(seen)
				seen = nil
			}
		case agentv1.Stream_STREAM_STDERR:
			errs.Write(c.GetData())
		}
	}
	show := func(b []byte) string {
		if len(b) > 200 {
			return fmt.Sprintf("<%d bytes>", len(b))
		}
		return fmt.Sprintf("%q", b)
	}
	return fmt.Sprintf("stdout=%s\nstderr=%s\nchunks_within_32KiB=%t", show(out.Bytes()), show(errs.Bytes()), maxChunk <= ChunkSize)
}

func TestTranscripts(t *testing.T) {
	if skipReason != "" {
		t.Skip(skipReason)
	}
	runTranscripts(t, func(t *testing.T) func(c command) string {
		var w *world
		return func(c command) string {
			if c.name == "setup" {
				w = newWorld(t, c)
				return "ok"
			}
			if w == nil {
				t.Fatalf("line %d: %s before setup", c.line, c.name)
			}
			return w.run(c)
		}
	})
}

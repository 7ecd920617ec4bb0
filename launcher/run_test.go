package launcher

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/greatjail/cvm/attestation/sim"
	"github.com/greatjail/cvm/guest-agent/link"
	"github.com/greatjail/cvm/launcher/engine"
	agentv1 "github.com/greatjail/cvm/proto/cvm/agent/v1"
)

// fakeEngine "boots" a fake agent in process: a ttrpc Agent served on the
// guest end of an in-memory link.
type fakeEngine struct{ agent *fakeAgent }

func (f *fakeEngine) Name() string  { return "fake" }
func (f *fakeEngine) Accel() string { return "none" }
func (f *fakeEngine) Start(_ context.Context, m engine.Machine) (engine.Handle, error) {
	os.WriteFile(m.ConsoleLog, []byte("fake console line\n"), 0o600)
	h := &fakeHandle{exited: make(chan struct{})}
	host, guest := net.Pipe()
	h.host = host
	f.agent.poweroff = h.stop
	go func() {
		s, err := link.Guest(guest)
		if err != nil {
			return
		}
		f.agent.sess = s
		srv, _ := ttrpc.NewServer()
		agentv1.RegisterAgentService(srv, f.agent)
		srv.Serve(context.Background(), s.Listener(link.KindTTRPC))
	}()
	return h, nil
}

type fakeHandle struct {
	host   net.Conn
	exited chan struct{}
	once   sync.Once
}

func (h *fakeHandle) Link(context.Context) (io.ReadWriteCloser, error) { return h.host, nil }
func (h *fakeHandle) Wait() error                                      { <-h.exited; return nil }
func (h *fakeHandle) Exited() <-chan struct{}                          { return h.exited }
func (h *fakeHandle) Kill()                                            { h.stop() }
func (h *fakeHandle) stop()                                            { h.once.Do(func() { close(h.exited) }) }

// fakeAgent answers as the agent would; launchErr decides Launch.
type fakeAgent struct {
	sess      *link.Session
	poweroff  func()
	launchErr error
	// psp, when set, receives the report the host's PSP signed.
	psp      chan []byte
	shutdown atomic.Bool
	kbsName  string
}

func (a *fakeAgent) Status(context.Context, *agentv1.StatusRequest) (*agentv1.StatusResponse, error) {
	return &agentv1.StatusResponse{Phase: agentv1.Phase_PHASE_READY, KernelRelease: "fake", AgentVersion: "test"}, nil
}

func (a *fakeAgent) Launch(_ context.Context, req *agentv1.LaunchRequest) (*agentv1.LaunchResponse, error) {
	a.kbsName = req.GetKbsServerName()
	if a.psp != nil {
		c, err := a.sess.Open(link.KindPSP)
		if err != nil {
			return nil, err
		}
		report, _, err := link.RequestPSP(c, link.PSPRequest{})
		c.Close()
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		a.psp <- report
	}
	if a.launchErr != nil {
		return nil, a.launchErr
	}
	return &agentv1.LaunchResponse{ProcessId: "workload", AttestMs: 30, FetchMs: 20, UnlockMs: 10}, nil
}

func (a *fakeAgent) Output(_ context.Context, _ *agentv1.OutputRequest, s agentv1.Agent_OutputServer) error {
	s.Send(&agentv1.OutputChunk{Stream: agentv1.Stream_STREAM_STDOUT, Data: []byte("out\n")})
	s.Send(&agentv1.OutputChunk{Stream: agentv1.Stream_STREAM_STDERR, Data: []byte("err\n")})
	return nil
}

func (a *fakeAgent) Signal(context.Context, *agentv1.SignalRequest) (*agentv1.SignalResponse, error) {
	return &agentv1.SignalResponse{}, nil
}

func (a *fakeAgent) Wait(context.Context, *agentv1.WaitRequest) (*agentv1.WaitResponse, error) {
	return &agentv1.WaitResponse{ExitCode: 3}, nil
}

func (a *fakeAgent) Shutdown(context.Context, *agentv1.ShutdownRequest) (*agentv1.ShutdownResponse, error) {
	a.shutdown.Store(true)
	time.AfterFunc(10*time.Millisecond, a.poweroff)
	return &agentv1.ShutdownResponse{}, nil
}

var (
	testSimOnce sync.Once
	testSimDir  string
	testSimErr  error
)

// testSim returns a sim authority directory shared by the tests (RSA-4096
// key generation takes seconds).
func testSim(t *testing.T) (string, *sim.Authority) {
	t.Helper()
	testSimOnce.Do(func() {
		var d string
		if d, testSimErr = os.MkdirTemp("", "cvm-sim"); testSimErr != nil {
			return
		}
		testSimDir = filepath.Join(d, "sim")
		var a *sim.Authority
		if a, testSimErr = sim.New(rand.Reader, time.Now().Add(-time.Hour)); testSimErr == nil {
			testSimErr = a.Save(testSimDir)
		}
	})
	if testSimErr != nil {
		t.Fatal(testSimErr)
	}
	a, err := sim.Load(testSimDir)
	if err != nil {
		t.Fatal(err)
	}
	return testSimDir, a
}

func TestRunFakeAgent(t *testing.T) {
	k := testKernel(t)
	simDir, _ := testSim(t)
	d := t.TempDir()
	disk := filepath.Join(d, "disk.img")
	os.WriteFile(disk, make([]byte, 1<<20), 0o600)
	base := Spec{Kernel: k, Agent: goBuild(t, "./internal/demo/hello"), Disk: disk, KBS: "broker.test:8443",
		KBSCA: writeCA(t, d, "ca"), Resource: "r", Entrypoint: "/bin/hello", TEE: "sim", SimDir: simDir}
	for _, tc := range []struct {
		name      string
		launchErr error
		want      error // nil: success
		wantMsg   string
	}{
		{"success", nil, nil, ""},
		{"denied", status.Error(codes.PermissionDenied, "denied by the key broker"), ErrDenied, "audit log"},
		{"unreachable", status.Error(codes.Unavailable, "connection closed"), ErrUnreachable, "broker.test:8443"},
		{"disk", status.Error(codes.FailedPrecondition, "luks2: header checksum mismatch"), ErrLaunch, "header checksum mismatch"},
		{"internal", status.Error(codes.Internal, "mount: no ext4"), ErrLaunch, "mount: no ext4"},
		// A hostile guest's message must not drive the operator's terminal.
		{"escapes", status.Error(codes.Internal, "\x1b]0;owned\x07\x1b[2Jfine\rok"), ErrLaunch, `\x1b]0;owned\a\x1b[2Jfine\rok`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fa := &fakeAgent{launchErr: tc.launchErr, psp: make(chan []byte, 1)}
			old := selectEngine
			selectEngine = func(string, func() error) (engine.Choice, error) {
				return engine.Choice{Engine: &fakeEngine{agent: fa}, Why: "test"}, nil
			}
			defer func() { selectEngine = old }()
			var so, se bytes.Buffer
			s := base
			// Success uses a temporary state directory (removed after);
			// failures keep the one given.
			if tc.want != nil {
				s.StateDir = filepath.Join(t.TempDir(), "state")
			}
			res, err := Run(context.Background(), s, IO{Stdout: &so, Stderr: &se})
			if fa.kbsName != "broker.test" {
				t.Errorf("LaunchRequest.kbs_server_name = %q, want the host part of --kbs", fa.kbsName)
			}
			// The PSP signed a report carrying the launch's digest.
			select {
			case r := <-fa.psp:
				if len(r) != sim.ReportSize || res.Digest != hex.EncodeToString(r[0x90:0x90+48]) {
					t.Errorf("report measurement %x, want the digest %s", r[0x90:0x90+48], res.Digest)
				}
			default:
				t.Error("the agent got no report")
			}
			if tc.want == nil {
				if err != nil || res.ExitCode != 3 {
					t.Fatalf("Run = exit %d, %v; want the workload's 3, nil\n%s", res.ExitCode, err, se.String())
				}
				if so.String() != "out\n" || !strings.Contains(se.String(), "err\n") {
					t.Errorf("stdout %q, stderr %q", so.String(), se.String())
				}
				if !fa.shutdown.Load() {
					t.Error("no Shutdown after the workload exited")
				}
				if res.Attest != 30*time.Millisecond || res.Unlock != 10*time.Millisecond || res.FirstOutput == 0 {
					t.Errorf("durations %+v", res)
				}
				if res.StateDir != "" {
					t.Errorf("Result.StateDir = %q after a successful launch with a temporary one, want it removed", res.StateDir)
				}
				return
			}
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("Run = %v, want %v containing %q", err, tc.want, tc.wantMsg)
			}
			if strings.ContainsAny(err.Error(), "\x1b\x07\r") {
				t.Errorf("Run's error carries raw control characters from the guest: %q", err)
			}
			if !strings.Contains(err.Error(), s.StateDir) {
				t.Errorf("error %q does not name the state directory", err)
			}
			if _, serr := os.Stat(filepath.Join(s.StateDir, ConsoleLog)); serr != nil {
				t.Errorf("console log not kept: %v", serr)
			}
		})
	}
}

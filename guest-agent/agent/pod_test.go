package agent

import (
	"context"
	"crypto/rand"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/guest-agent/containers"
	"github.com/greatjail/cvm/guest-agent/evidence"
	"github.com/greatjail/cvm/guest-agent/launchconfig"
	"github.com/greatjail/cvm/guest-agent/link"
	agentv1 "github.com/greatjail/cvm/proto/cvm/agent/v1"
)

// fakeContainers records the container calls that got through the gate.
type fakeContainers struct {
	agentv1.ContainersService
	mu      sync.Mutex
	created []string
}

func (f *fakeContainers) Create(_ context.Context, r *agentv1.CreateContainerRequest) (*agentv1.CreateContainerResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.created = append(f.created, r.GetContainerId())
	return &agentv1.CreateContainerResponse{}, nil
}

func (f *fakeContainers) Pids(context.Context, *agentv1.ContainerPidsRequest) (*agentv1.ContainerPidsResponse, error) {
	return &agentv1.ContainerPidsResponse{}, nil
}

// podWorld is a pod-mode agent on a link, with its host.
type podWorld struct {
	impl       *Agent // the service itself, for calls that must bypass ttrpc
	agent      agentv1.AgentClient
	containers agentv1.ContainersClient
	fake       *fakeContainers
}

func newPodWorld(t *testing.T, tee attestation.TEE, measurementOK bool, edit ...func(*Options)) *podWorld {
	t.Helper()
	cfg := &launchconfig.Config{Version: 1, Mode: launchconfig.ModePod, TEE: tee}
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
	opts := Options{Config: cfg, System: &fakeSystem{poweroff: make(chan struct{})}, Logf: t.Logf, Version: "test"}
	if tee != launchconfig.TEENone {
		b, err := theBroker()
		if err != nil {
			t.Fatalf("starting the test broker: %v", err)
		}
		cfg.KBSCAPEM, cfg.Resource = string(b.caPEM), resourceName
		ho := hostOptions{measurement: b.good}
		if !measurementOK {
			copy(ho.measurement[:], "some other launch")
		}
		go serveHost(host, b, ho)
		if opts.Provider, err = evidence.ForConfig(cfg, guest); err != nil {
			t.Fatal(err)
		}
		opts.DialKBS = func(context.Context) (net.Conn, error) { return guest.Open(link.KindKBS) }
		opts.Rand = rand.Reader
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	w := &podWorld{fake: &fakeContainers{}}
	opts.Containers = w.fake
	for _, e := range edit {
		e(&opts)
	}
	a, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	// Serve may still log (a Shutdown's power-off) after the test's last
	// call: the test ends only once Serve has returned.
	served := make(chan struct{})
	go func() {
		defer close(served)
		a.Serve(ctx, guest.Listener(link.KindTTRPC))
	}()
	t.Cleanup(func() { cancel(); <-served })
	conn, err := host.Open(link.KindTTRPC)
	if err != nil {
		t.Fatal(err)
	}
	tc := ttrpc.NewClient(conn)
	t.Cleanup(func() { tc.Close() })
	w.agent, w.containers = agentv1.NewAgentClient(tc), agentv1.NewContainersClient(tc)
	w.impl = a
	return w
}

func (w *podWorld) create(id string) codes.Code {
	ctx, cancel := rpcCtx()
	defer cancel()
	_, err := w.containers.Create(ctx, &agentv1.CreateContainerRequest{ContainerId: id})
	return status.Code(err)
}

func (w *podWorld) launch() codes.Code {
	ctx, cancel := rpcCtx()
	defer cancel()
	_, err := w.agent.Launch(ctx, &agentv1.LaunchRequest{KbsServerName: "127.0.0.1"})
	return status.Code(err)
}

// TestPodGate: a plain pod creates containers at once (and has nothing to
// attest); a confidential pod refuses Create until Launch attested, and
// keeps refusing when the broker denied it.
func TestPodGate(t *testing.T) {
	type step struct {
		Op   string
		Code codes.Code
	}
	tests := []struct {
		name        string
		tee         attestation.TEE
		good        bool
		steps, want []step
		created     []string
	}{
		{"plain", launchconfig.TEENone, true,
			[]step{{Op: "create c1"}, {Op: "launch"}, {Op: "create c2"}},
			[]step{{"create c1", codes.OK}, {"launch", codes.FailedPrecondition}, {"create c2", codes.OK}},
			[]string{"c1", "c2"}},
		{"confidential attested", attestation.TEESim, true,
			[]step{{Op: "create c1"}, {Op: "launch"}, {Op: "create c2"}, {Op: "launch"}},
			[]step{{"create c1", codes.FailedPrecondition}, {"launch", codes.OK}, {"create c2", codes.OK}, {"launch", codes.FailedPrecondition}},
			[]string{"c2"}},
		{"confidential denied", attestation.TEESim, false,
			[]step{{Op: "launch"}, {Op: "create c1"}},
			[]step{{"launch", codes.PermissionDenied}, {"create c1", codes.FailedPrecondition}},
			nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.tee != launchconfig.TEENone && skipReason != "" {
				t.Skip(skipReason)
			}
			w := newPodWorld(t, tt.tee, tt.good)
			var got []step
			for _, s := range tt.steps {
				var c codes.Code
				switch s.Op {
				case "launch":
					c = w.launch()
				default:
					c = w.create(s.Op[len("create "):])
				}
				got = append(got, step{s.Op, c})
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("steps (-want +got):\n%s", diff)
			}
			w.fake.mu.Lock()
			defer w.fake.mu.Unlock()
			if diff := cmp.Diff(tt.created, w.fake.created); diff != "" {
				t.Errorf("containers created (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNewPodMode(t *testing.T) {
	sys := &fakeSystem{poweroff: make(chan struct{})}
	plain := &launchconfig.Config{Version: 1, Mode: launchconfig.ModePod, TEE: launchconfig.TEENone}
	conf := &launchconfig.Config{Version: 1, Mode: launchconfig.ModePod, TEE: attestation.TEESim}
	launch := &launchconfig.Config{Version: 1, TEE: attestation.TEESim}
	tests := []struct {
		name string
		o    Options
		ok   bool
	}{
		{"plain pod", Options{Config: plain, System: sys, Containers: &fakeContainers{}}, true},
		{"plain pod without Containers", Options{Config: plain, System: sys}, false},
		{"confidential pod without a provider", Options{Config: conf, System: sys, Containers: &fakeContainers{}}, false},
		{"launch mode with Containers", Options{Config: launch, System: sys, Containers: &fakeContainers{}}, false},
	}
	for _, tt := range tests {
		if _, err := New(tt.o); (err == nil) != tt.ok {
			t.Errorf("%s: New = %v, want ok %v", tt.name, err, tt.ok)
		}
	}
}

// A Shutdown that lands while a confidential pod is attesting: Launch
// must fail with FailedPrecondition and leave the agent usable (it once
// deadlocked here, re-taking its own lock), and the gate stays shut.
func TestPodShutdownDuringAttest(t *testing.T) {
	if skipReason != "" {
		t.Skip(skipReason)
	}
	dialing, release := make(chan struct{}), make(chan struct{})
	w := newPodWorld(t, attestation.TEESim, true, func(o *Options) {
		dial := o.DialKBS
		var once sync.Once
		o.DialKBS = func(ctx context.Context) (net.Conn, error) {
			once.Do(func() { close(dialing) })
			<-release
			return dial(ctx)
		}
	})
	ctx := context.Background()
	launched := make(chan error, 1)
	go func() {
		_, err := w.impl.Launch(ctx, &agentv1.LaunchRequest{KbsServerName: "127.0.0.1"})
		launched <- err
	}()
	<-dialing
	if _, err := w.impl.Shutdown(ctx, &agentv1.ShutdownRequest{}); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	close(release)
	select {
	case err := <-launched:
		if status.Code(err) != codes.FailedPrecondition {
			t.Errorf("Launch = %v, want FailedPrecondition (shutting down)", err)
		}
	case <-time.After(time.Minute): // a hang guard, not a timing assertion
		t.Fatal("Launch did not return after Shutdown: the agent is deadlocked")
	}
	st, err := w.impl.Status(ctx, &agentv1.StatusRequest{})
	if err != nil || st.GetPhase() != agentv1.Phase_PHASE_FAILED {
		t.Errorf("Status = %v, %v; want PHASE_FAILED", st, err)
	}
	if err := w.impl.containersGate(); err == nil {
		t.Error("the containers gate opened for a pod that was shut down while attesting")
	}
}

// TestPodSecrets: the resource a confidential pod fetched when it attested
// is what its containers get (containers.SecretsDir); a plain pod, a
// denied pod and a pod that has shut down have none.
func TestPodSecrets(t *testing.T) {
	t.Run("plain", func(t *testing.T) {
		w := newPodWorld(t, launchconfig.TEENone, true)
		w.launch()
		if s := w.impl.Secrets(); s != nil {
			t.Errorf("a plain pod has secrets %v", s)
		}
	})
	if skipReason != "" {
		t.Skip(skipReason)
	}
	b, err := theBroker()
	if err != nil {
		t.Fatal(err)
	}
	t.Run("denied", func(t *testing.T) {
		w := newPodWorld(t, attestation.TEESim, false)
		if c := w.launch(); c != codes.PermissionDenied {
			t.Fatalf("Launch = %v, want PermissionDenied", c)
		}
		if s := w.impl.Secrets(); s != nil {
			t.Errorf("a denied pod has secrets %v", s)
		}
	})
	t.Run("attested", func(t *testing.T) {
		w := newPodWorld(t, attestation.TEESim, true)
		if s := w.impl.Secrets(); s != nil {
			t.Errorf("secrets before Launch: %v", s)
		}
		if c := w.launch(); c != codes.OK {
			t.Fatalf("Launch = %v", c)
		}
		want := []containers.Secret{{Name: resourceName, Data: b.secret}}
		got := w.impl.Secrets()
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("Secrets (-want +got):\n%s", diff)
		}
		got[0].Data[0] ^= 0xff // a caller's copy: the agent's stays intact
		if diff := cmp.Diff(want, w.impl.Secrets()); diff != "" {
			t.Errorf("Secrets after a caller changed its copy (-want +got):\n%s", diff)
		}
		ctx, cancel := rpcCtx()
		defer cancel()
		if _, err := w.agent.Shutdown(ctx, &agentv1.ShutdownRequest{}); err != nil {
			t.Fatal(err)
		}
		if s := w.impl.Secrets(); s != nil {
			t.Errorf("secrets after Shutdown: %v", s)
		}
	})
}

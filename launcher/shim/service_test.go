package shim_test

// The task service in-process (no containerd): driven through its ttrpc
// API with the host sandbox fixture, real FIFOs and a recording publisher.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/typeurl/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/greatjail/cvm/internal/ctrtest"
	"github.com/greatjail/cvm/launcher/shim"
	"github.com/greatjail/cvm/launcher/shim/shimtest"
)

// recorder is a shim.Publisher keeping the topics and IDs it was given.
type recorder struct {
	mu     sync.Mutex
	events []string
}

func (r *recorder) Publish(ctx context.Context, topic string, ev events.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	id := ""
	if v, ok := ev.(interface{ GetContainerID() string }); ok {
		id = v.GetContainerID()
	}
	if v, ok := ev.(interface{ GetExecID() string }); ok && v.GetExecID() != "" {
		id += "/" + v.GetExecID()
	}
	if v, ok := ev.(interface{ GetID() string }); ok && v.GetID() != "" && v.GetID() != id {
		id += "/" + v.GetID()
	}
	r.events = append(r.events, topic+" "+id)
	return nil
}

func (r *recorder) Close() error { return nil }

func (r *recorder) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.events...)
}

type harness struct {
	svc  *shim.Service
	rec  *recorder
	sd   shutdown.Service
	dir  string
	root string // a root file system directory with /bin/prog
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the host sandbox fixture mounts and chroots: run the test as root")
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	ctrtest.RootDir(t, root, ctrtest.Image{Files: map[string]string{"bin/prog": filepath.Join(fixture(t), "prog")}})
	ctx, sd := shutdown.WithShutdown(context.Background())
	rec := &recorder{}
	svc := shim.NewService(ctx, shim.Options{
		Name: "io.containerd.cvmtest.v2",
		NewSandbox: func(ctx context.Context, _ shim.SandboxRequest) (shim.Sandbox, error) {
			return shimtest.New(ctx, filepath.Join(dir, "sandbox"))
		},
	}, rec, sd)
	t.Cleanup(func() {
		sd.Shutdown()
		<-sd.Done()
	})
	return &harness{svc: svc, rec: rec, sd: sd, dir: dir, root: root}
}

// bundle writes a bundle for task id running args, with FIFOs for stdout
// and stderr whose contents the returned function collects.
func (h *harness) create(t *testing.T, id string, args ...string) (out func() (string, string)) {
	t.Helper()
	b := filepath.Join(h.dir, id)
	if err := os.MkdirAll(b, 0o755); err != nil {
		t.Fatal(err)
	}
	spec := specs.Spec{Version: specs.Version, Root: &specs.Root{Path: h.root},
		Process: &specs.Process{Args: args, Cwd: "/", Env: []string{"PATH=/bin"}}}
	write(t, filepath.Join(b, "config.json"), mustJSON(t, spec))
	stdout, stderr, collect := fifos(t, b)
	_, err := h.svc.Create(context.Background(), &taskAPI.CreateTaskRequest{ID: id, Bundle: b, Stdout: stdout, Stderr: stderr})
	if err != nil {
		t.Fatalf("Create(%s): %v", id, err)
	}
	return collect
}

// fifos makes stdout and stderr FIFOs in dir and starts reading them as
// containerd's client does.
func fifos(t *testing.T, dir string) (string, string, func() (string, string)) {
	t.Helper()
	var paths [2]string
	var res [2]chan string
	for i, n := range []string{"stdout", "stderr"} {
		paths[i] = filepath.Join(dir, n)
		if err := syscall.Mkfifo(paths[i], 0o600); err != nil {
			t.Fatal(err)
		}
		res[i] = make(chan string, 1)
		go func() {
			f, err := os.OpenFile(paths[i], os.O_RDONLY, 0)
			if err != nil {
				res[i] <- err.Error()
				return
			}
			b, _ := io.ReadAll(f) // EOF once the shim closed its end
			f.Close()
			res[i] <- string(b)
		}()
	}
	return paths[0], paths[1], func() (string, string) {
		var out [2]string
		for i := range res {
			select {
			case out[i] = <-res[i]:
			case <-time.After(30 * time.Second):
				t.Fatalf("%s FIFO never reached EOF: the shim kept its end open", paths[i])
			}
		}
		return out[0], out[1]
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestServiceLifecycle(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	s := h.svc

	collect := h.create(t, "t1", "/bin/prog", "echo", "one")
	st, err := s.State(ctx, &taskAPI.StateRequest{ID: "t1"})
	if err != nil || st.Status != task.Status_CREATED {
		t.Fatalf("State after Create = %v, %v; want CREATED", st, err)
	}
	if _, err := s.Start(ctx, &taskAPI.StartRequest{ID: "t1"}); err != nil {
		t.Fatal(err)
	}
	w, err := s.Wait(ctx, &taskAPI.WaitRequest{ID: "t1"})
	if err != nil || w.ExitStatus != 0 {
		t.Fatalf("Wait = %v, %v", w, err)
	}
	if out, errOut := collect(); out != "one\n" || errOut != "" {
		t.Errorf("output = %q, %q", out, errOut)
	}

	// A second task in the same shim: a long-running one with execs.
	h.create(t, "t2", "/bin/prog", "sleep", "300")
	if _, err := s.Start(ctx, &taskAPI.StartRequest{ID: "t2"}); err != nil {
		t.Fatal(err)
	}
	// Shutdown with tasks left must not stop the shim.
	if _, err := s.Shutdown(ctx, &taskAPI.ShutdownRequest{}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-h.sd.Done():
		t.Fatal("Shutdown stopped the shim while tasks remain")
	case <-time.After(100 * time.Millisecond):
	}
	execIO := filepath.Join(h.dir, "t2", "e1-io")
	mkdir(t, execIO)
	stdout, stderr, collectExec := fifos(t, execIO)
	proc, _ := json.Marshal(specs.Process{Args: []string{"/bin/prog", "exit", "9"}, Cwd: "/"})
	if _, err := s.Exec(ctx, &taskAPI.ExecProcessRequest{ID: "t2", ExecID: "e1", Stdout: stdout, Stderr: stderr,
		Spec: &anypb.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process", Value: proc}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Start(ctx, &taskAPI.StartRequest{ID: "t2", ExecID: "e1"}); err != nil {
		t.Fatal(err)
	}
	if w, err := s.Wait(ctx, &taskAPI.WaitRequest{ID: "t2", ExecID: "e1"}); err != nil || w.ExitStatus != 9 {
		t.Errorf("Wait(exec) = %v, %v; want 9", w, err)
	}
	collectExec()
	if _, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "t2", ExecID: "e1"}); err != nil {
		t.Fatal(err)
	}
	pids, err := s.Pids(ctx, &taskAPI.PidsRequest{ID: "t2"})
	if err != nil || len(pids.Processes) != 1 {
		t.Errorf("Pids = %v, %v; want the one sleeping process", pids, err)
	}
	stats, err := s.Stats(ctx, &taskAPI.StatsRequest{ID: "t2"})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := typeurl.UnmarshalAny(stats.Stats); err != nil {
		t.Errorf("Stats: %v", err)
	} else if fmt.Sprint(m) == "" {
		t.Errorf("Stats: empty metrics")
	}
	if _, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "t2"}); !errdefs.IsFailedPrecondition(errgrpc.ToNative(err)) {
		t.Errorf("Delete of a running task = %v, want FailedPrecondition", err)
	}
	if _, err := s.Kill(ctx, &taskAPI.KillRequest{ID: "t2", Signal: uint32(syscall.SIGTERM)}); err != nil {
		t.Fatal(err)
	}
	if w, err := s.Wait(ctx, &taskAPI.WaitRequest{ID: "t2"}); err != nil || w.ExitStatus != 143 {
		t.Errorf("Wait after SIGTERM = %v, %v; want 143", w, err)
	}
	if _, err := s.Kill(ctx, &taskAPI.KillRequest{ID: "t2", Signal: uint32(syscall.SIGTERM)}); !errdefs.IsNotFound(errgrpc.ToNative(err)) {
		t.Errorf("Kill after exit = %v, want NotFound", err)
	}
	for _, id := range []string{"t1", "t2"} {
		if _, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: id}); err != nil {
			t.Fatalf("Delete(%s): %v", id, err)
		}
	}
	if _, err := s.State(ctx, &taskAPI.StateRequest{ID: "t1"}); !errdefs.IsNotFound(errgrpc.ToNative(err)) {
		t.Errorf("State after Delete = %v, want NotFound", err)
	}
	if _, err := s.Shutdown(ctx, &taskAPI.ShutdownRequest{}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-h.sd.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown with no task left did not stop the shim")
	}
	want := []string{
		"/tasks/create t1", "/tasks/start t1", "/tasks/exit t1", "/tasks/create t2", "/tasks/start t2",
		"/tasks/exec-added t2/e1", "/tasks/exec-started t2/e1", "/tasks/exit t2/e1", "/tasks/exit t2",
		"/tasks/delete t1", "/tasks/delete t2",
	}
	if diff := cmp.Diff(want, h.rec.list()); diff != "" {
		t.Errorf("events (-want +got)\n%s", diff)
	}
	if _, err := os.Stat(filepath.Join(h.dir, "sandbox")); !os.IsNotExist(err) {
		t.Errorf("sandbox state left after shutdown: %v", err)
	}
}

func mkdir(t *testing.T, p string) {
	t.Helper()
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestServiceRejects(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	b := filepath.Join(h.dir, "bad")
	mkdir(t, b)
	write(t, filepath.Join(b, "config.json"), mustJSON(t, specs.Spec{Root: &specs.Root{Path: h.root},
		Process: &specs.Process{Args: []string{"/bin/prog"}, Cwd: "/"}}))
	tests := []struct {
		name string
		req  *taskAPI.CreateTaskRequest
		is   func(error) bool
	}{
		{"terminal the spec lacks", &taskAPI.CreateTaskRequest{ID: "a", Bundle: b, Terminal: true, Stdout: "/x"}, errdefs.IsInvalidArgument},
		{"checkpoint", &taskAPI.CreateTaskRequest{ID: "a", Bundle: b, Checkpoint: "/x"}, errdefs.IsNotImplemented},
		{"no bundle", &taskAPI.CreateTaskRequest{ID: "a", Bundle: filepath.Join(h.dir, "none")}, errdefs.IsNotFound},
	}
	for _, tc := range tests {
		_, err := h.svc.Create(ctx, tc.req)
		if !tc.is(errgrpc.ToNative(err)) {
			t.Errorf("%s: Create = %v", tc.name, err)
		}
	}
	for _, req := range []any{&taskAPI.StartRequest{ID: "nope"}, &taskAPI.StateRequest{ID: "nope"}} {
		var err error
		switch r := req.(type) {
		case *taskAPI.StartRequest:
			_, err = h.svc.Start(ctx, r)
		case *taskAPI.StateRequest:
			_, err = h.svc.State(ctx, r)
		}
		if !errdefs.IsNotFound(errgrpc.ToNative(err)) {
			t.Errorf("%T of an unknown task = %v, want NotFound", req, err)
		}
	}
}

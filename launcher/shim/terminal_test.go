package shim_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/anypb"
)

// TestServiceTerminal runs a task with a terminal as `ctr run -t` sets it
// up: stdin and stdout FIFOs, no stderr, a window size sent before Start
// and another one while it runs; end of the stdin FIFO is end of input.
func TestServiceTerminal(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	s := h.svc
	b := filepath.Join(h.dir, "tt")
	mkdir(t, b)
	spec := specs.Spec{Version: specs.Version, Root: &specs.Root{Path: h.root},
		Process: &specs.Process{Args: []string{"/bin/prog", "tty"}, Cwd: "/", Env: []string{"PATH=/bin"}, Terminal: true}}
	write(t, filepath.Join(b, "config.json"), mustJSON(t, spec))
	stdin, stdout := filepath.Join(b, "stdin"), filepath.Join(b, "stdout")
	for _, f := range []string{stdin, stdout} {
		if err := syscall.Mkfifo(f, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// containerd's client holds both FIFOs open (read-write, so that
	// opening does not block) before it creates the task.
	in, err := os.OpenFile(stdin, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	var mu sync.Mutex
	var out strings.Builder // guarded by mu
	eof := make(chan struct{})
	go func() {
		defer close(eof)
		f, err := os.OpenFile(stdout, os.O_RDONLY, 0)
		if err != nil {
			t.Error(err)
			return
		}
		defer f.Close()
		b := make([]byte, 1024)
		for {
			n, err := f.Read(b)
			mu.Lock()
			out.Write(b[:n])
			mu.Unlock()
			if err != nil {
				return // EOF once the shim closed its end
			}
		}
	}()
	screen := func() string {
		mu.Lock()
		defer mu.Unlock()
		return out.String()
	}
	// waitFor's deadline only keeps a broken test from hanging.
	waitFor := func(want string) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); !strings.Contains(screen(), want); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("terminal output %q lacks %q", screen(), want)
			}
		}
	}
	if _, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "tt", Bundle: b, Stdin: stdin, Stdout: stdout, Terminal: true}); err != nil {
		t.Fatalf("Create with a terminal: %v", err)
	}
	if _, err := s.ResizePty(ctx, &taskAPI.ResizePtyRequest{ID: "tt", Width: 80, Height: 25}); err != nil {
		t.Fatalf("ResizePty before Start: %v", err)
	}
	if _, err := s.Start(ctx, &taskAPI.StartRequest{ID: "tt"}); err != nil {
		t.Fatal(err)
	}
	waitFor("tty 25 80 -\r\n") // no /proc, no devpts of its own: no name
	if _, err := s.ResizePty(ctx, &taskAPI.ResizePtyRequest{ID: "tt", Width: 100, Height: 40}); err != nil {
		t.Fatalf("ResizePty: %v", err)
	}
	if _, err := in.WriteString("hi\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ResizePty(ctx, &taskAPI.ResizePtyRequest{ID: "tt", Width: 1 << 16, Height: 1}); !errdefs.IsInvalidArgument(errgrpc.ToNative(err)) {
		t.Errorf("ResizePty 65536 wide = %v, want InvalidArgument", err)
	}
	// The client's input ends and it says so (CloseIO, as ctr and CRI
	// do): the shim reads the line, then EOF, and closes the process's
	// stdin, which types ^D into its terminal.
	in.Close()
	if _, err := s.CloseIO(ctx, &taskAPI.CloseIORequest{ID: "tt", Stdin: true}); err != nil {
		t.Fatal(err)
	}
	w, err := s.Wait(ctx, &taskAPI.WaitRequest{ID: "tt"})
	if err != nil || w.ExitStatus != 0 {
		t.Fatalf("Wait = %v, %v; want 0", w, err)
	}
	select {
	case <-eof:
	case <-time.After(30 * time.Second):
		t.Fatal("stdout FIFO never reached EOF")
	}
	waitFor("line hi 40 100\r\neof\r\n")
	if _, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "tt"}); err != nil {
		t.Fatal(err)
	}
}

func TestServiceTerminalRejects(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	s := h.svc
	h.create(t, "r", "/bin/prog", "sleep", "300")
	if _, err := s.Start(ctx, &taskAPI.StartRequest{ID: "r"}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		s.Kill(ctx, &taskAPI.KillRequest{ID: "r", Signal: uint32(syscall.SIGKILL)})
		s.Wait(ctx, &taskAPI.WaitRequest{ID: "r"})
		s.Delete(ctx, &taskAPI.DeleteRequest{ID: "r"})
	}()
	tty := mustJSON(t, specs.Process{Args: []string{"/bin/prog", "tty"}, Cwd: "/", Terminal: true})
	plain := mustJSON(t, specs.Process{Args: []string{"/bin/prog", "tty"}, Cwd: "/"})
	any := func(s string) *anypb.Any {
		return &anypb.Any{TypeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Process", Value: []byte(s)}
	}
	tests := []struct {
		name string
		req  *taskAPI.ExecProcessRequest
	}{
		{"terminal the spec lacks", &taskAPI.ExecProcessRequest{ID: "r", ExecID: "a", Terminal: true, Stdout: "/x", Spec: any(plain)}},
		{"spec terminal without request", &taskAPI.ExecProcessRequest{ID: "r", ExecID: "b", Stdout: "/x", Spec: any(tty)}},
		{"terminal without stdout", &taskAPI.ExecProcessRequest{ID: "r", ExecID: "c", Terminal: true, Spec: any(tty)}},
		{"bad spec", &taskAPI.ExecProcessRequest{ID: "r", ExecID: "d", Spec: any("{")}},
	}
	for _, tc := range tests {
		if _, err := s.Exec(ctx, tc.req); !errdefs.IsInvalidArgument(errgrpc.ToNative(err)) {
			t.Errorf("%s: Exec = %v, want InvalidArgument", tc.name, err)
		}
	}
	// A process without a terminal ignores a resize, as with runc.
	if _, err := s.ResizePty(ctx, &taskAPI.ResizePtyRequest{ID: "r", Width: 80, Height: 24}); err != nil {
		t.Errorf("ResizePty without a terminal = %v, want nil", err)
	}
	if _, err := s.ResizePty(ctx, &taskAPI.ResizePtyRequest{ID: "nope"}); !errdefs.IsNotFound(errgrpc.ToNative(err)) {
		t.Errorf("ResizePty of an unknown task = %v, want NotFound", err)
	}
}

package shim_test

import (
	"bytes"
	"context"
	"path/filepath"
	"syscall"
	"testing"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/fifo"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// TestServiceStdinDrained is `printf … | ctr run -i`: the client writes
// its input into the stdin FIFO, closes its end and calls CloseIO at
// once. Everything it wrote must reach the process before its stdin
// ends; the shim must not drop what is still buffered in the FIFO.
func TestServiceStdinDrained(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	s := h.svc
	b := filepath.Join(h.dir, "in")
	mkdir(t, b)
	spec := specs.Spec{Version: specs.Version, Root: &specs.Root{Path: h.root},
		Process: &specs.Process{Args: []string{"/bin/prog", "cat"}, Cwd: "/", Env: []string{"PATH=/bin"}}}
	write(t, filepath.Join(b, "config.json"), mustJSON(t, spec))
	stdin := filepath.Join(b, "stdin")
	if err := syscall.Mkfifo(stdin, 0o600); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, collect := fifos(t, b)
	// As containerd's client (pkg/cio): the stdin FIFO opened write-only
	// and non-blocking with containerd/fifo, whose writes wait for the
	// shim's reader.
	in, err := fifo.OpenFifo(ctx, stdin, syscall.O_WRONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "in", Bundle: b, Stdin: stdin, Stdout: stdout, Stderr: stderr}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Start(ctx, &taskAPI.StartRequest{ID: "in"}); err != nil {
		t.Fatal(err)
	}
	// 48 KiB fits in the FIFO's buffer: the writes return before the
	// shim has read anything.
	want := bytes.Repeat([]byte("0123456789abcdef"), 3<<10)
	if _, err := in.Write(want); err != nil {
		t.Fatal(err)
	}
	in.Close()
	if _, err := s.CloseIO(ctx, &taskAPI.CloseIORequest{ID: "in", Stdin: true}); err != nil {
		t.Fatal(err)
	}
	w, err := s.Wait(ctx, &taskAPI.WaitRequest{ID: "in"})
	if err != nil || w.ExitStatus != 0 {
		t.Fatalf("Wait = %v, %v; want exit 0", w, err)
	}
	out, errOut := collect()
	if out != string(want) {
		t.Errorf("the process read %d of the %d bytes written before CloseIO (stderr %q)", len(out), len(want), errOut)
	}
	if _, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "in"}); err != nil {
		t.Fatal(err)
	}
}

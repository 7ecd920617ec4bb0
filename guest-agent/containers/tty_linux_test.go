package containers

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// transcript collects what a reader produces, for waiting on.
type transcript struct {
	mu   sync.Mutex
	buf  strings.Builder // guarded by mu
	done bool            // guarded by mu; the reader hit EOF or an error
	err  error           // guarded by mu
	pos  int             // where the next expect starts; test goroutine only
}

func readTranscript(r io.ReadCloser) *transcript {
	tr := &transcript{}
	go func() {
		defer r.Close()
		b := make([]byte, 4096)
		for {
			n, err := r.Read(b)
			tr.mu.Lock()
			tr.buf.Write(b[:n])
			if err != nil {
				tr.done = true
				if err != io.EOF {
					tr.err = err
				}
			}
			tr.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return tr
}

func (tr *transcript) snapshot() (string, bool, error) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.buf.String(), tr.done, tr.err
}

// expect waits until want appears after the previous match. The deadline
// only keeps a broken test from hanging.
func (tr *transcript) expect(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s, done, err := tr.snapshot()
		if i := strings.Index(s[tr.pos:], want); i >= 0 {
			tr.pos += i + len(want)
			return
		}
		if done || time.Now().After(deadline) {
			t.Fatalf("terminal output %q (ended %v, error %v) lacks %q after offset %d", s, done, err, want, tr.pos)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestTerminal runs an exec process with a terminal, as kubectl exec -it
// does: it sees a controlling terminal on 0, 1 and 2 with the initial
// window size, then the size ResizePty set; input typed through
// WriteStdin is echoed and read; CloseStdin is end of input.
func TestTerminal(t *testing.T) {
	needRoot(t)
	root := rootDir(t)
	m := newManager(t)
	ctx := context.Background()
	// The container has its own devpts, as containerd's specs give it: the
	// terminal is /dev/pts/0 of that instance, so it has a name inside.
	spec := testSpec("/bin/prog", "sleep", "100")
	spec.Mounts = append(spec.Mounts, specs.Mount{Destination: "/dev/pts", Type: "devpts", Source: "devpts",
		Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}})
	if err := m.Create(ctx, "c", mustJSON(t, spec), Rootfs{Directory: root}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Start(ctx, "c", "", nil, Stdio{}); err != nil {
		t.Fatal(err)
	}
	proc := &specs.Process{Args: []string{"/bin/prog", "tty"}, Cwd: "/", Terminal: true, User: specs.User{UID: 1000, GID: 1000}}
	if _, err := m.Start(ctx, "c", "t", mustJSON(t, proc), Stdio{Stdin: true, Stdout: true, TerminalWidth: 80, TerminalHeight: 24}); err != nil {
		t.Fatalf("Start with a terminal: %v", err)
	}
	if _, err := m.Output("c", "t", 2); !errors.Is(err, ErrState) {
		t.Errorf("Output(stderr) of a terminal process = %v, want ErrState", err)
	}
	r, err := m.Output("c", "t", 1)
	if err != nil {
		t.Fatal(err)
	}
	tr := readTranscript(r)
	tr.expect(t, "tty 24 80 /dev/pts/0\r\n")
	if err := m.ResizePty("c", "t", 132, 43); err != nil {
		t.Fatalf("ResizePty: %v", err)
	}
	if err := m.WriteStdin("c", "t", []byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	tr.expect(t, "hello\r\n") // the terminal's echo
	tr.expect(t, "line hello 43 132\r\n")
	if err := m.CloseStdin("c", "t"); err != nil {
		t.Fatalf("CloseStdin: %v", err)
	}
	tr.expect(t, "eof\r\n")
	e, err := m.Wait(ctx, "c", "t")
	if err != nil || e.Status != 0 {
		t.Errorf("Wait = %+v, %v; want status 0", e, err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		s, done, err := tr.snapshot()
		if done {
			if err != nil {
				t.Errorf("terminal output ended with %v, want EOF", err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("terminal output %q did not end after the process exited", s)
		}
	}
	if err := m.WriteStdin("c", "t", []byte("late")); !errors.Is(err, ErrState) {
		t.Errorf("WriteStdin after CloseStdin = %v, want ErrState", err)
	}
	if err := m.CloseStdin("c", "t"); err != nil {
		t.Errorf("second CloseStdin = %v", err)
	}
}

func TestTerminalRejects(t *testing.T) {
	needRoot(t)
	root := rootDir(t)
	m := newManager(t)
	ctx := context.Background()
	if err := m.Create(ctx, "c", mustJSON(t, testSpec("/bin/prog", "sleep", "100")), Rootfs{Directory: root}); err != nil {
		t.Fatal(err)
	}
	if err := m.ResizePty("c", "", 80, 24); !errors.Is(err, ErrNotFound) {
		t.Errorf("ResizePty before start = %v, want ErrNotFound", err)
	}
	if _, err := m.Start(ctx, "c", "", nil, Stdio{}); err != nil {
		t.Fatal(err)
	}
	tty := &specs.Process{Args: []string{"/bin/prog", "tty"}, Cwd: "/", Terminal: true}
	huge := *tty
	huge.ConsoleSize = &specs.Box{Height: 24, Width: 65536}
	tests := []struct {
		name  string
		proc  *specs.Process
		stdio Stdio
	}{
		{"no stdout", tty, Stdio{Stdin: true}},
		{"stderr", tty, Stdio{Stdout: true, Stderr: true}},
		{"width", tty, Stdio{Stdout: true, TerminalWidth: 65536, TerminalHeight: 1}},
		{"height", tty, Stdio{Stdout: true, TerminalWidth: 1, TerminalHeight: 1 << 31}},
		{"console size", &huge, Stdio{Stdout: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := m.Start(ctx, "c", "x", mustJSON(t, tc.proc), tc.stdio); !errors.Is(err, ErrInvalid) {
				t.Errorf("Start = %v, want ErrInvalid", err)
			}
		})
	}
	if err := m.ResizePty("c", "", 80, 24); !errors.Is(err, ErrState) {
		t.Errorf("ResizePty of a process without a terminal = %v, want ErrState", err)
	}
	if err := m.ResizePty("c", "nope", 80, 24); !errors.Is(err, ErrNotFound) {
		t.Errorf("ResizePty of an unknown exec = %v, want ErrNotFound", err)
	}
	bad := testSpec("/bin/prog", "tty")
	bad.Process.ConsoleSize = &specs.Box{Height: 70000, Width: 80}
	if err := m.Create(ctx, "big", mustJSON(t, bad), Rootfs{Directory: root}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Create with console size 70000 rows = %v, want ErrInvalid", err)
	}
}

func TestInitialWinsize(t *testing.T) {
	tests := []struct {
		name          string
		console       *specs.Box
		stdio         Stdio
		width, height uint16
		err           error
	}{
		{name: "none"},
		{name: "spec", console: &specs.Box{Width: 80, Height: 24}, width: 80, height: 24},
		{name: "request wins", console: &specs.Box{Width: 80, Height: 24}, stdio: Stdio{TerminalWidth: 100, TerminalHeight: 50}, width: 100, height: 50},
		{name: "limit", stdio: Stdio{TerminalWidth: 65535, TerminalHeight: 65535}, width: 65535, height: 65535},
		{name: "too wide", stdio: Stdio{TerminalWidth: 65536}, err: ErrInvalid},
		{name: "spec too high", console: &specs.Box{Width: 1, Height: 1 << 20}, err: ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, h, err := initialWinsize(&specs.Process{ConsoleSize: tc.console}, tc.stdio)
			if !errors.Is(err, tc.err) {
				t.Fatalf("initialWinsize error %v, want %v", err, tc.err)
			}
			if diff := cmp.Diff([2]uint16{tc.width, tc.height}, [2]uint16{w, h}); diff != "" {
				t.Errorf("initialWinsize (-want +got)\n%s", diff)
			}
		})
	}
}

package shim

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/greatjail/cvm/launcher/engine"
)

// stoppedHandle is an engine.Handle whose guest has ended (with waitErr)
// when exited is closed.
type stoppedHandle struct {
	exited  chan struct{}
	waitErr error
}

func (h *stoppedHandle) Link(context.Context) (io.ReadWriteCloser, error) {
	return nil, errors.New("no link")
}
func (h *stoppedHandle) Wait() error             { <-h.exited; return h.waitErr }
func (h *stoppedHandle) Exited() <-chan struct{} { return h.exited }
func (h *stoppedHandle) Kill()                   {}

var _ engine.Handle = (*stoppedHandle)(nil)

// A confidential pod whose guest died during attestation says so, with
// how the engine ended and the console's tail (escaped): not a bare
// "ttrpc: closed". A guest still running gets the error unchanged.
func TestIfStopped(t *testing.T) {
	v := &vmSandbox{pod: "p1"}
	console := filepath.Join(t.TempDir(), "console.log")
	os.WriteFile(console, []byte("[    1.0] booting\n[    2.0] Kernel panic - not syncing: Attempted to kill init!\n[    2.1] \x1b[31mend\n"), 0o600)
	closed := errors.New("ttrpc: closed")

	h := &stoppedHandle{exited: make(chan struct{}), waitErr: errors.New("qemu: exit status 1")}
	close(h.exited)
	err := v.ifStopped(closed, h, time.Minute, "attestation", console)
	if !errors.Is(err, closed) {
		t.Errorf("error %v does not wrap the cause", err)
	}
	for _, want := range []string{`pod "p1": the microVM stopped during attestation (qemu: exit status 1)`,
		"Kernel panic - not syncing", `\x1b[31mend`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "\x1b") {
		t.Errorf("error %q carries the guest's raw escape sequence", err)
	}

	running := &stoppedHandle{exited: make(chan struct{})}
	if err := v.ifStopped(closed, running, 10*time.Millisecond, "attestation", console); err != closed {
		t.Errorf("ifStopped with a running guest = %v, want the error unchanged", err)
	}
}

package agent

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/greatjail/cvm/kbs/client"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestBrokerCode(t *testing.T) {
	tests := []struct {
		err  error
		want codes.Code
	}{
		{fmt.Errorf("%w (at attest)", client.ErrDenied), codes.PermissionDenied},
		{fmt.Errorf("kbs client: resource: %w", status.Error(codes.PermissionDenied, "denied")), codes.PermissionDenied},
		{fmt.Errorf("kbs client: challenge: broker unreachable: %w", status.Error(codes.Unavailable, "eof")), codes.Unavailable},
		{status.Error(codes.DeadlineExceeded, "slow"), codes.Unavailable},
		{fmt.Errorf("kbs client: evidence from sim: %w", errors.New("psp refused")), codes.Internal},
		{status.Error(codes.InvalidArgument, "bad evidence"), codes.Internal},
	}
	for _, tt := range tests {
		if got := brokerCode(tt.err); got != tt.want {
			t.Errorf("brokerCode(%v) = %s, want %s", tt.err, got, tt.want)
		}
	}
	// A denial tells the guest's host nothing more than that.
	if got := brokerMessage(fmt.Errorf("%w (at attest): measurement 1234", client.ErrDenied)); got != "the key broker denied this guest" {
		t.Errorf("denial message = %q", got)
	}
}

// failingWriter fails every write.
type failingWriter struct{ closed bool }

func (f *failingWriter) Write([]byte) (int, error) { return 0, errors.New("stream reset") }
func (f *failingWriter) Close() error              { f.closed = true; return nil }

type bufCloser struct{ bytes.Buffer }

func (*bufCloser) Close() error { return nil }

func TestLogSink(t *testing.T) {
	var console bytes.Buffer
	l := &logSink{console: &console}
	l.Logf("early %d", 1)
	stream := &bufCloser{}
	l.attach(stream)
	l.Logf("late\n")
	if got, want := stream.String(), "early 1\nlate\n"; got != want {
		t.Errorf("log stream got %q, want %q (early lines replayed)", got, want)
	}
	// A failing stream is dropped; the console keeps everything.
	bad := &failingWriter{}
	l.attach(bad)
	l.Logf("after")
	l.Logf("again")
	if !bad.closed {
		t.Error("the failing log stream was not closed")
	}
	if got, want := console.String(), "early 1\nlate\nafter\nagain\n"; got != want {
		t.Errorf("console got %q, want %q", got, want)
	}
}

func TestNewRequiresEverything(t *testing.T) {
	_, err := New(Options{})
	if err == nil || !strings.Contains(err.Error(), "required") {
		t.Errorf("New(Options{}) = %v, want an error naming what is required", err)
	}
}

package link

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// pair returns a guest and a host session joined by conn ends a and b.
func pair(t *testing.T, a, b io.ReadWriteCloser) (guest, host *Session) {
	t.Helper()
	g, err := Guest(a)
	if err != nil {
		t.Fatal(err)
	}
	h, err := Host(b)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close(); h.Close() })
	return g, h
}

func socketpair(t *testing.T) (io.ReadWriteCloser, io.ReadWriteCloser) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Non-blocking, so the runtime poller owns them and Close interrupts
	// a pending read (as it does for the serial port, a character device).
	for _, fd := range fds {
		if err := syscall.SetNonblock(fd, true); err != nil {
			t.Fatal(err)
		}
	}
	return os.NewFile(uintptr(fds[0]), "a"), os.NewFile(uintptr(fds[1]), "b")
}

// echo opens a stream of kind on from, accepts it on to, and checks bytes
// go both ways.
func echo(t *testing.T, from, to *Session, kind string) {
	t.Helper()
	type result struct {
		kind string
		got  string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		k, c, err := to.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		buf := make([]byte, 5)
		if _, err := io.ReadFull(c, buf); err != nil {
			done <- result{err: err}
			return
		}
		_, err = c.Write(bytes.ToUpper(buf))
		done <- result{kind: k, got: string(buf), err: err}
	}()
	c, err := from.Open(kind)
	if err != nil {
		t.Fatalf("Open(%s): %v", kind, err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	reply := make([]byte, 5)
	if _, err := io.ReadFull(c, reply); err != nil {
		t.Fatalf("reading the reply on a %s stream: %v", kind, err)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("accepting a %s stream: %v", kind, r.err)
	}
	if got, want := []string{r.kind, r.got, string(reply)}, []string{kind, "hello", "HELLO"}; !cmp.Equal(got, want) {
		t.Errorf("%s stream: (kind, sent, reply) = %q, want %q", kind, got, want)
	}
}

func TestStreamsBothWays(t *testing.T) {
	transports := map[string]func(t *testing.T) (io.ReadWriteCloser, io.ReadWriteCloser){
		"pipe": func(*testing.T) (io.ReadWriteCloser, io.ReadWriteCloser) {
			a, b := net.Pipe()
			return a, b
		},
		"socketpair": socketpair,
		"socketpair-retryeof": func(t *testing.T) (io.ReadWriteCloser, io.ReadWriteCloser) {
			a, b := socketpair(t)
			return RetryEOF(a, time.Millisecond), b
		},
	}
	for name, mk := range transports {
		t.Run(name, func(t *testing.T) {
			a, b := mk(t)
			g, h := pair(t, a, b)
			echo(t, h, g, KindTTRPC)
			echo(t, h, g, KindTTRPC) // the host may open more than one
			echo(t, g, h, KindKBS)
			echo(t, g, h, KindPSP)
			echo(t, g, h, KindLog)
		})
	}
}

// openRaw writes an arbitrary header on a fresh yamux stream.
func openRaw(t *testing.T, s *Session, header string) net.Conn {
	t.Helper()
	c, err := s.mux.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, header); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRefusedHeaders(t *testing.T) {
	a, b := net.Pipe()
	g, h := pair(t, a, b)
	refused := []struct {
		from   *Session
		header string
	}{
		{h, "bogus\n"},
		{h, "kbs\n"},   // a guest-bound kbs stream makes no sense
		{h, "TTRPC\n"}, // case matters
		{h, "\n"},
		{h, "averyveryverylongheader\n"},
		{g, "ttrpc\n"}, // the host serves no ttrpc
		{g, "x y\n"},
	}
	for _, r := range refused {
		c := openRaw(t, r.from, r.header)
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := c.Read(make([]byte, 1))
		if !errors.Is(err, io.EOF) {
			t.Errorf("header %q: read after it = %v, want io.EOF (the peer closed the stream)", r.header, err)
		}
		c.Close()
	}
	// The good stream after the refused ones still arrives, and is the
	// only one Accept returned.
	echo(t, h, g, KindTTRPC)
	echo(t, g, h, KindLog)
}

func TestOpenUnknownKind(t *testing.T) {
	a, b := net.Pipe()
	_, h := pair(t, a, b)
	if _, err := h.Open("bogus"); !errors.Is(err, ErrHeader) {
		t.Errorf("Open(bogus) = %v, want ErrHeader", err)
	}
}

func TestAcceptAfterClose(t *testing.T) {
	a, b := net.Pipe()
	g, h := pair(t, a, b)
	h.Close()
	select {
	case <-g.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the guest session did not end after the host closed")
	}
	if _, _, err := g.Accept(); !errors.Is(err, ErrClosed) {
		t.Errorf("Accept after close = %v, want ErrClosed", err)
	}
	if _, err := g.Open(KindLog); !errors.Is(err, ErrClosed) {
		t.Errorf("Open after close = %v, want ErrClosed", err)
	}
}

func TestListener(t *testing.T) {
	a, b := net.Pipe()
	g, h := pair(t, a, b)
	l := g.Listener(KindTTRPC)
	go func() {
		c, err := h.Open(KindTTRPC)
		if err == nil {
			c.Write([]byte("x"))
		}
	}()
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	if _, err := io.ReadFull(c, buf); err != nil || buf[0] != 'x' {
		t.Errorf("read = %q, %v; want x", buf, err)
	}
	l.Close()
	if _, err := l.Accept(); !errors.Is(err, ErrClosed) {
		t.Errorf("Accept after Close = %v, want ErrClosed", err)
	}
	// The stream accepted before and the session outlive the listener.
	if _, err := c.Write([]byte("y")); err != nil {
		t.Errorf("writing on an accepted stream after the listener closed: %v", err)
	}
	select {
	case <-g.Done():
		t.Error("closing the listener closed the session")
	default:
	}
}

func TestReadHeader(t *testing.T) {
	tests := []struct {
		in, want string
		rest     string
		ok       bool
	}{
		{"ttrpc\nabc", "ttrpc", "abc", true},
		{"log\n", "log", "", true},
		{"abcdefghijklmno\n", "abcdefghijklmno", "", true}, // 16 bytes in all
		{"abcdefghijklmnop\n", "", "", false},
		{"\n", "", "", false},
		{"kbs", "", "", false},
		{"", "", "", false},
		{"k\x00s\n", "", "", false},
	}
	for _, tt := range tests {
		r := strings.NewReader(tt.in)
		got, err := ReadHeader(r)
		if (err == nil) != tt.ok {
			t.Errorf("ReadHeader(%q) error = %v, want ok=%v", tt.in, err, tt.ok)
			continue
		}
		if err != nil {
			if !errors.Is(err, ErrHeader) {
				t.Errorf("ReadHeader(%q) = %v, want ErrHeader", tt.in, err)
			}
			continue
		}
		rest, _ := io.ReadAll(r)
		if got != tt.want || string(rest) != tt.rest {
			t.Errorf("ReadHeader(%q) = %q leaving %q, want %q leaving %q", tt.in, got, rest, tt.want, tt.rest)
		}
	}
}

func TestFindSerialPort(t *testing.T) {
	dir := t.TempDir()
	write := func(dev, name string) {
		if err := os.MkdirAll(filepath.Join(dir, dev), 0o755); err != nil {
			t.Fatal(err)
		}
		if name != "" {
			if err := os.WriteFile(filepath.Join(dir, dev, "name"), []byte(name), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := FindSerialPort(filepath.Join(dir, "missing")); !errors.Is(err, ErrNoSerialPort) {
		t.Errorf("missing dir: %v, want ErrNoSerialPort", err)
	}
	write("vport0p0", "")
	write("vport1p1", "org.qemu.guest_agent.0\n")
	if _, err := FindSerialPort(dir); !errors.Is(err, ErrNoSerialPort) {
		t.Errorf("no cvm.link port: %v, want ErrNoSerialPort", err)
	}
	write("vport2p1", "cvm.link\n")
	got, err := FindSerialPort(dir)
	if err != nil || got != "vport2p1" {
		t.Errorf("FindSerialPort = %q, %v; want vport2p1", got, err)
	}
}

// eofThenData reads EOF a few times, then data: a host that connects late.
type eofThenData struct {
	eofs int
	data []byte
}

func (e *eofThenData) Read(p []byte) (int, error) {
	if e.eofs > 0 {
		e.eofs--
		return 0, io.EOF
	}
	if len(e.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p, e.data)
	e.data = e.data[n:]
	return n, nil
}
func (e *eofThenData) Write(p []byte) (int, error) { return len(p), nil }
func (e *eofThenData) Close() error                { return nil }

func TestRetryEOF(t *testing.T) {
	r := RetryEOF(&eofThenData{eofs: 3, data: []byte("hi")}, time.Microsecond)
	buf := make([]byte, 2)
	if _, err := io.ReadFull(r, buf); err != nil || string(buf) != "hi" {
		t.Fatalf("read = %q, %v; want hi", buf, err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := r.Read(buf)
		done <- err
	}()
	r.Close()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrClosed) {
			t.Errorf("read after close = %v, want ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a read waiting for the host did not return after Close")
	}
}

// A peer that opens streams without ever sending a header (or faster than
// this side accepts them) gets at most MaxPending of them held; the rest
// are closed at once, so it cannot make this side hold unbounded
// goroutines and buffers.
func TestPendingStreamsBounded(t *testing.T) {
	a, b := socketpair(t)
	g, h := pair(t, a, b)
	_ = g // the guest side never calls Accept
	before := runtime.NumGoroutine()
	const opened = 10 * MaxPending
	var streams []net.Conn
	for range opened {
		c, err := h.mux.OpenStream() // no header: each waits in admit
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("x")) // make the guest see the stream
		streams = append(streams, c)
	}
	// Streams beyond the bound are closed by the guest: reading them ends.
	closed := make(chan bool, opened)
	for _, c := range streams {
		go func() {
			c.SetReadDeadline(time.Now().Add(HeaderTimeout / 2))
			_, err := c.Read(make([]byte, 1))
			// EOF (closed by the guest) or a reset (refused by the
			// backlog); a timeout means the guest still holds it.
			var ne net.Error
			closed <- err != nil && !(errors.As(err, &ne) && ne.Timeout())
		}()
	}
	n := 0
	for range opened {
		if <-closed {
			n++
		}
	}
	if n < opened-MaxPending {
		t.Errorf("%d of %d headerless streams were closed, want at least %d (MaxPending %d)", n, opened, opened-MaxPending, MaxPending)
	}
	if grew := runtime.NumGoroutine() - before; grew > MaxPending+16 {
		t.Errorf("%d goroutines more after %d headerless streams, want at most about MaxPending (%d)", grew, opened, MaxPending)
	}
}

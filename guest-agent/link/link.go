// Package link is the one byte stream between the host and a microVM's guest
// agent, multiplexed by yamux into streams that each begin with a header
// line naming what they carry (docs/protocol-agent.md):
//
//	ttrpc  host → guest: the Agent ttrpc service
//	kbs    guest → host: bytes relayed to the key broker (TLS end to end)
//	psp    guest → host: one simulated-TEE report request (PSPRequest/PSPResponse)
//	log    guest → host: the agent's own log lines
//
// The guest is the yamux server, the host the yamux client; either side may
// open streams. Each side accepts only the kinds addressed to it: the guest
// accepts ttrpc, the host accepts kbs, psp and log. A stream with any other
// header is closed without being returned by Accept.
//
// The package also finds the guest's end of the byte stream: the
// virtio-serial port named cvm.link (SerialPort) or vsock port 1024
// (ListenVsock).
package link

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
)

// The stream kinds: the header line an opener writes is the kind + "\n".
const (
	KindTTRPC = "ttrpc"
	KindKBS   = "kbs"
	KindPSP   = "psp"
	KindLog   = "log"
)

// MaxHeader bounds a header line, newline included.
const MaxHeader = 16

// HeaderTimeout bounds how long an accepted stream may take to send its
// header; a stream that has not sent one by then is closed.
const HeaderTimeout = 10 * time.Second

// MaxPending bounds the streams a peer may have open that this side has not
// yet read a header from or handed to Accept; more are closed at once.
const MaxPending = 32

// ErrClosed is returned by Accept and Open once the session has ended.
var ErrClosed = errors.New("link: session closed")

// ErrHeader means a stream did not begin with a valid header line.
var ErrHeader = errors.New("link: bad stream header")

// Role says which end of the link a Session is.
type Role int

const (
	// RoleGuest is the agent inside the microVM (the yamux server).
	RoleGuest Role = iota
	// RoleHost is the launcher or shim (the yamux client).
	RoleHost
)

func (r Role) String() string {
	if r == RoleGuest {
		return "guest"
	}
	return "host"
}

// accepts reports whether a session of role r serves streams of kind.
func (r Role) accepts(kind string) bool {
	if r == RoleGuest {
		return kind == KindTTRPC
	}
	return kind == KindKBS || kind == KindPSP || kind == KindLog
}

// Known reports whether kind is one of the stream kinds of this protocol.
func Known(kind string) bool {
	switch kind {
	case KindTTRPC, KindKBS, KindPSP, KindLog:
		return true
	}
	return false
}

// Session is one end of the link.
type Session struct {
	role Role
	mux  *yamux.Session

	accepted chan accepted // streams whose header has been read
	done     chan struct{} // closed when the accept loop exits

	closeOnce sync.Once
}

type accepted struct {
	kind string
	conn net.Conn
}

func config() *yamux.Config {
	c := yamux.DefaultConfig()
	c.EnableKeepAlive = false
	c.LogOutput = io.Discard
	// The host opens its first stream while the guest may still be booting
	// (tens of seconds under TCG on a loaded machine); yamux's default 75 s
	// wait for the SYN's ACK would then tear down the whole link. Callers
	// bound every exchange with their own deadlines instead.
	c.StreamOpenTimeout = 0
	// The peer is not trusted (the host by the guest, the guest by the
	// host): bound what its streams can hold. Each stream buffers up to
	// the window (256 KiB); at most AcceptBacklog streams wait to be
	// accepted and MaxPending wait for their header; a stream we closed
	// is dropped after StreamCloseTimeout instead of yamux's 5 minutes.
	c.AcceptBacklog = MaxPending
	c.StreamCloseTimeout = 5 * time.Second
	return c
}

// Guest starts the guest's end of the link on conn (the yamux server).
func Guest(conn io.ReadWriteCloser) (*Session, error) {
	m, err := yamux.Server(conn, config())
	if err != nil {
		return nil, fmt.Errorf("link: guest session: %w", err)
	}
	return newSession(RoleGuest, m), nil
}

// Host starts the host's end of the link on conn (the yamux client).
func Host(conn io.ReadWriteCloser) (*Session, error) {
	m, err := yamux.Client(conn, config())
	if err != nil {
		return nil, fmt.Errorf("link: host session: %w", err)
	}
	return newSession(RoleHost, m), nil
}

func newSession(role Role, m *yamux.Session) *Session {
	s := &Session{role: role, mux: m, accepted: make(chan accepted), done: make(chan struct{})}
	go s.acceptLoop()
	return s
}

// Role returns which end of the link s is.
func (s *Session) Role() Role { return s.role }

// acceptLoop accepts yamux streams and reads each one's header in its own
// goroutine, so a peer that opens a stream and sends nothing cannot hold up
// other streams. It exits when the session ends; header goroutines exit
// after HeaderTimeout at the latest.
func (s *Session) acceptLoop() {
	defer close(s.done)
	pending := make(chan struct{}, MaxPending)
	for {
		c, err := s.mux.AcceptStream()
		if err != nil {
			return
		}
		select {
		case pending <- struct{}{}:
		default:
			// The peer has MaxPending streams neither headed nor accepted
			// yet: refuse more rather than buffer them.
			c.Close()
			continue
		}
		go func() {
			defer func() { <-pending }()
			s.admit(c)
		}()
	}
}

func (s *Session) admit(c *yamux.Stream) {
	_ = c.SetReadDeadline(time.Now().Add(HeaderTimeout))
	kind, err := ReadHeader(c)
	if err != nil || !s.role.accepts(kind) {
		c.Close()
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	select {
	case s.accepted <- accepted{kind, c}:
	case <-s.done:
		c.Close()
	}
}

// Accept returns the next stream the peer opened with a kind this side
// serves, and that kind. Streams with an unknown header, or a kind meant
// for the other side, are closed and never returned. After the session
// ends Accept returns ErrClosed.
func (s *Session) Accept() (string, net.Conn, error) {
	select {
	case a := <-s.accepted:
		return a.kind, a.conn, nil
	case <-s.done:
		return "", nil, ErrClosed
	}
}

// Open opens a stream of kind and writes its header.
func (s *Session) Open(kind string) (net.Conn, error) {
	if !Known(kind) {
		return nil, fmt.Errorf("%w: unknown kind %q", ErrHeader, kind)
	}
	c, err := s.mux.OpenStream()
	if err != nil {
		if s.mux.IsClosed() {
			return nil, fmt.Errorf("link: open %s stream: %w", kind, ErrClosed)
		}
		return nil, fmt.Errorf("link: open %s stream: %w", kind, err)
	}
	if _, err := io.WriteString(c, kind+"\n"); err != nil {
		c.Close()
		return nil, fmt.Errorf("link: open %s stream: header: %w", kind, err)
	}
	return c, nil
}

// Close ends the session and every stream on it.
func (s *Session) Close() error {
	var err error
	s.closeOnce.Do(func() { err = s.mux.Close() })
	return err
}

// Done is closed when the session has ended (closed here, by the peer, or
// because the byte stream failed).
func (s *Session) Done() <-chan struct{} { return s.mux.CloseChan() }

// ReadHeader reads one header line ("kind\n", at most MaxHeader bytes) from
// r, one byte at a time so nothing after the newline is consumed. It
// returns the kind without checking that it is known.
func ReadHeader(r io.Reader) (string, error) {
	var buf [MaxHeader]byte
	for i := 0; i < len(buf); i++ {
		if _, err := io.ReadFull(r, buf[i:i+1]); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return "", fmt.Errorf("%w: %w", ErrHeader, err)
		}
		b := buf[i]
		if b == '\n' {
			if i == 0 {
				return "", fmt.Errorf("%w: empty", ErrHeader)
			}
			return string(buf[:i]), nil
		}
		if b < 'a' || b > 'z' {
			return "", fmt.Errorf("%w: byte %#x is not a lowercase letter", ErrHeader, b)
		}
	}
	return "", fmt.Errorf("%w: longer than %d bytes", ErrHeader, MaxHeader)
}

// Listener adapts the session to a net.Listener of streams of one kind
// (for example a ttrpc server on the guest's ttrpc streams). Streams of
// other kinds accepted meanwhile are closed: use it only on a side that
// serves that one kind. Closing the listener stops accepting; the session
// and the streams already accepted stay open.
func (s *Session) Listener(kind string) net.Listener {
	return &listener{s: s, kind: kind, closed: make(chan struct{})}
}

type listener struct {
	s    *Session
	kind string

	closeOnce sync.Once
	closed    chan struct{}
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		select {
		case a := <-l.s.accepted:
			if a.kind == l.kind {
				return a.conn, nil
			}
			a.conn.Close()
		case <-l.s.done:
			return nil, ErrClosed
		case <-l.closed:
			return nil, ErrClosed
		}
	}
}

func (l *listener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return nil
}

func (l *listener) Addr() net.Addr { return l.s.mux.Addr() }

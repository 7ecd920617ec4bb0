package launcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/greatjail/cvm/attestation/sim"
	"github.com/greatjail/cvm/guest-agent/link"
)

// The key broker relay's dial retries (ARCH.md): 5 tries, the pause
// doubling from 200 ms up to 2 s.
const (
	kbsDialTries    = 5
	kbsDialFirst    = 200 * time.Millisecond
	kbsDialMaxPause = 2 * time.Second
	kbsDialTimeout  = 5 * time.Second
	// MaxAgentLog bounds what a guest's log streams may write on the host.
	MaxAgentLog = 8 << 20
	// maxGuestStreams bounds the guest's concurrent streams (kbs, psp, log).
	maxGuestStreams = 16
)

// HostOptions configure the host side of a link (ServeLink).
type HostOptions struct {
	// KBS is the key broker, HOST:PORT as the host reaches it. The guest's
	// kbs streams are relayed there (bounded dial retries). "" closes every
	// kbs stream at once (a plain pod has no broker).
	KBS string
	// PSP signs the guest's psp requests (SimPSP, tee sim only); nil
	// refuses every psp request.
	PSP func(link.PSPRequest) (report, certTable []byte, err error)
	// AgentLog receives the agent's log stream and the host's own notes
	// about the link; nil discards them.
	AgentLog io.Writer
}

// LinkHost is the host side of one link being served (ServeLink).
type LinkHost struct {
	h    *host
	done chan struct{} // closed when serve returned
}

// ServeLink serves the streams the guest opens on s, each on its own
// goroutine, until the session ends: kbs (relayed to o.KBS with bounded
// retries), psp (o.PSP) and log (o.AgentLog). At most 16 guest streams
// are served at once. ctx ends the relays. `cvm launch` and the shim's
// confidential pods both use it.
func ServeLink(ctx context.Context, s *link.Session, o HostOptions) *LinkHost {
	l := &LinkHost{h: &host{kbsAddr: o.KBS, psp: o.PSP, agentLog: o.AgentLog}, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		l.h.serve(ctx, s)
	}()
	return l
}

// Wait waits until the session has ended and every stream goroutine has
// returned. Close the session (or end ctx and the session) first.
func (l *LinkHost) Wait() {
	<-l.done
	l.h.wait()
}

// KBSState returns the last broker dial failure (nil if the last dial
// worked or there was none) and whether any dial reached the broker: what
// a launch's error message says when the guest found the broker
// unavailable.
func (l *LinkHost) KBSState() (lastErr error, reached bool) { return l.h.kbsState() }

// SimPSP returns the PSP of a simulated TEE for HostOptions.PSP: it signs,
// with authority a, reports whose MEASUREMENT is measurement (the launch
// plan's digest, PlanDigest).
func SimPSP(a *sim.Authority, measurement [48]byte) (func(link.PSPRequest) (report, certTable []byte, err error), error) {
	return simPSP(a, measurement)
}

// host serves the streams the guest opens on the link: kbs (relayed to the
// broker), psp (the simulated PSP, tee sim only) and log (the agent's log).
type host struct {
	kbsAddr string
	// dial connects to the broker; nil means a net.Dialer.
	dial func(ctx context.Context, addr string) (net.Conn, error)
	// psp signs reports; nil refuses every psp request.
	psp func(link.PSPRequest) (report, certTable []byte, err error)
	// agentLog receives the agent's log lines.
	agentLog io.Writer
	// sleep waits between dial tries; nil means a timer (tests shorten it).
	sleep func(ctx context.Context, d time.Duration) error

	mu sync.Mutex // guards kbsErr and kbsReached
	// kbsErr is the last relay dial failure (nil after a success), and
	// kbsReached whether any dial succeeded, for the launch's error message.
	kbsErr     error
	kbsReached bool

	logMu sync.Mutex // serializes writes to agentLog; guards logged
	// logged counts the guest's log bytes written, capped at
	// MaxAgentLog so a guest cannot fill the host's disk (or a tmpfs).
	logged int64
	logCut bool           // the truncation note was written
	wg     sync.WaitGroup // the stream goroutines of serve
}

// simPSP returns the psp function of a simulated TEE: reports carry
// measurement, the launch plan's digest.
func simPSP(a *sim.Authority, measurement [48]byte) (func(link.PSPRequest) ([]byte, []byte, error), error) {
	certs, err := a.CertTable()
	if err != nil {
		return nil, fmt.Errorf("simulated PSP: certificate table: %w", err)
	}
	return func(req link.PSPRequest) ([]byte, []byte, error) {
		r, err := a.Report(sim.Request{Measurement: measurement, ReportData: req.ReportData, VMPL: req.VMPL})
		if err != nil {
			return nil, nil, err
		}
		return r, certs, nil
	}, nil
}

// serve accepts the guest's streams until the session ends, serving each
// on its own goroutine. It returns when the session has ended; call wait
// to let the stream goroutines finish.
//
// The guest is not trusted by the host either: it gets at most
// maxGuestStreams streams at a time, so it cannot make the host open
// unbounded connections to the broker.
func (h *host) serve(ctx context.Context, s *link.Session) {
	slots := make(chan struct{}, maxGuestStreams)
	for {
		kind, c, err := s.Accept()
		if err != nil {
			return
		}
		select {
		case slots <- struct{}{}:
		default:
			h.logf("guest opened more than %d streams at once: refusing a %s stream", maxGuestStreams, kind)
			c.Close()
			continue
		}
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			defer func() { <-slots }()
			defer c.Close()
			switch kind {
			case link.KindKBS:
				h.relay(ctx, c)
			case link.KindPSP:
				h.answerPSP(c)
			case link.KindLog:
				h.copyLog(c)
			}
		}()
	}
}

// wait waits for every stream goroutine serve started.
func (h *host) wait() { h.wg.Wait() }

// kbsState returns the last relay dial failure (nil if the last dial
// worked or there was none) and whether any dial reached the broker.
func (h *host) kbsState() (lastErr error, reached bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.kbsErr, h.kbsReached
}

// relay dials the broker (bounded retries) and copies bytes both ways until
// either side closes. On failure it closes the guest's stream, which the
// agent sees as the broker being unavailable.
func (h *host) relay(ctx context.Context, guest net.Conn) {
	if h.kbsAddr == "" {
		h.logf("the guest opened a kbs stream, and this VM has no key broker: closing it")
		return
	}
	b, err := h.dialKBS(ctx)
	h.mu.Lock()
	h.kbsErr = err
	h.kbsReached = h.kbsReached || err == nil
	h.mu.Unlock()
	if err != nil {
		return
	}
	defer b.Close()
	done := make(chan struct{}, 2)
	go func() {
		io.Copy(b, guest)
		closeWrite(b)
		done <- struct{}{}
	}()
	go func() {
		io.Copy(guest, b)
		closeWrite(guest)
		done <- struct{}{}
	}()
	// When one direction ends, the other usually follows (TLS close); if
	// the launch ends first, ctx closes both.
	select {
	case <-done:
		select {
		case <-done:
		case <-ctx.Done():
		case <-time.After(30 * time.Second):
		}
	case <-ctx.Done():
	}
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}

// dialKBS dials the broker, kbsDialTries times at most.
func (h *host) dialKBS(ctx context.Context) (net.Conn, error) {
	dial := h.dial
	if dial == nil {
		dial = func(ctx context.Context, addr string) (net.Conn, error) {
			d := net.Dialer{Timeout: kbsDialTimeout}
			return d.DialContext(ctx, "tcp", addr)
		}
	}
	sleep := h.sleep
	if sleep == nil {
		sleep = sleepCtx
	}
	pause := kbsDialFirst
	var err error
	for try := 1; try <= kbsDialTries; try++ {
		var c net.Conn
		if c, err = dial(ctx, h.kbsAddr); err == nil {
			return c, nil
		}
		if try == kbsDialTries {
			break
		}
		if serr := sleep(ctx, pause); serr != nil {
			return nil, fmt.Errorf("dial the key broker %s: %w", h.kbsAddr, serr)
		}
		pause = min(2*pause, kbsDialMaxPause)
	}
	return nil, fmt.Errorf("no answer after %d tries: %w", kbsDialTries, err)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// answerPSP serves one psp stream.
func (h *host) answerPSP(c net.Conn) {
	c.SetDeadline(time.Now().Add(30 * time.Second))
	sign := h.psp
	if sign == nil {
		sign = func(link.PSPRequest) ([]byte, []byte, error) {
			return nil, nil, errors.New("this launch has no simulated PSP (the measured tee is not sim)")
		}
	}
	if err := link.AnswerPSP(c, sign); err != nil {
		h.logf("launcher: psp request: %v", err)
	}
}

// copyLog copies the agent's log stream into agentLog.
func (h *host) copyLog(c net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 && h.agentLog != nil {
			h.logMu.Lock()
			// Past the cap: keep reading (the guest must not block), keep
			// nothing, and say so once.
			keep := min(int64(n), MaxAgentLog-h.logged)
			h.agentLog.Write(buf[:keep])
			h.logged += keep
			if keep < int64(n) && !h.logCut {
				fmt.Fprintf(h.agentLog, "\n[the guest's log reached %d bytes: the rest is discarded]\n", MaxAgentLog)
				h.logCut = true
			}
			h.logMu.Unlock()
		}
		if err != nil {
			return
		}
	}
}

// logf writes a launcher line into the agent log.
func (h *host) logf(format string, a ...any) {
	if h.agentLog == nil {
		return
	}
	h.logMu.Lock()
	defer h.logMu.Unlock()
	fmt.Fprintf(h.agentLog, format+"\n", a...)
}

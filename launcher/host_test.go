package launcher

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/greatjail/cvm/guest-agent/link"
)

// linkPair returns a connected host and guest session.
func linkPair(t *testing.T) (hostSess, guestSess *link.Session) {
	t.Helper()
	a, b := net.Pipe()
	var g *link.Session
	var gerr error
	done := make(chan struct{})
	go func() { g, gerr = link.Guest(b); close(done) }()
	h, err := link.Host(a)
	if err != nil {
		t.Fatal(err)
	}
	<-done
	if gerr != nil {
		t.Fatal(gerr)
	}
	t.Cleanup(func() { h.Close(); g.Close() })
	return h, g
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestHostRelay(t *testing.T) {
	broker, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Close()
	go func() {
		c, err := broker.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(io.LimitReader(c, 5))
		c.Write(append([]byte("echo:"), b...))
	}()
	hs, gs := linkPair(t)
	h := &host{kbsAddr: broker.Addr().String()}
	go h.serve(context.Background(), hs)
	c, err := gs.Open(link.KindKBS)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("hello"))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff("echo:hello", string(got)); diff != "" {
		t.Errorf("relayed (-want +got):\n%s", diff)
	}
}

func TestHostRelayRetries(t *testing.T) {
	var tries int
	var pauses []time.Duration
	h := &host{
		kbsAddr: "127.0.0.1:1",
		dial: func(context.Context, string) (net.Conn, error) {
			tries++
			return nil, errors.New("connection refused")
		},
		sleep: func(_ context.Context, d time.Duration) error { pauses = append(pauses, d); return nil },
	}
	_, err := h.dialKBS(context.Background())
	if err == nil || !strings.Contains(err.Error(), "connection refused") || !strings.Contains(err.Error(), "5 tries") {
		t.Errorf("dialKBS = %v, want the last dial error after 5 tries", err)
	}
	if tries != kbsDialTries {
		t.Errorf("%d tries, want %d", tries, kbsDialTries)
	}
	want := []time.Duration{200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, 1600 * time.Millisecond}
	if diff := cmp.Diff(want, pauses); diff != "" {
		t.Errorf("pauses (-want +got):\n%s", diff)
	}
	// Through the link, a failed dial closes the guest's stream.
	hs, gs := linkPair(t)
	go h.serve(context.Background(), hs)
	c, err := gs.Open(link.KindKBS)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("read on the stream of an unreachable broker = %d, %v; want it closed", n, err)
	}
	if err, reached := h.kbsState(); err == nil || reached {
		t.Errorf("kbsState = %v, %v after failed dials; want the error, false", err, reached)
	}
}

func TestHostPSPAndLog(t *testing.T) {
	var log syncBuf
	m := [48]byte{1, 2, 3}
	var got link.PSPRequest
	h := &host{agentLog: &log, psp: func(r link.PSPRequest) ([]byte, []byte, error) {
		got = r
		return m[:], []byte("certs"), nil
	}}
	hs, gs := linkPair(t)
	go h.serve(context.Background(), hs)

	c, err := gs.Open(link.KindPSP)
	if err != nil {
		t.Fatal(err)
	}
	req := link.PSPRequest{ReportData: [64]byte{9}, VMPL: 1}
	report, certs, err := link.RequestPSP(c, req)
	if err != nil {
		t.Fatal(err)
	}
	if got != req || !bytes.Equal(report, m[:]) || string(certs) != "certs" {
		t.Errorf("psp: request %+v, report %x, certs %q", got, report, certs)
	}

	lc, err := gs.Open(link.KindLog)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(lc, "agent: booted\n")
	lc.Close()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(log.String(), "agent: booted") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(log.String(), "agent: booted") {
		t.Errorf("agent log = %q", log.String())
	}

	// No PSP (tee snp/tdx): refused with a message.
	h2 := &host{}
	hs2, gs2 := linkPair(t)
	go h2.serve(context.Background(), hs2)
	c2, err := gs2.Open(link.KindPSP)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := link.RequestPSP(c2, req); err == nil || !strings.Contains(err.Error(), "no simulated PSP") {
		t.Errorf("psp without a simulated TEE = %v, want a refusal", err)
	}
}

// A guest that opens more streams than the host allows gets the extra ones
// closed at once, and the host never dials the broker for them.
func TestHostCapsGuestStreams(t *testing.T) {
	var mu sync.Mutex
	dials := 0
	block := make(chan struct{})
	defer close(block)
	h := &host{
		kbsAddr: "broker.invalid:1",
		dial: func(ctx context.Context, _ string) (net.Conn, error) {
			mu.Lock()
			dials++
			mu.Unlock()
			<-block // hold every relay open
			return nil, errors.New("not reached")
		},
		agentLog: &syncBuf{},
	}
	hs, gs := linkPair(t)
	go h.serve(context.Background(), hs)
	var conns []net.Conn
	for range maxGuestStreams + 3 {
		c, err := gs.Open(link.KindKBS)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	// The extra streams are closed by the host: their reads end (EOF);
	// the held ones are still open when the shared deadline passes.
	deadline := time.Now().Add(5 * time.Second)
	results := make(chan bool, len(conns))
	for _, c := range conns {
		go func() {
			c.SetReadDeadline(deadline)
			_, err := c.Read(make([]byte, 1))
			results <- errors.Is(err, io.EOF)
		}()
	}
	closed := 0
	for range conns {
		if <-results {
			closed++
		}
	}
	if closed != 3 {
		t.Errorf("%d streams closed by the host, want 3 (cap %d)", closed, maxGuestStreams)
	}
	mu.Lock()
	defer mu.Unlock()
	if dials > maxGuestStreams {
		t.Errorf("%d broker dials for a cap of %d", dials, maxGuestStreams)
	}
	if log := h.agentLog.(*syncBuf).String(); !strings.Contains(log, "refusing a kbs stream") {
		t.Errorf("host log does not name the refusal: %q", log)
	}
}

// TestServeLink: the exported host side. With no broker, a kbs stream is
// closed at once (no dial) and noted in the agent log; the agent's log
// stream lands in AgentLog; Wait returns once the session has ended.
func TestServeLink(t *testing.T) {
	hs, gs := linkPair(t)
	var log syncBuf
	lh := ServeLink(context.Background(), hs, HostOptions{AgentLog: &log})
	k, err := gs.Open(link.KindKBS)
	if err != nil {
		t.Fatal(err)
	}
	k.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := k.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Errorf("kbs stream with no broker: read %d, %v; want it closed", n, err)
	}
	l, err := gs.Open(link.KindLog)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(l, "agent: hello\n")
	l.Close()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(log.String(), "agent: hello") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	hs.Close()
	lh.Wait()
	for _, want := range []string{"no key broker", "agent: hello"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("agent log lacks %q:\n%s", want, log.String())
		}
	}
	if err, reached := lh.KBSState(); err != nil || reached {
		t.Errorf("KBSState = %v, %v; want no dial at all", err, reached)
	}
}

// A guest that writes more log than MaxAgentLog: the host keeps
// MaxAgentLog bytes and a note, discards the rest, and keeps reading (the
// guest's writes never block on a full log).
func TestHostCapsAgentLog(t *testing.T) {
	var log syncBuf
	h := &host{agentLog: &log}
	hs, gs := linkPair(t)
	done := make(chan struct{})
	go func() { h.serve(context.Background(), hs); close(done) }()
	lc, err := gs.Open(link.KindLog)
	if err != nil {
		t.Fatal(err)
	}
	line := bytes.Repeat([]byte("x"), 1<<16)
	total := 0
	for total <= 2*MaxAgentLog {
		n, err := lc.Write(line)
		if err != nil {
			t.Fatalf("guest log write after %d bytes: %v", total, err)
		}
		total += n
	}
	lc.Close()
	hs.Close()
	<-done
	h.wait()
	got := log.String()
	note := fmt.Sprintf("[the guest's log reached %d bytes: the rest is discarded]", MaxAgentLog)
	if !strings.Contains(got, note) {
		t.Errorf("the log (%d bytes of %d written) lacks the truncation note %q", len(got), total, note)
	}
	if max := MaxAgentLog + len(note) + 2; len(got) > max {
		t.Errorf("the host kept %d log bytes of %d written, want at most %d", len(got), total, max)
	}
}

package vsock

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func dialHost(t *testing.T, path string) net.Conn {
	t.Helper()
	nc, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	return nc
}

func readN(t *testing.T, r io.Reader, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		t.Fatalf("read %d bytes: %v", n, err)
	}
	return string(b)
}

// connsLeft waits for the device to have n open connections.
func connsLeft(t *testing.T, d *Device, n int) {
	t.Helper()
	for range 500 {
		d.mu.Lock()
		got := len(d.conns)
		d.mu.Unlock()
		if got == n {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("device still has connections, want %d", n)
}

// hostConnect runs the CONNECT handshake from the host to guest port gp and
// returns the host socket, its reader and the host-side port.
func hostConnect(t *testing.T, drv *driver, path string, gp uint32) (net.Conn, *bufio.Reader, uint32) {
	t.Helper()
	nc := dialHost(t, path)
	if _, err := fmt.Fprintf(nc, "CONNECT %d\n", gp); err != nil {
		t.Fatal(err)
	}
	req := drv.recv()
	want := header{SrcCID: HostCID, DstCID: 3, SrcPort: req.h.SrcPort, DstPort: gp, Type: typeStream, Op: opRequest, BufAlloc: bufAlloc}
	if diff := cmp.Diff(want, req.h); diff != "" {
		t.Fatalf("REQUEST header (-want +got):\n%s", diff)
	}
	if req.h.SrcPort < firstLocalPort {
		t.Errorf("host port %d below %d", req.h.SrcPort, firstLocalPort)
	}
	drv.send(guestHdr(opResponse, gp, req.h.SrcPort), "")
	br := bufio.NewReader(nc)
	line, err := br.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("OK %d\n", req.h.SrcPort); line != want {
		t.Fatalf("handshake reply %q, want %q", line, want)
	}
	return nc, br, req.h.SrcPort
}

func TestHostInitiated(t *testing.T) {
	d, path := newTestDevice(t)
	drv := newDriver(t, d)
	nc, br, hp := hostConnect(t, drv, path, 1234)

	if _, err := nc.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	got := drv.recv()
	want := packet{header{SrcCID: HostCID, DstCID: 3, SrcPort: hp, DstPort: 1234, Len: 4, Type: typeStream, Op: opRW, BufAlloc: bufAlloc}, "ping"}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(packet{})); diff != "" {
		t.Errorf("host to guest (-want +got):\n%s", diff)
	}

	drv.send(guestHdr(opRW, 1234, hp), "pong")
	if s := readN(t, br, 4); s != "pong" {
		t.Errorf("host read %q, want pong", s)
	}
	// Once the host socket took "pong", the guest learns its credit back.
	cu := drv.recv()
	if cu.h.Op != opCreditUpdate || cu.h.FwdCnt != 4 || cu.h.BufAlloc != bufAlloc {
		t.Errorf("after forwarding 4 bytes got %+v, want CREDIT_UPDATE fwd_cnt 4", cu.h)
	}

	_ = nc.Close()
	sd := drv.recv()
	if sd.h.Op != opShutdown || sd.h.Flags != shutdownRcv|shutdownSend || sd.h.DstPort != 1234 {
		t.Errorf("after host close got %+v, want SHUTDOWN flags 3", sd.h)
	}
	drv.send(guestHdr(opRST, 1234, hp), "")
	connsLeft(t, d, 0)
}

func TestHostCreditFlowControl(t *testing.T) {
	d, path := newTestDevice(t)
	drv := newDriver(t, d)
	nc := dialHost(t, path)
	fmt.Fprintf(nc, "CONNECT 7\n")
	req := drv.recv()
	h := guestHdr(opResponse, 7, req.h.SrcPort)
	h.BufAlloc = 4 // the guest takes 4 bytes at a time
	drv.send(h, "")
	br := bufio.NewReader(nc)
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Write([]byte("abcdefgh")); err != nil {
		t.Fatal(err)
	}
	var got strings.Builder
	for got.Len() < 4 {
		got.WriteString(drv.recv().data)
	}
	if got.String() != "abcd" {
		t.Fatalf("first window %q, want abcd", got.String())
	}
	drv.recvNone(100 * time.Millisecond) // no credit left
	h.Op, h.FwdCnt = opCreditUpdate, 4
	drv.send(h, "")
	for got.Len() < 8 {
		got.WriteString(drv.recv().data)
	}
	if got.String() != "abcdefgh" {
		t.Errorf("guest got %q, want abcdefgh", got.String())
	}
}

func TestGuestOverrunsCredit(t *testing.T) {
	d, path := newTestDevice(t)
	drv := newDriver(t, d)
	_, _, hp := hostConnect(t, drv, path, 9)
	// Under the lock, so the writer cannot drain in between: the host has
	// not yet taken bufAlloc-1 bytes, and the guest sends 2 more.
	h := guestHdr(opRW, 9, hp)
	h.Len = 2
	pkt := make([]byte, HeaderSize+2)
	h.encode(pkt)
	d.mu.Lock()
	c := d.byKey[connKey{hp, 9}]
	c.txBuf = make([]byte, bufAlloc-1)
	d.handlePacket(pkt)
	closed := c.closed
	d.processRx()
	d.mu.Unlock()
	if !closed {
		t.Error("connection open after the guest overran its credit")
	}
	if p := drv.recv(); p.h.Op != opRST || p.h.DstPort != 9 {
		t.Errorf("got %+v, want RST", p.h)
	}
}

func TestGuestInitiated(t *testing.T) {
	d, path := newTestDevice(t)
	drv := newDriver(t, d)
	ln, err := net.Listen("unix", path+"_5000")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	drv.send(guestHdr(opRequest, 777, 5000), "")
	nc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	resp := drv.recv()
	want := header{SrcCID: HostCID, DstCID: 3, SrcPort: 5000, DstPort: 777, Type: typeStream, Op: opResponse, BufAlloc: bufAlloc}
	if diff := cmp.Diff(want, resp.h); diff != "" {
		t.Fatalf("RESPONSE (-want +got):\n%s", diff)
	}

	drv.send(guestHdr(opRW, 777, 5000), "hello host")
	if s := readN(t, nc, 10); s != "hello host" {
		t.Errorf("host read %q", s)
	}
	if p := drv.recv(); p.h.Op != opCreditUpdate || p.h.FwdCnt != 10 {
		t.Errorf("got %+v, want CREDIT_UPDATE fwd_cnt 10", p.h)
	}
	if _, err := nc.Write([]byte("hello guest")); err != nil {
		t.Fatal(err)
	}
	if p := drv.recv(); p.h.Op != opRW || p.data != "hello guest" {
		t.Errorf("guest got %+v %q", p.h, p.data)
	}

	// The guest shuts down: the host sees EOF, the guest gets RST.
	sd := guestHdr(opShutdown, 777, 5000)
	sd.Flags = shutdownRcv | shutdownSend
	drv.send(sd, "")
	if _, err := nc.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("host read after guest shutdown: %v, want EOF", err)
	}
	if p := drv.recv(); p.h.Op != opRST || p.h.DstPort != 777 {
		t.Errorf("got %+v, want RST", p.h)
	}
	connsLeft(t, d, 0)
}

func TestGuestConnectNoListener(t *testing.T) {
	d, _ := newTestDevice(t)
	drv := newDriver(t, d)
	drv.send(guestHdr(opRequest, 1000, 4444), "")
	p := drv.recv()
	want := header{SrcCID: HostCID, DstCID: 3, SrcPort: 4444, DstPort: 1000, Type: typeStream, Op: opRST}
	if diff := cmp.Diff(want, p.h); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	connsLeft(t, d, 0)
}

func TestMalformedConnect(t *testing.T) {
	tests := []struct {
		name string
		line string
	}{
		{"garbage", "HELLO\n"},
		{"no port", "CONNECT \n"},
		{"negative", "CONNECT -1\n"},
		{"too big", "CONNECT 4294967296\n"},
		{"too long", "CONNECT " + strings.Repeat("1", 100) + "\n"},
		{"no newline then EOF", "CONNECT 12"},
	}
	d, path := newTestDevice(t)
	drv := newDriver(t, d)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nc := dialHost(t, path)
			if _, err := nc.Write([]byte(tt.line)); err != nil {
				t.Fatal(err)
			}
			if tt.line[len(tt.line)-1] != '\n' {
				_ = nc.(*net.UnixConn).CloseWrite()
			}
			if n, err := nc.Read(make([]byte, 16)); err == nil {
				t.Errorf("read %d bytes, want the connection closed", n)
			}
		})
	}
	drv.recvNone(50 * time.Millisecond) // the guest heard of none of them
	connsLeft(t, d, 0)
}

func TestBadGuestPackets(t *testing.T) {
	d, _ := newTestDevice(t)
	drv := newDriver(t, d)
	good := guestHdr(opRequest, 1, 2)
	enc := func(h header, extra int) []byte {
		b := make([]byte, HeaderSize+extra)
		h.encode(b)
		return b
	}
	with := func(f func(*header)) header { h := good; f(&h); return h }

	// Dropped: nothing comes back.
	for name, raw := range map[string][]byte{
		"empty":            {},
		"short header":     enc(good, 0)[:43],
		"bad src cid":      enc(with(func(h *header) { h.SrcCID = 4 }), 0),
		"host src cid":     enc(with(func(h *header) { h.SrcCID = HostCID }), 0),
		"len beyond chain": enc(with(func(h *header) { h.Op, h.Len = opRW, 10 }), 5),
		"len over 64KiB":   enc(with(func(h *header) { h.Op, h.Len = opRW, MaxPayload+1 }), MaxPayload+1),
		"len max uint32":   enc(with(func(h *header) { h.Op, h.Len = opRW, 0xffffffff }), 0),
		"payload on req":   enc(with(func(h *header) { h.Len = 1 }), 1),
		"rst unknown conn": enc(with(func(h *header) { h.Op = opRST }), 0),
	} {
		drv.sendRaw(raw)
		if p, ok := drv.tryRecv(); ok {
			t.Errorf("%s: got %+v, want the packet dropped", name, p.h)
		}
	}

	// Refused: RST back to the sender's port.
	for name, h := range map[string]header{
		"dgram type":      with(func(h *header) { h.Type = 2 }),
		"op 0":            with(func(h *header) { h.Op = 0 }),
		"op 99":           with(func(h *header) { h.Op = 99 }),
		"dst not host":    with(func(h *header) { h.DstCID = 7 }),
		"rw unknown conn": with(func(h *header) { h.Op = opRW }),
	} {
		drv.send(h, "")
		p := drv.recv()
		if p.h.Op != opRST || p.h.DstPort != h.SrcPort || p.h.SrcPort != h.DstPort {
			t.Errorf("%s: got %+v, want RST", name, p.h)
		}
	}

	// A packet split over several descriptors is read whole.
	drv.sendRaw(enc(with(func(h *header) { h.Op = opCreditRequest }), 0), 10, 30)
	if p := drv.recv(); p.h.Op != opRST {
		t.Errorf("split packet: got %+v, want RST (no such connection)", p.h)
	}
	connsLeft(t, d, 0)
}

func TestParsePacket(t *testing.T) {
	ok := guestHdr(opRW, 5, 6)
	ok.Len = 3
	b := make([]byte, HeaderSize+3)
	ok.encode(b)
	copy(b[HeaderSize:], "abc")
	h, payload, err := parsePacket(b, 3)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(ok, h); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if string(payload) != "abc" {
		t.Errorf("payload %q", payload)
	}
	for _, bad := range [][]byte{nil, b[:HeaderSize-1], b[:HeaderSize+2]} {
		if _, _, err := parsePacket(bad, 3); !errors.Is(err, ErrBadPacket) {
			t.Errorf("parsePacket(%d bytes) = %v, want ErrBadPacket", len(bad), err)
		}
	}
	if _, _, err := parsePacket(b, 4); !errors.Is(err, ErrBadPacket) {
		t.Errorf("wrong guest cid: %v, want ErrBadPacket", err)
	}
}

func TestParseConnect(t *testing.T) {
	tests := []struct {
		in      string
		want    uint32
		wantErr bool
	}{
		{"CONNECT 1234\n", 1234, false},
		{"CONNECT 0\n", 0, false},
		{"CONNECT 4294967295\n", 0xffffffff, false},
		{"CONNECT 4294967296\n", 0, true},
		{"CONNECT 1234", 0, true},
		{"CONNECT 12 34\n", 0, true},
		{"CONNECT +1\n", 0, true},
		{"CONNECT 0x10\n", 0, true},
		{"connect 1\n", 0, true},
		{"CONNECT\n", 0, true},
		{"CONNECT 1\r\n", 0, true},
		{"CONNECT 00000000001\n", 0, true},
		{"", 0, true},
	}
	for _, tt := range tests {
		got, err := parseConnect([]byte(tt.in))
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("parseConnect(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
		if err != nil && !errors.Is(err, ErrBadConnect) {
			t.Errorf("parseConnect(%q) error %v does not wrap ErrBadConnect", tt.in, err)
		}
	}
}

func TestConfigRead(t *testing.T) {
	d, _ := newTestDevice(t)
	tests := []struct {
		off  uint64
		n    int
		want []byte
	}{
		{0, 8, []byte{3, 0, 0, 0, 0, 0, 0, 0}},
		{0, 4, []byte{3, 0, 0, 0}},
		{4, 8, []byte{0, 0, 0, 0, 0, 0, 0, 0}},
		{1<<64 - 2, 4, []byte{0, 0, 0, 0}},
	}
	for _, tt := range tests {
		p := make([]byte, tt.n)
		for i := range p {
			p[i] = 0xff
		}
		d.ConfigRead(tt.off, p)
		if diff := cmp.Diff(tt.want, p); diff != "" {
			t.Errorf("ConfigRead(%#x, %d) (-want +got):\n%s", tt.off, tt.n, diff)
		}
	}
}

func TestNewPath(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{GuestCID: 3, UDSPath: file}); !errors.Is(err, ErrPathInUse) {
		t.Errorf("New on a regular file: %v, want ErrPathInUse", err)
	}
	if _, err := New(Config{GuestCID: 2, UDSPath: filepath.Join(dir, "x")}); err == nil {
		t.Error("New with guest cid 2 succeeded")
	}

	// A stale socket (its listener gone, the file left) is replaced.
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	d, err := New(Config{GuestCID: 3, UDSPath: stale})
	if err != nil {
		t.Fatalf("New over a stale socket: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Close: %v, want ErrClosed", err)
	}
}

func TestCloseStopsEverything(t *testing.T) {
	before := runtime.NumGoroutine()
	path := filepath.Join(t.TempDir(), "v.sock")
	d, err := New(Config{GuestCID: 3, UDSPath: path})
	if err != nil {
		t.Fatal(err)
	}
	drv := newDriver(t, d)
	// Connections in every state: established both ways, mid-handshake,
	// and waiting for the guest's RESPONSE.
	hostConnect(t, drv, path, 1)
	ln, err := net.Listen("unix", path+"_2")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	drv.send(guestHdr(opRequest, 50, 2), "")
	peer, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	dialHost(t, path) // sends nothing
	waiting := dialHost(t, path)
	fmt.Fprintf(waiting, "CONNECT 3\n")
	drv.recv() // RESPONSE or REQUEST; either way the device is busy

	done := make(chan error)
	go func() { done <- d.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file after Close: %v", err)
	}
	if _, err := peer.Read(make([]byte, 1)); err == nil {
		t.Error("guest-initiated connection still open after Close")
	}
	// Close waited for the device's goroutines; allow the test's own
	// (the listener, the dialled sockets) a moment to settle.
	for range 100 {
		if runtime.NumGoroutine() <= before {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("%d goroutines after Close, %d before New", n, before)
	}
}

func TestGuestHalfClose(t *testing.T) {
	d, path := newTestDevice(t)
	drv := newDriver(t, d)
	ln, err := net.Listen("unix", path+"_80")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	drv.send(guestHdr(opRequest, 900, 80), "")
	nc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	if p := drv.recv(); p.h.Op != opResponse {
		t.Fatalf("got %+v, want RESPONSE", p.h)
	}

	// The guest sends a request and shuts its send side, as after
	// shutdown(fd, SHUT_WR): the host reads it to EOF and still answers.
	drv.send(guestHdr(opRW, 900, 80), "GET")
	sd := guestHdr(opShutdown, 900, 80)
	sd.Flags = shutdownSend
	drv.send(sd, "")
	req, err := io.ReadAll(nc)
	if err != nil || string(req) != "GET" {
		t.Fatalf("host read %q, %v; want GET, EOF", req, err)
	}
	if _, err := nc.Write([]byte("200")); err != nil {
		t.Fatal(err)
	}
	var got strings.Builder
	for got.Len() < 3 {
		if p := drv.recv(); p.h.Op == opRW {
			got.WriteString(p.data)
		}
	}
	if got.String() != "200" {
		t.Errorf("guest got %q, want 200", got.String())
	}
	// Data after SHUTDOWN(SEND) is a protocol error.
	drv.send(guestHdr(opRW, 900, 80), "late")
	for {
		if p := drv.recv(); p.h.Op == opRST {
			break
		}
	}
	connsLeft(t, d, 0)
}

func TestMaxConns(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v.sock")
	d, err := New(Config{GuestCID: 3, UDSPath: path, MaxConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	drv := newDriver(t, d)
	hostConnect(t, drv, path, 1)
	extra := dialHost(t, path)
	if _, err := extra.Read(make([]byte, 1)); err == nil {
		t.Error("connection over MaxConns not closed")
	}
	drv.send(guestHdr(opRequest, 5, 6), "")
	if p := drv.recv(); p.h.Op != opRST {
		t.Errorf("guest connect over MaxConns: got %+v, want RST", p.h)
	}
}

func TestGuestRefusesHostConnect(t *testing.T) {
	d, path := newTestDevice(t)
	drv := newDriver(t, d)
	nc := dialHost(t, path)
	fmt.Fprintf(nc, "CONNECT 22\n")
	req := drv.recv()
	drv.send(guestHdr(opRST, 22, req.h.SrcPort), "")
	if n, err := nc.Read(make([]byte, 16)); err == nil {
		t.Errorf("host read %d bytes after the guest refused, want the connection closed", n)
	}
	connsLeft(t, d, 0)
}

func TestResetClosesConnections(t *testing.T) {
	d, path := newTestDevice(t)
	drv := newDriver(t, d)
	nc, _, _ := hostConnect(t, drv, path, 1)
	d.Reset()
	if _, err := nc.Read(make([]byte, 1)); err == nil {
		t.Error("host connection open after the driver reset the device")
	}
	connsLeft(t, d, 0)
	d.Notify(queueTx) // no queues: must be a no-op
	d.Notify(queueRx)

	// A fresh activation works as before.
	drv = newDriver(t, d)
	hostConnect(t, drv, path, 2)
}

package vsock

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/greatjail/cvm/vmm/virtio"
)

const (
	// DeviceType is the virtio device ID of vsock.
	DeviceType = 19
	// DefaultMaxConns is Config.MaxConns when zero (Firecracker's limit).
	DefaultMaxConns = 1023

	queueRx    = 0
	queueTx    = 1
	queueEvent = 2
	queueSize  = 256

	// bufAlloc is the receive buffer the device advertises per connection:
	// at most this many guest bytes wait for the host socket.
	bufAlloc = 64 << 10
	// maxCtrl bounds control packets waiting for rx buffers; beyond it
	// new ones (RSTs to a misbehaving guest, credit updates) are dropped.
	maxCtrl = 4096

	handshakeTimeout = 2 * time.Second
	// firstLocalPort and the range size: host-side ports of host-initiated
	// connections are handed out round-robin in [2^30, 2^31).
	firstLocalPort = 1 << 30
	localPortRange = 1 << 30
)

// Config configures a Device.
type Config struct {
	// GuestCID is the guest's context ID, in [3, 2^32) as Linux needs.
	GuestCID uint64
	// UDSPath is the Unix socket host processes connect to; guest
	// connections to port P go to UDSPath + "_" + P.
	UDSPath string
	// MaxConns bounds open connections (both directions, including ones
	// still in their handshake); 0 means DefaultMaxConns.
	MaxConns int
	// Logger receives debug and warning records; nil discards them.
	Logger *slog.Logger
}

// Device is the virtio-vsock device and its Unix-socket muxer. It
// implements virtio.Device. See the package documentation for its
// goroutines and locking.
type Device struct {
	cfg Config
	log *slog.Logger
	ln  *net.UnixListener
	wg  sync.WaitGroup // the accept loop and all connection goroutines
	// stop is cancelled by Close; it aborts dials in progress.
	stop       context.Context
	cancelStop context.CancelFunc

	mu     sync.Mutex
	signal func() // raises the used-buffer interrupt; may be nil
	closed bool
	mem    virtio.Memory
	rxq    *virtio.Queue // nil before Activate, after Reset, or once broken
	txq    *virtio.Queue
	conns  map[*conn]struct{} // every open connection
	byKey  map[connKey]*conn  // connections that have guest and host ports
	ctrl   []header           // control packets waiting for rx buffers
	rxWait []*conn            // connections with bytes or a SHUTDOWN for the guest
	nextLP uint32             // next host-side port offset to try
}

// connKey names a connection by its two ports.
type connKey struct{ host, guest uint32 }

// conn is one muxed connection. The channels never change; nc is set
// before the reader and writer may use it (at creation, or under Device.mu
// before ready is closed); every other field is guarded by Device.mu.
type conn struct {
	done  chan struct{} // closed by teardown
	ready chan struct{} // closed once the writer may write to nc
	rwake chan struct{} // wakes the reader: credit arrived, rx drained
	wwake chan struct{} // wakes the writer: guest bytes or a guest shutdown

	nc       net.Conn // nil until a guest-initiated dial succeeds
	key      connKey
	keyed    bool // in Device.byKey
	hostInit bool
	estab    bool // the guest sent or got RESPONSE
	closed   bool

	// Host to guest.
	pendingRx    []byte // read from nc, not yet in an rx buffer
	queued       bool   // in Device.rxWait
	hostEOF      bool   // nc reached EOF; SHUTDOWN follows the pending bytes
	shutSent     bool
	rxCnt        uint32 // bytes sent to the guest
	peerBufAlloc uint32
	peerFwdCnt   uint32

	// Guest to host.
	txBuf      []byte // guest bytes not yet written to nc
	fwdCnt     uint32 // guest bytes written to nc
	peerShut   uint32 // SHUTDOWN flags the guest sent
	wrClosed   bool   // nc's write side was shut after a guest SHUTDOWN(SEND)
	creditDue  bool   // fwdCnt moved; a CREDIT_UPDATE is owed
	estabWaker chan struct{}
}

// New listens on cfg.UDSPath and returns the device. A stale socket file
// at that path is removed; any other file there is ErrPathInUse.
func New(cfg Config) (*Device, error) {
	if cfg.GuestCID < 3 || cfg.GuestCID > 0xffffffff {
		return nil, fmt.Errorf("vsock: guest cid %d outside [3, 2^32)", cfg.GuestCID)
	}
	if cfg.UDSPath == "" {
		return nil, errors.New("vsock: empty uds path")
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if fi, err := os.Lstat(cfg.UDSPath); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("vsock: %s: %w", cfg.UDSPath, ErrPathInUse)
		}
		if err := os.Remove(cfg.UDSPath); err != nil {
			return nil, fmt.Errorf("vsock: remove stale socket: %w", err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("vsock: %w", err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: cfg.UDSPath, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("vsock: listen: %w", err)
	}
	ln.SetUnlinkOnClose(false) // Close removes it, after the goroutines exit
	d := &Device{cfg: cfg, log: log, ln: ln, conns: map[*conn]struct{}{}, byKey: map[connKey]*conn{}}
	d.stop, d.cancelStop = context.WithCancel(context.Background())
	d.wg.Add(1)
	go d.acceptLoop()
	return d, nil
}

// SetSignal sets the function that raises the device's used-buffer
// interrupt, normally the transport's MMIO.SignalUsed. Call it before the
// driver activates the device.
func (d *Device) SetSignal(f func()) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.signal = f
}

// Close stops the accept loop, closes every connection, waits for all the
// device's goroutines to exit and removes the socket file.
func (d *Device) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return ErrClosed
	}
	d.closed = true
	d.cancelStop()
	err := d.ln.Close()
	for c := range d.conns {
		d.teardown(c, false)
	}
	d.mu.Unlock()
	d.wg.Wait()
	if rerr := os.Remove(d.cfg.UDSPath); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
		err = errors.Join(err, rerr)
	}
	if err != nil {
		return fmt.Errorf("vsock: close: %w", err)
	}
	return nil
}

// Type implements virtio.Device.
func (d *Device) Type() uint32 { return DeviceType }

// Features implements virtio.Device: VIRTIO_VSOCK_F_STREAM is implied by
// offering nothing device-specific.
func (d *Device) Features() uint64 { return 0 }

// ConfigRead implements virtio.Device: the config is guest_cid, a
// little-endian u64.
func (d *Device) ConfigRead(off uint64, p []byte) {
	var cfg [8]byte
	for i := range 8 {
		cfg[i] = byte(d.cfg.GuestCID >> (8 * i))
	}
	for i := range p {
		if o := off + uint64(i); o >= off && o < 8 {
			p[i] = cfg[o]
		} else {
			p[i] = 0
		}
	}
}

// ConfigWrite implements virtio.Device; the config is read-only.
func (d *Device) ConfigWrite(uint64, []byte) {}

// QueueMaxSize implements virtio.Device.
func (d *Device) QueueMaxSize(int) uint16 { return queueSize }

// NumQueues implements virtio.Device: rx, tx and event.
func (d *Device) NumQueues() int { return 3 }

// Activate implements virtio.Device.
func (d *Device) Activate(m virtio.Memory, qs []*virtio.Queue) error {
	if len(qs) != 3 || qs[queueRx] == nil || qs[queueTx] == nil {
		return errors.New("vsock: activate: rx and tx queues must be ready")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.mem, d.rxq, d.txq = m, qs[queueRx], qs[queueTx]
	d.processTx()
	d.processRx()
	return nil
}

// Reset implements virtio.Device: every connection is closed, since the
// guest forgot them.
func (d *Device) Reset() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.mem, d.rxq, d.txq = nil, nil, nil
	for c := range d.conns {
		d.teardown(c, false)
	}
	d.ctrl, d.rxWait = nil, nil
}

// Notify implements virtio.Device: tx kicks process guest packets, rx kicks
// (new buffers) deliver what waits for the guest. The event queue is not
// used: the device never resets the transport.
func (d *Device) Notify(q int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch q {
	case queueTx:
		d.processTx()
		d.processRx()
	case queueRx:
		d.processRx()
	}
}

// interrupt raises the interrupt if the driver wants one for q.
// Preconditions: d.mu held.
func (d *Device) interrupt(q *virtio.Queue) {
	if need, err := q.NeedsNotify(d.mem); err == nil && need && d.signal != nil {
		d.signal()
	}
}

// processTx handles every chain on the tx queue.
// Preconditions: d.mu held.
func (d *Device) processTx() {
	if d.txq == nil {
		return
	}
	pushed := false
	for {
		c, err := d.txq.Pop(d.mem)
		if err != nil {
			d.log.Warn("vsock: tx queue broken", "err", err)
			d.txq = nil
			break
		}
		if c == nil {
			break
		}
		if b, err := c.ReadAll(d.mem, HeaderSize+MaxPayload); err != nil {
			d.log.Debug("vsock: tx chain dropped", "err", err)
		} else {
			d.handlePacket(b)
		}
		if err := d.txq.Push(d.mem, c.Head, 0); err != nil {
			d.log.Warn("vsock: tx queue broken", "err", err)
			d.txq = nil
			break
		}
		pushed = true
	}
	if pushed && d.txq != nil {
		d.interrupt(d.txq)
	}
}

// reply queues a control packet from the host to the guest, answering h.
// Preconditions: d.mu held.
func (d *Device) reply(h header, op uint16) {
	d.pushCtrl(header{SrcCID: HostCID, DstCID: d.cfg.GuestCID, SrcPort: h.DstPort, DstPort: h.SrcPort,
		Type: typeStream, Op: op})
}

// pushCtrl queues a control packet for the guest, or drops it if maxCtrl
// are already waiting (the guest posts no rx buffers).
// Preconditions: d.mu held.
func (d *Device) pushCtrl(h header) {
	if len(d.ctrl) >= maxCtrl {
		d.log.Debug("vsock: control queue full, packet dropped", "op", h.Op)
		return
	}
	d.ctrl = append(d.ctrl, h)
}

// handlePacket dispatches one guest packet.
// Preconditions: d.mu held.
func (d *Device) handlePacket(b []byte) {
	h, payload, err := parsePacket(b, d.cfg.GuestCID)
	if err != nil {
		d.log.Debug("vsock: tx packet dropped", "err", err)
		return
	}
	if h.Op == opRST { // never answer a RST with a RST
		if c := d.byKey[connKey{h.DstPort, h.SrcPort}]; c != nil && h.DstCID == HostCID {
			d.teardown(c, false)
		}
		return
	}
	if h.DstCID != HostCID || h.Type != typeStream || h.Op < opRequest || h.Op > opCreditRequest {
		d.log.Debug("vsock: tx packet refused", "dst_cid", h.DstCID, "type", h.Type, "op", h.Op)
		d.reply(h, opRST)
		return
	}
	key := connKey{host: h.DstPort, guest: h.SrcPort}
	c := d.byKey[key]
	if c == nil {
		if h.Op == opRequest {
			d.guestConnect(h, key)
		} else {
			d.reply(h, opRST)
		}
		return
	}
	c.peerBufAlloc, c.peerFwdCnt = h.BufAlloc, h.FwdCnt
	wake(c.rwake)
	switch {
	case h.Op == opResponse && c.hostInit && !c.estab:
		c.estab = true
		close(c.estabWaker)
	case !c.estab || h.Op == opRequest || h.Op == opResponse:
		d.teardown(c, true)
	case h.Op == opRW:
		if len(c.txBuf)+len(payload) > bufAlloc || c.peerShut&shutdownSend != 0 {
			d.log.Debug("vsock: guest overran its credit", "port", key.host)
			d.teardown(c, true)
			return
		}
		c.txBuf = append(c.txBuf, payload...)
		wake(c.wwake)
	case h.Op == opShutdown:
		c.peerShut |= h.Flags & (shutdownRcv | shutdownSend)
		wake(c.wwake)
	case h.Op == opCreditRequest:
		c.creditDue = true
		d.enqueueRx(c)
	case h.Op == opCreditUpdate:
		// The credit was taken from the header above.
	}
}

// guestConnect starts a guest-initiated connection to UDSPath_port.
// Preconditions: d.mu held.
func (d *Device) guestConnect(h header, key connKey) {
	if d.closed || len(d.conns) >= d.cfg.MaxConns {
		d.reply(h, opRST)
		return
	}
	c := newConn()
	c.key, c.keyed = key, true
	c.peerBufAlloc, c.peerFwdCnt = h.BufAlloc, h.FwdCnt
	d.conns[c] = struct{}{}
	d.byKey[key] = c
	d.wg.Add(2)
	go d.dialReader(c, d.cfg.UDSPath+"_"+strconv.FormatUint(uint64(key.host), 10))
	go d.writer(c)
}

func newConn() *conn {
	return &conn{
		done: make(chan struct{}), ready: make(chan struct{}), estabWaker: make(chan struct{}),
		rwake: make(chan struct{}, 1), wwake: make(chan struct{}, 1),
	}
}

func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// teardown closes c. With rst, the guest is sent RST for it.
// Preconditions: d.mu held.
func (d *Device) teardown(c *conn, rst bool) {
	if c.closed {
		return
	}
	c.closed = true
	close(c.done)
	if c.nc != nil {
		_ = c.nc.Close()
	}
	delete(d.conns, c)
	if c.keyed {
		delete(d.byKey, c.key)
		if rst {
			d.reply(header{SrcPort: c.key.guest, DstPort: c.key.host}, opRST)
		}
	}
	c.pendingRx = nil
}

// writerWork reports whether the writer has something to do.
// Preconditions: d.mu held.
func (c *conn) writerWork() bool {
	return c.closed || len(c.txBuf) > 0 || c.peerShut&shutdownSend != 0 && !c.wrClosed ||
		c.peerShut == shutdownRcv|shutdownSend
}

// credit is how many more bytes the guest can take on c.
// Preconditions: d.mu held.
func (c *conn) credit() uint32 {
	inFlight := c.rxCnt - c.peerFwdCnt
	if inFlight >= c.peerBufAlloc {
		return 0
	}
	return c.peerBufAlloc - inFlight
}

// enqueueRx marks c as having something for the guest.
// Preconditions: d.mu held.
func (d *Device) enqueueRx(c *conn) {
	if !c.queued {
		c.queued = true
		d.rxWait = append(d.rxWait, c)
	}
}

// nextRx returns the next packet for the guest, taking at most room
// payload bytes, or ok false if nothing waits.
// Preconditions: d.mu held.
func (d *Device) nextRx(room int) (h header, payload []byte, c *conn, ok bool) {
	if len(d.ctrl) > 0 {
		h = d.ctrl[0]
		d.ctrl = d.ctrl[1:]
		return h, nil, nil, true
	}
	for len(d.rxWait) > 0 {
		c = d.rxWait[0]
		switch {
		case c.closed:
		case len(c.pendingRx) > 0 && room > 0:
			n := min(room, len(c.pendingRx))
			payload = c.pendingRx[:n]
			c.pendingRx = c.pendingRx[n:]
			c.rxCnt += uint32(n)
			return d.hostHeader(c, opRW, 0, uint32(n)), payload, c, true
		case len(c.pendingRx) > 0:
			return header{}, nil, nil, false // the buffer is too small; retry on the next
		case c.hostEOF && !c.shutSent:
			c.shutSent = true
			return d.hostHeader(c, opShutdown, shutdownRcv|shutdownSend, 0), nil, c, true
		case c.creditDue:
			return d.hostHeader(c, opCreditUpdate, 0, 0), nil, c, true
		}
		c.queued = false
		d.rxWait = d.rxWait[1:]
		wake(c.rwake)
	}
	return header{}, nil, nil, false
}

// rxPending reports whether a packet waits for the guest, dropping
// finished connections from the front of rxWait.
// Preconditions: d.mu held.
func (d *Device) rxPending() bool {
	for len(d.rxWait) > 0 {
		c := d.rxWait[0]
		if !c.closed && (len(c.pendingRx) > 0 || c.hostEOF && !c.shutSent || c.creditDue) {
			break
		}
		c.queued = false
		d.rxWait = d.rxWait[1:]
		wake(c.rwake)
	}
	return len(d.ctrl) > 0 || len(d.rxWait) > 0
}

// hostHeader is a packet from the host side of c, carrying c's credit.
// Preconditions: d.mu held.
func (d *Device) hostHeader(c *conn, op uint16, flags, n uint32) header {
	c.creditDue = false
	return header{SrcCID: HostCID, DstCID: d.cfg.GuestCID, SrcPort: c.key.host, DstPort: c.key.guest,
		Len: n, Type: typeStream, Op: op, Flags: flags, BufAlloc: bufAlloc, FwdCnt: c.fwdCnt}
}

// processRx fills rx buffers with waiting packets.
// Preconditions: d.mu held.
func (d *Device) processRx() {
	if d.rxq == nil {
		return
	}
	pushed := false
	var hb [HeaderSize]byte
	for d.rxPending() {
		ch, err := d.rxq.Pop(d.mem)
		if err != nil {
			d.log.Warn("vsock: rx queue broken", "err", err)
			d.rxq = nil
			return
		}
		if ch == nil {
			break
		}
		var capacity int
		for _, w := range ch.Writable {
			capacity += int(w.Len)
		}
		written := 0
		if capacity >= HeaderSize {
			if h, payload, _, ok := d.nextRx(min(capacity-HeaderSize, MaxPayload)); ok {
				h.Len = uint32(len(payload))
				h.encode(hb[:])
				pkt := append(hb[:], payload...)
				if written, err = ch.WriteAll(d.mem, pkt); err != nil {
					d.log.Debug("vsock: rx buffer write", "err", err)
				}
			}
		}
		if err := d.rxq.Push(d.mem, ch.Head, uint32(written)); err != nil {
			d.log.Warn("vsock: rx queue broken", "err", err)
			d.rxq = nil
			return
		}
		pushed = true
	}
	if pushed {
		d.interrupt(d.rxq)
	}
}

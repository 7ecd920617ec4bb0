package vsock

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// acceptLoop accepts host connections until the listener is closed.
func (d *Device) acceptLoop() {
	defer d.wg.Done()
	for {
		nc, err := d.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				d.log.Warn("vsock: accept", "err", err)
				// A transient error (EMFILE): do not spin.
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return
		}
		d.mu.Lock()
		if d.closed || len(d.conns) >= d.cfg.MaxConns {
			d.mu.Unlock()
			d.log.Debug("vsock: host connection refused: too many connections")
			_ = nc.Close()
			continue
		}
		c := newConn()
		c.nc, c.hostInit = nc, true
		d.conns[c] = struct{}{}
		d.wg.Add(2)
		go d.hostReader(c)
		go d.writer(c)
		d.mu.Unlock()
	}
}

// hostReader runs a host-initiated connection's handshake, then copies
// host bytes to the guest.
func (d *Device) hostReader(c *conn) {
	defer d.wg.Done()
	br := bufio.NewReaderSize(c.nc, maxConnectLine)
	port, err := d.readConnect(c.nc, br)
	if err != nil {
		d.log.Debug("vsock: host handshake", "err", err)
		d.mu.Lock()
		d.teardown(c, false)
		d.mu.Unlock()
		return
	}

	d.mu.Lock()
	if c.closed {
		d.mu.Unlock()
		return
	}
	key, ok := d.allocPort(port)
	if !ok {
		d.teardown(c, false)
		d.mu.Unlock()
		return
	}
	c.key, c.keyed = key, true
	d.byKey[key] = c
	d.pushCtrl(d.hostHeader(c, opRequest, 0, 0))
	d.processRx()
	d.mu.Unlock()

	t := time.NewTimer(handshakeTimeout)
	defer t.Stop()
	select {
	case <-c.estabWaker:
	case <-c.done:
		return
	case <-t.C:
		d.log.Debug("vsock: guest did not answer REQUEST", "port", port)
		d.mu.Lock()
		d.teardown(c, true)
		d.processRx()
		d.mu.Unlock()
		return
	}
	_ = c.nc.SetWriteDeadline(time.Now().Add(handshakeTimeout))
	_, err = fmt.Fprintf(c.nc, "OK %d\n", key.host)
	_ = c.nc.SetWriteDeadline(time.Time{})
	if err != nil {
		d.mu.Lock()
		d.teardown(c, true)
		d.processRx()
		d.mu.Unlock()
		return
	}
	close(c.ready)
	d.readLoop(c, br)
}

// readConnect reads and parses the first line of a host connection.
func (d *Device) readConnect(nc net.Conn, br *bufio.Reader) (uint32, error) {
	if err := nc.SetReadDeadline(time.Now().Add(handshakeTimeout)); err != nil {
		return 0, fmt.Errorf("vsock: set deadline: %w", err)
	}
	line, err := br.ReadSlice('\n')
	if err != nil {
		return 0, fmt.Errorf("vsock: read CONNECT line: %w", errors.Join(ErrBadConnect, err))
	}
	if err := nc.SetReadDeadline(time.Time{}); err != nil {
		return 0, fmt.Errorf("vsock: clear deadline: %w", err)
	}
	return parseConnect(line)
}

// allocPort picks a free host-side port for a connection to guest port.
// Preconditions: d.mu held.
func (d *Device) allocPort(guest uint32) (connKey, bool) {
	for range 64 {
		k := connKey{host: firstLocalPort + d.nextLP%localPortRange, guest: guest}
		d.nextLP++
		if d.byKey[k] == nil {
			return k, true
		}
	}
	return connKey{}, false
}

// dialReader connects a guest-initiated connection to path, answers the
// guest, then copies host bytes to the guest.
func (d *Device) dialReader(c *conn, path string) {
	defer d.wg.Done()
	nc, err := (&net.Dialer{Timeout: handshakeTimeout}).DialContext(d.stop, "unix", path)
	d.mu.Lock()
	if err != nil || c.closed {
		if err != nil {
			d.log.Debug("vsock: guest connect", "path", path, "err", err)
		} else {
			_ = nc.Close()
		}
		d.teardown(c, true)
		d.processRx()
		d.mu.Unlock()
		return
	}
	c.nc, c.estab = nc, true
	d.pushCtrl(d.hostHeader(c, opResponse, 0, 0))
	d.processRx()
	d.mu.Unlock()
	close(c.ready)
	d.readLoop(c, nc)
}

// readLoop copies bytes from r (the host socket) to the guest, reading no
// more than the guest's credit and only once the previous read reached the
// rx queue. At EOF it queues SHUTDOWN and leaves the connection for the
// guest's RST to close.
func (d *Device) readLoop(c *conn, r io.Reader) {
	buf := make([]byte, MaxPayload)
	for {
		d.mu.Lock()
		for !c.closed && (c.credit() == 0 || len(c.pendingRx) > 0) {
			d.mu.Unlock()
			select {
			case <-c.rwake:
			case <-c.done:
			}
			d.mu.Lock()
		}
		if c.closed {
			d.mu.Unlock()
			return
		}
		n := min(int(c.credit()), len(buf))
		d.mu.Unlock()

		k, err := r.Read(buf[:n])

		d.mu.Lock()
		if c.closed {
			d.mu.Unlock()
			return
		}
		if k > 0 {
			c.pendingRx = append(c.pendingRx[:0:0], buf[:k]...)
			d.enqueueRx(c)
		}
		if err != nil {
			c.hostEOF = true
			d.enqueueRx(c)
		}
		d.processRx()
		d.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// writer copies guest bytes buffered in c.txBuf to the host socket, and
// tells the guest its new credit after each write. After a guest
// SHUTDOWN(SEND) it shuts the socket's write side once the buffer is
// written; after SHUTDOWN with both flags it closes the connection and
// answers RST, as Linux's close expects.
func (d *Device) writer(c *conn) {
	defer d.wg.Done()
	select {
	case <-c.ready:
	case <-c.done:
		return
	}
	for {
		d.mu.Lock()
		for !c.writerWork() {
			d.mu.Unlock()
			select {
			case <-c.wwake:
			case <-c.done:
			}
			d.mu.Lock()
		}
		if c.closed {
			d.mu.Unlock()
			return
		}
		if len(c.txBuf) == 0 { // the guest shut down and everything is written
			if c.peerShut == shutdownRcv|shutdownSend {
				d.teardown(c, true)
				d.processRx()
				d.mu.Unlock()
				return
			}
			// Half close: the guest sends no more, but may still read.
			c.wrClosed = true
			d.mu.Unlock()
			if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
				_ = cw.CloseWrite()
			}
			continue
		}
		buf := c.txBuf
		c.txBuf = nil
		d.mu.Unlock()

		_, err := c.nc.Write(buf)

		d.mu.Lock()
		if c.closed {
			d.mu.Unlock()
			return
		}
		if err != nil {
			d.log.Debug("vsock: host write", "err", err)
			d.teardown(c, true)
		} else {
			c.fwdCnt += uint32(len(buf))
			c.creditDue = true
			d.enqueueRx(c)
		}
		d.processRx()
		d.mu.Unlock()
		if err != nil {
			return
		}
	}
}

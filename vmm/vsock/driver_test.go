package vsock

import (
	"encoding/binary"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/greatjail/cvm/vmm/virtio"
)

// A minimal guest driver for tests: rx, tx and event queues in a
// SliceMemory. Every access to guest memory holds the device's mutex, as
// the device's goroutines fill rx buffers concurrently (a real guest orders
// itself through the rings instead).

const (
	drvQSize   = 16
	drvRxBuf   = 4096 // bytes per rx buffer
	drvRxData  = 0x10000
	drvTxData  = 0x100000
	drvTxSlot  = 0x11000 // room for a header plus MaxPayload
	drvMemSize = drvTxData + drvQSize*drvTxSlot
)

type ring struct {
	desc, avail, used uint64
	nextDesc          uint16
	availIdx          uint16
	lastUsed          uint16
}

type driver struct {
	t       testing.TB
	d       *Device
	mem     virtio.SliceMemory
	rx, tx  ring
	signals atomic.Int32
}

// packet is a decoded rx packet.
type packet struct {
	h    header
	data string
}

func newTestDevice(t testing.TB) (*Device, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "v.sock")
	d, err := New(Config{GuestCID: 3, UDSPath: path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d, path
}

// newDriver activates d with fresh queues and posts every rx buffer.
func newDriver(t testing.TB, d *Device) *driver {
	t.Helper()
	drv := &driver{t: t, d: d, mem: make(virtio.SliceMemory, drvMemSize),
		rx: ring{desc: 0x1000, avail: 0x2000, used: 0x3000},
		tx: ring{desc: 0x4000, avail: 0x5000, used: 0x6000},
	}
	var qs []*virtio.Queue
	for _, r := range []ring{drv.rx, drv.tx, {desc: 0x7000, avail: 0x8000, used: 0x9000}} {
		q, err := virtio.NewQueue(drv.mem, virtio.QueueConfig{Size: drvQSize, DescTable: r.desc, DriverArea: r.avail, DeviceArea: r.used})
		if err != nil {
			t.Fatal(err)
		}
		qs = append(qs, q)
	}
	d.SetSignal(func() { drv.signals.Add(1) })
	d.mu.Lock()
	for i := range uint16(drvQSize) {
		drv.setDesc(drv.rx.desc, i, drvRxData+uint64(i)*drvRxBuf, drvRxBuf, 2, 0)
		drv.publish(&drv.rx, i)
	}
	d.mu.Unlock()
	if err := d.Activate(drv.mem, qs); err != nil {
		t.Fatal(err)
	}
	return drv
}

func (drv *driver) setDesc(table uint64, i uint16, addr uint64, n uint32, flags, next uint16) {
	e := drv.mem[table+16*uint64(i):]
	binary.LittleEndian.PutUint64(e[0:], addr)
	binary.LittleEndian.PutUint32(e[8:], n)
	binary.LittleEndian.PutUint16(e[12:], flags)
	binary.LittleEndian.PutUint16(e[14:], next)
}

func (drv *driver) publish(r *ring, head uint16) {
	binary.LittleEndian.PutUint16(drv.mem[r.avail+4+2*uint64(r.availIdx%drvQSize):], head)
	r.availIdx++
	binary.LittleEndian.PutUint16(drv.mem[r.avail+2:], r.availIdx)
}

// sendRaw puts raw on the tx queue as one chain of len(splits)+1
// descriptors, split at the given offsets, and kicks the device.
func (drv *driver) sendRaw(raw []byte, splits ...int) {
	drv.d.mu.Lock()
	head := drv.tx.nextDesc
	slot := uint64(head)
	base := drvTxData + slot*drvTxSlot
	copy(drv.mem[base:base+drvTxSlot], raw)
	cuts := append(append([]int{0}, splits...), len(raw))
	for i := 0; i+1 < len(cuts); i++ {
		idx := (head + uint16(i)) % drvQSize
		var flags, next uint16
		if i+2 < len(cuts) {
			flags, next = 1, (idx+1)%drvQSize
		}
		drv.setDesc(drv.tx.desc, idx, base+uint64(cuts[i]), uint32(cuts[i+1]-cuts[i]), flags, next)
	}
	drv.tx.nextDesc = (head + uint16(len(cuts)-1)) % drvQSize
	drv.publish(&drv.tx, head)
	drv.d.mu.Unlock()
	drv.d.Notify(queueTx)
}

// send sends a packet from the guest with the given fields.
func (drv *driver) send(h header, data string) {
	h.Len = uint32(len(data))
	b := make([]byte, HeaderSize+len(data))
	h.encode(b)
	copy(b[HeaderSize:], data)
	drv.sendRaw(b)
}

// guestHdr is a header from guest port gp to host port hp.
func guestHdr(op uint16, gp, hp uint32) header {
	return header{SrcCID: 3, DstCID: HostCID, SrcPort: gp, DstPort: hp, Type: typeStream, Op: op, BufAlloc: 64 << 10}
}

// tryRecv takes one used rx buffer, if any, and re-posts it.
func (drv *driver) tryRecv() (packet, bool) {
	drv.d.mu.Lock()
	idx := binary.LittleEndian.Uint16(drv.mem[drv.rx.used+2:])
	if idx == drv.rx.lastUsed {
		drv.d.mu.Unlock()
		return packet{}, false
	}
	e := drv.mem[drv.rx.used+4+8*uint64(drv.rx.lastUsed%drvQSize):]
	head := uint16(binary.LittleEndian.Uint32(e))
	n := binary.LittleEndian.Uint32(e[4:])
	drv.rx.lastUsed++
	buf := drv.mem[drvRxData+uint64(head)*drvRxBuf:][:n]
	var p packet
	if n >= HeaderSize {
		p.h = decodeHeader(buf)
		p.data = string(buf[HeaderSize:])
	} else {
		drv.t.Errorf("rx used element with %d bytes", n)
	}
	drv.publish(&drv.rx, head)
	drv.d.mu.Unlock()
	drv.d.Notify(queueRx)
	return p, true
}

// recv waits up to 5s for the next rx packet.
func (drv *driver) recv() packet {
	drv.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if p, ok := drv.tryRecv(); ok {
			return p
		}
		time.Sleep(time.Millisecond)
	}
	drv.t.Fatal("no rx packet within 5s")
	return packet{}
}

// recvNone checks that no rx packet arrives within d.
func (drv *driver) recvNone(d time.Duration) {
	drv.t.Helper()
	time.Sleep(d)
	if p, ok := drv.tryRecv(); ok {
		drv.t.Errorf("unexpected rx packet %+v", p)
	}
}

package virtio

import (
	"encoding/binary"
	"testing"
)

// A minimal guest driver for tests: it lays out one split virtqueue in a
// SliceMemory and adds chains the way Linux's virtio_ring does.

const (
	testDesc  = 0x1000
	testAvail = 0x2000
	testUsed  = 0x3000
	testData  = 0x10000
	testMem   = 0x20000
)

type testDriver struct {
	t        testing.TB
	mem      SliceMemory
	size     uint16
	nextDesc uint16 // next free slot in the descriptor table (bump allocator, wraps)
	availIdx uint16
	lastUsed uint16
}

type buf struct {
	addr  uint64
	len   uint32
	write bool
}

type usedElem struct {
	ID, Len uint32
}

func newTestDriver(t testing.TB, size uint16) *testDriver {
	return &testDriver{t: t, mem: make(SliceMemory, testMem), size: size}
}

func (d *testDriver) config(eventIdx bool) QueueConfig {
	return QueueConfig{Size: d.size, DescTable: testDesc, DriverArea: testAvail, DeviceArea: testUsed, EventIdx: eventIdx}
}

func (d *testDriver) queue(eventIdx bool) *Queue {
	d.t.Helper()
	q, err := NewQueue(d.mem, d.config(eventIdx))
	if err != nil {
		d.t.Fatal(err)
	}
	return q
}

func (d *testDriver) put16(gpa uint64, v uint16) { binary.LittleEndian.PutUint16(d.mem[gpa:], v) }

// setDesc writes entry i of the descriptor table at table.
func (d *testDriver) setDesc(table uint64, i uint16, addr uint64, length uint32, flags, next uint16) {
	e := d.mem[table+16*uint64(i):]
	binary.LittleEndian.PutUint64(e[0:], addr)
	binary.LittleEndian.PutUint32(e[8:], length)
	binary.LittleEndian.PutUint16(e[12:], flags)
	binary.LittleEndian.PutUint16(e[14:], next)
}

// chain writes bufs as linked descriptors at table starting from slot
// first, and returns the head slot.
func (d *testDriver) chain(table uint64, first uint16, tableLen uint16, bufs []buf) uint16 {
	for i, b := range bufs {
		slot := (first + uint16(i)) % tableLen
		var flags uint16
		if b.write {
			flags |= descFWrite
		}
		next := uint16(0)
		if i < len(bufs)-1 {
			flags |= descFNext
			next = (slot + 1) % tableLen
		}
		d.setDesc(table, slot, b.addr, b.len, flags, next)
	}
	return first % tableLen
}

// addChain adds a direct chain and publishes it.
func (d *testDriver) addChain(bufs ...buf) uint16 {
	head := d.chain(testDesc, d.nextDesc, d.size, bufs)
	d.nextDesc = (d.nextDesc + uint16(len(bufs))) % d.size
	d.publish(head)
	return head
}

// addIndirect writes bufs as an indirect table at table, points one direct
// descriptor at it, and publishes that.
func (d *testDriver) addIndirect(table uint64, bufs ...buf) uint16 {
	d.chain(table, 0, uint16(len(bufs)), bufs)
	head := d.nextDesc
	d.setDesc(testDesc, head, table, uint32(16*len(bufs)), descFIndirect, 0)
	d.nextDesc = (d.nextDesc + 1) % d.size
	d.publish(head)
	return head
}

func (d *testDriver) publish(head uint16) {
	d.put16(testAvail+4+2*uint64(d.availIdx%d.size), head)
	d.availIdx++
	d.put16(testAvail+2, d.availIdx)
}

// used returns the used elements the device added since the last call.
func (d *testDriver) used() []usedElem {
	idx := binary.LittleEndian.Uint16(d.mem[testUsed+2:])
	var out []usedElem
	for ; d.lastUsed != idx; d.lastUsed++ {
		e := d.mem[testUsed+4+8*uint64(d.lastUsed%d.size):]
		out = append(out, usedElem{binary.LittleEndian.Uint32(e), binary.LittleEndian.Uint32(e[4:])})
	}
	return out
}

func (d *testDriver) setUsedEvent(v uint16) { d.put16(testAvail+4+2*uint64(d.size), v) }
func (d *testDriver) availEvent() uint16 {
	return binary.LittleEndian.Uint16(d.mem[testUsed+4+8*uint64(d.size):])
}

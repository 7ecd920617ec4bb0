package virtio

import (
	"encoding/binary"
	"errors"
	"testing"
)

// countingMemory counts ReadAt calls; withRange selects whether it offers
// RangeChecker, so both range-checking paths get fuzzed.
type countingMemory struct {
	m     SliceMemory
	reads int
}

func (c *countingMemory) ReadAt(p []byte, gpa uint64) error  { c.reads++; return c.m.ReadAt(p, gpa) }
func (c *countingMemory) WriteAt(p []byte, gpa uint64) error { return c.m.WriteAt(p, gpa) }

type countingRangeMemory struct{ *countingMemory }

func (c countingRangeMemory) CheckRange(gpa, n uint64) error { return c.m.CheckRange(gpa, n) }

// seedQueue lays out a 4-entry queue at the fuzz layout with one chain of
// each kind, and returns its memory.
func seedQueue(indirect, loop bool) []byte {
	d := newTestDriver(nil, 4)
	d.mem = d.mem[:0x4000]
	const data = 0x3800
	if indirect {
		d.addIndirect(0x3400, buf{data, 16, false}, buf{data + 16, 16, true})
	} else {
		d.addChain(buf{data, 16, false}, buf{data + 16, 16, true})
	}
	if loop {
		d.setDesc(testDesc, 3, data, 1, descFNext, 2)
		d.setDesc(testDesc, 2, data, 1, descFNext, 3)
		d.publish(3)
	}
	return d.mem
}

func FuzzQueuePop(f *testing.F) {
	f.Add(seedQueue(false, false), uint8(2), uint16(testDesc), uint16(testAvail), uint16(testUsed), false, false, uint32(0))
	f.Add(seedQueue(true, false), uint8(2), uint16(testDesc), uint16(testAvail), uint16(testUsed), true, true, uint32(0))
	f.Add(seedQueue(false, true), uint8(2), uint16(testDesc), uint16(testAvail), uint16(testUsed), true, false, uint32(20))
	f.Add(make([]byte, 64), uint8(0), uint16(0), uint16(16), uint16(32), false, false, uint32(0))
	f.Fuzz(func(t *testing.T, mem []byte, sizeLog uint8, desc, avail, used uint16, eventIdx, withRange bool, maxBytes uint32) {
		if len(mem) > 1<<20 {
			mem = mem[:1<<20]
		}
		m := make(SliceMemory, len(mem))
		copy(m, mem)
		cm := &countingMemory{m: m}
		var gm Memory = cm
		if withRange {
			gm = countingRangeMemory{cm}
		}
		size := uint16(1) << (sizeLog % 16)
		q, err := NewQueue(gm, QueueConfig{Size: size, DescTable: uint64(desc), DriverArea: uint64(avail),
			DeviceArea: uint64(used), EventIdx: eventIdx, MaxChainBytes: maxBytes})
		if err != nil {
			if !errors.Is(err, ErrBadQueue) && !errors.Is(err, ErrOutOfRange) {
				t.Fatalf("NewQueue error %v wraps no sentinel", err)
			}
			return
		}
		// Reads per Pop: avail idx twice, head, each descriptor (at most
		// Size + MaxIndirectEntries) and, without RangeChecker, two probes
		// per buffer or table.
		bound := 3*(int(size)+MaxIndirectEntries) + 8
		for range min(2*int(size)+2, 64) {
			cm.reads = 0
			c, err := q.Pop(gm)
			if cm.reads > bound {
				t.Fatalf("Pop read memory %d times, bound %d", cm.reads, bound)
			}
			if err != nil {
				if !errors.Is(err, ErrOutOfRange) && !errors.Is(err, ErrLoop) && !errors.Is(err, ErrBadOrder) &&
					!errors.Is(err, ErrTooLong) && !errors.Is(err, ErrIndirect) && !errors.Is(err, ErrAvailIdx) {
					t.Fatalf("Pop error %v wraps no sentinel", err)
				}
				continue
			}
			if c == nil {
				break
			}
			if c.Head >= size {
				t.Fatalf("head %d >= size %d", c.Head, size)
			}
			var total uint64
			for _, d := range append(append([]Desc(nil), c.Readable...), c.Writable...) {
				if d.Len == 0 || d.Addr+uint64(d.Len) < d.Addr || d.Addr+uint64(d.Len) > uint64(len(m)) {
					t.Fatalf("descriptor %+v outside %d bytes of memory", d, len(m))
				}
				total += uint64(d.Len)
			}
			if total > uint64(q.Config().MaxChainBytes) {
				t.Fatalf("chain of %d bytes over limit %d", total, q.Config().MaxChainBytes)
			}
			if _, err := c.ReadAll(gm, 1<<20); err != nil && !errors.Is(err, ErrTooLong) {
				t.Fatalf("ReadAll of a validated chain: %v", err)
			}
			if _, err := c.WriteAll(gm, make([]byte, 64)); err != nil && !errors.Is(err, ErrTooLong) {
				t.Fatalf("WriteAll of a validated chain: %v", err)
			}
			if err := q.Push(gm, c.Head, 1); err != nil {
				t.Fatalf("Push: %v", err)
			}
			if _, err := q.NeedsNotify(gm); err != nil {
				t.Fatalf("NeedsNotify: %v", err)
			}
		}
	})
}

// popDevice is a Device that drains its queues on every notification, so
// that fuzzed register sequences also reach the ring code.
type popDevice struct {
	fakeDevice
	t   *MMIO
	mem Memory
	qs  []*Queue
}

func (p *popDevice) Activate(m Memory, qs []*Queue) error {
	p.mem, p.qs = m, qs
	return nil
}
func (p *popDevice) Reset() { p.qs = nil }
func (p *popDevice) Notify(i int) {
	q := p.qs[i]
	if q == nil {
		return
	}
	for range 64 {
		c, err := q.Pop(p.mem)
		if err != nil {
			p.t.SetNeedsReset()
			return
		}
		if c == nil {
			return
		}
		_, _ = c.WriteAll(p.mem, []byte("fuzz"))
		if err := q.Push(p.mem, c.Head, 4); err != nil {
			p.t.SetNeedsReset()
			return
		}
		if n, err := q.NeedsNotify(p.mem); err == nil && n {
			p.t.SignalUsed()
		}
	}
}

// mmioOp encodes one register access for FuzzMMIO: kind (bit 0: write;
// bits 1-2: size 1, 2, 4 or 8), offset/4 (bits 0-6) plus offset%4 (bit 7
// selects +1), then a 4-byte little-endian value.
func mmioOp(write bool, off uint64, v uint32) []byte {
	kind := byte(2 << 1) // size 4
	if write {
		kind |= 1
	}
	return binary.LittleEndian.AppendUint32([]byte{kind, byte(off / 4)}, v)
}

func mmioInitSeed() []byte {
	var s []byte
	w := func(off uint64, v uint32) { s = append(s, mmioOp(true, off, v)...) }
	w(regStatus, StatusAcknowledge)
	w(regStatus, StatusAcknowledge|StatusDriver)
	w(regDriverFeaturesSel, 1)
	w(regDriverFeatures, 1)
	w(regDriverFeaturesSel, 0)
	w(regDriverFeatures, FeatureRingEventIdx|FeatureIndirectDesc)
	w(regStatus, StatusAcknowledge|StatusDriver|StatusFeaturesOK)
	w(regQueueSel, 0)
	w(regQueueNum, 4)
	w(regQueueDescLow, testDesc)
	w(regQueueDriverLow, testAvail)
	w(regQueueDeviceLow, testUsed)
	w(regQueueReady, 1)
	w(regStatus, statusUp)
	w(regQueueNotify, 0)
	s = append(s, mmioOp(false, regInterruptStatus, 0)...)
	w(regInterruptACK, 1)
	w(regStatus, 0)
	return s
}

func FuzzMMIO(f *testing.F) {
	f.Add(mmioInitSeed(), seedQueue(false, false))
	f.Add(mmioInitSeed(), seedQueue(true, true))
	f.Add(append(mmioOp(true, 0x100, 0xffffffff), mmioOp(false, 0x1fc, 0)...), []byte{})
	f.Fuzz(func(t *testing.T, ops, mem []byte) {
		m := make(SliceMemory, 0x4000)
		copy(m, mem)
		dev := &popDevice{fakeDevice: fakeDevice{features: 1, maxSize: []uint16{4, 8}}}
		tr := NewMMIO(dev, m, func(bool) {})
		dev.t = tr
		for len(ops) >= 6 {
			kind, offByte, v := ops[0], ops[1], binary.LittleEndian.Uint32(ops[2:6])
			ops = ops[6:]
			off := uint64(offByte&0x7f) * 4
			if offByte&0x80 != 0 {
				off += ConfigOffset + 1
			}
			p := binary.LittleEndian.AppendUint64(nil, uint64(v))[:1<<((kind>>1)&3)]
			if kind&1 != 0 {
				tr.Write(off, p)
			} else {
				tr.Read(off, p)
			}
		}
		// Whatever happened, a reset returns the device to zero.
		tr.Write(regStatus, le32(0))
		var b [4]byte
		tr.Read(regStatus, b[:])
		if b != [4]byte{} {
			t.Fatalf("Status after reset = % x", b)
		}
	})
}

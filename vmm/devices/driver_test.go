package devices

import (
	"encoding/binary"
	"testing"

	"github.com/greatjail/cvm/vmm/virtio"
)

// A minimal guest driver for tests: it brings up a device through the
// virtio-mmio registers the way Linux does, lays out queue 0 in a
// SliceMemory and adds chains to it.

const (
	drvDesc  = 0x1000
	drvAvail = 0x3000
	drvUsed  = 0x4000
	drvData  = 0x10000
	drvMem   = 0x100000
	drvSize  = 16

	// MMIO register offsets (virtio 1.2 §4.2.2).
	regDeviceID       = 0x008
	regDeviceFeatures = 0x010
	regDevFeatSel     = 0x014
	regDriverFeatures = 0x020
	regDrvFeatSel     = 0x024
	regQueueSel       = 0x030
	regQueueNum       = 0x038
	regQueueReady     = 0x044
	regQueueNotify    = 0x050
	regInterruptACK   = 0x064
	regStatus         = 0x070
	regQueueDescLow   = 0x080
	regQueueDriverLow = 0x090
	regQueueDeviceLow = 0x0a0

	descFNext  = 1
	descFWrite = 2
)

type testDriver struct {
	t        testing.TB
	mem      virtio.SliceMemory
	mmio     *virtio.MMIO
	irqs     int
	nextDesc uint16
	availIdx uint16
	lastUsed uint16
	features uint64 // offered by the device
}

type buf struct {
	addr  uint64
	len   uint32
	write bool
}

type usedElem struct{ ID, Len uint32 }

// attacher is a device that signals through the transport.
type attacher interface {
	virtio.Device
	Attach(Signaler)
}

// newTestDriver wires dev to a transport over fresh memory and runs the
// driver initialization sequence, negotiating VERSION_1 and the device's
// own features.
func newTestDriver(t testing.TB, dev attacher) *testDriver {
	t.Helper()
	d := &testDriver{t: t, mem: make(virtio.SliceMemory, drvMem)}
	d.mmio = virtio.NewMMIO(dev, d.mem, func(level bool) {
		if level {
			d.irqs++
		}
	})
	dev.Attach(d.mmio)
	d.w(regStatus, virtio.StatusAcknowledge)
	d.w(regStatus, virtio.StatusAcknowledge|virtio.StatusDriver)
	d.w(regDevFeatSel, 0)
	lo := d.r(regDeviceFeatures)
	d.w(regDevFeatSel, 1)
	hi := d.r(regDeviceFeatures)
	d.features = uint64(hi)<<32 | uint64(lo)
	want := d.features &^ (virtio.FeatureRingEventIdx | virtio.FeatureIndirectDesc)
	d.w(regDrvFeatSel, 0)
	d.w(regDriverFeatures, uint32(want))
	d.w(regDrvFeatSel, 1)
	d.w(regDriverFeatures, uint32(want>>32))
	d.w(regStatus, virtio.StatusAcknowledge|virtio.StatusDriver|virtio.StatusFeaturesOK)
	d.w(regQueueSel, 0)
	d.w(regQueueNum, drvSize)
	d.w(regQueueDescLow, drvDesc)
	d.w(regQueueDriverLow, drvAvail)
	d.w(regQueueDeviceLow, drvUsed)
	d.w(regQueueReady, 1)
	d.w(regStatus, virtio.StatusAcknowledge|virtio.StatusDriver|virtio.StatusFeaturesOK|virtio.StatusDriverOK)
	if s := d.mmio.Status(); s&virtio.StatusDriverOK == 0 || s&virtio.StatusNeedsReset != 0 {
		t.Fatalf("device status after init = %#x, want DRIVER_OK without NEEDS_RESET", s)
	}
	return d
}

func (d *testDriver) w(off uint64, v uint32) {
	var p [4]byte
	binary.LittleEndian.PutUint32(p[:], v)
	d.mmio.Write(off, p[:])
}

func (d *testDriver) r(off uint64) uint32 {
	var p [4]byte
	d.mmio.Read(off, p[:])
	return binary.LittleEndian.Uint32(p[:])
}

// addChain writes bufs as linked descriptors and publishes the head.
func (d *testDriver) addChain(bufs ...buf) uint16 {
	head := d.nextDesc
	for i, b := range bufs {
		slot := (head + uint16(i)) % drvSize
		var flags uint16
		if b.write {
			flags |= descFWrite
		}
		var next uint16
		if i < len(bufs)-1 {
			flags |= descFNext
			next = (slot + 1) % drvSize
		}
		e := d.mem[drvDesc+16*uint64(slot):]
		binary.LittleEndian.PutUint64(e[0:], b.addr)
		binary.LittleEndian.PutUint32(e[8:], b.len)
		binary.LittleEndian.PutUint16(e[12:], flags)
		binary.LittleEndian.PutUint16(e[14:], next)
	}
	d.nextDesc = (head + uint16(len(bufs))) % drvSize
	binary.LittleEndian.PutUint16(d.mem[drvAvail+4+2*uint64(d.availIdx%drvSize):], head)
	d.availIdx++
	binary.LittleEndian.PutUint16(d.mem[drvAvail+2:], d.availIdx)
	return head
}

// kick notifies queue 0 and returns the used elements added since the last
// kick.
func (d *testDriver) kick() []usedElem {
	d.w(regQueueNotify, 0)
	idx := binary.LittleEndian.Uint16(d.mem[drvUsed+2:])
	var out []usedElem
	for ; d.lastUsed != idx; d.lastUsed++ {
		e := d.mem[drvUsed+4+8*uint64(d.lastUsed%drvSize):]
		out = append(out, usedElem{binary.LittleEndian.Uint32(e), binary.LittleEndian.Uint32(e[4:])})
	}
	return out
}

func (d *testDriver) needsReset() bool { return d.mmio.Status()&virtio.StatusNeedsReset != 0 }

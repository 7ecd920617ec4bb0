package virtio

import (
	"encoding/binary"
	"sync"
)

// Device status bits (virtio 1.2 §2.1).
const (
	StatusAcknowledge = 0x01
	StatusDriver      = 0x02
	StatusDriverOK    = 0x04
	StatusFeaturesOK  = 0x08
	StatusNeedsReset  = 0x40
	StatusFailed      = 0x80
)

// Feature bits the transport and the queues implement (virtio 1.2 §6).
const (
	FeatureIndirectDesc = 1 << 28 // VIRTIO_F_INDIRECT_DESC
	FeatureRingEventIdx = 1 << 29 // VIRTIO_F_RING_EVENT_IDX
	FeatureVersion1     = 1 << 32 // VIRTIO_F_VERSION_1
	// FeatureAccessPlatform (VIRTIO_F_ACCESS_PLATFORM) is not offered by
	// the transport; a device for a confidential guest, whose driver
	// insists on it, adds it to its own Features.
	FeatureAccessPlatform = 1 << 33

	// TransportFeatures are offered on top of every Device's Features.
	TransportFeatures = FeatureIndirectDesc | FeatureRingEventIdx | FeatureVersion1
)

// Interrupt status bits (virtio 1.2 §4.2.2, InterruptStatus).
const (
	InterruptUsedBuffer   = 0x1
	InterruptConfigChange = 0x2
)

// MMIO register offsets (virtio 1.2 §4.2.2, version 2 layout).
const (
	regMagicValue        = 0x000
	regVersion           = 0x004
	regDeviceID          = 0x008
	regVendorID          = 0x00c
	regDeviceFeatures    = 0x010
	regDeviceFeaturesSel = 0x014
	regDriverFeatures    = 0x020
	regDriverFeaturesSel = 0x024
	regQueueSel          = 0x030
	regQueueNumMax       = 0x034
	regQueueNum          = 0x038
	regQueueReady        = 0x044
	regQueueNotify       = 0x050
	regInterruptStatus   = 0x060
	regInterruptACK      = 0x064
	regStatus            = 0x070
	regQueueDescLow      = 0x080
	regQueueDescHigh     = 0x084
	regQueueDriverLow    = 0x090
	regQueueDriverHigh   = 0x094
	regQueueDeviceLow    = 0x0a0
	regQueueDeviceHigh   = 0x0a4
	regSHMLenLow         = 0x0b0
	regSHMLenHigh        = 0x0b4
	regSHMBaseLow        = 0x0b8
	regSHMBaseHigh       = 0x0bc
	regConfigGeneration  = 0x0fc

	// ConfigOffset is where device-specific configuration space starts.
	ConfigOffset = 0x100
	// MagicValue is "virt" in little-endian.
	MagicValue = 0x74726976
	// VendorID is what the transport reports as VendorID.
	VendorID = 0x554d4551 // "QEMU", as Firecracker and QEMU report
)

// Device is a virtio device model behind the MMIO transport.
//
// ConfigRead, ConfigWrite, QueueMaxSize, NumQueues, Activate, Reset and
// Notify are called with the transport's register lock held: they must not
// call MMIO.Read or MMIO.Write, must not block for long (Notify should wake
// the device's own goroutine), and may call MMIO.SignalUsed,
// MMIO.ConfigChanged and MMIO.SetNeedsReset.
type Device interface {
	// Type is the virtio device ID (2 block, 4 rng, 19 vsock).
	Type() uint32
	// Features are the device-specific feature bits it offers; the
	// transport adds TransportFeatures.
	Features() uint64
	// ConfigRead fills p from configuration space at off; off and len(p)
	// are guest-chosen and may lie beyond the config, which the device
	// must tolerate (fill zeros).
	ConfigRead(off uint64, p []byte)
	// ConfigWrite writes configuration space; like ConfigRead it must
	// tolerate any offset and length.
	ConfigWrite(off uint64, p []byte)
	// QueueMaxSize is the largest size queue i may have.
	QueueMaxSize(i int) uint16
	// NumQueues is the number of virtqueues.
	NumQueues() int
	// Activate starts the device once the driver set DRIVER_OK. qs has
	// NumQueues entries; a queue the driver did not make ready is nil. An
	// error sets DEVICE_NEEDS_RESET.
	Activate(m Memory, qs []*Queue) error
	// Reset stops the device: when it returns the device no longer
	// touches its queues. It is called on a driver reset after Activate.
	Reset()
	// Notify tells the device that the driver kicked queue i.
	Notify(queue int)
}

// queueRegs is the driver-programmed state of one queue.
type queueRegs struct {
	num                  uint16
	ready                bool
	desc, driver, device uint64
	q                    *Queue
}

// MMIO is the virtio-mmio (version 2) register file of one device. Read and
// Write are what the VMM calls on an MMIO exit at offsets within the
// device's window. It is safe for concurrent use.
type MMIO struct {
	dev Device
	mem Memory
	irq func(level bool)

	// mu guards the register state below and serializes the Device
	// callbacks. Lock order: mu, then sigMu.
	mu          sync.Mutex
	status      uint8
	devFeatSel  uint32
	drvFeatSel  uint32
	drvFeatures uint64
	queueSel    uint32
	queues      []queueRegs
	activated   bool

	// sigMu guards the state that devices change from their own
	// goroutines. irq is called with sigMu held, so interrupt level
	// changes reach it in order; irq must not call back into the MMIO.
	sigMu      sync.Mutex
	intStatus  uint32
	needsReset bool
	configGen  uint32
}

// NewMMIO returns the transport for d over guest memory m, in the reset
// state. irq sets the device's interrupt line: it is called with true each
// time the device signals (so an edge-triggered irqfd works too) and with
// false when the driver acknowledges every pending interrupt.
func NewMMIO(d Device, m Memory, irq func(level bool)) *MMIO {
	return &MMIO{dev: d, mem: m, irq: irq, queues: make([]queueRegs, d.NumQueues())}
}

// SignalUsed raises the used-buffer interrupt; a device calls it after
// Queue.NeedsNotify reported true.
func (t *MMIO) SignalUsed() { t.signal(InterruptUsedBuffer) }

// ConfigChanged bumps ConfigGeneration and raises the configuration-change
// interrupt; a device calls it after changing its configuration space.
func (t *MMIO) ConfigChanged() {
	t.sigMu.Lock()
	t.configGen++
	t.sigMu.Unlock()
	t.signal(InterruptConfigChange)
}

// SetNeedsReset sets DEVICE_NEEDS_RESET and raises the configuration-change
// interrupt, as the spec asks of a device that met an error it cannot
// recover from (such as a malformed descriptor chain).
func (t *MMIO) SetNeedsReset() {
	t.sigMu.Lock()
	t.needsReset = true
	t.sigMu.Unlock()
	t.signal(InterruptConfigChange)
}

func (t *MMIO) signal(bit uint32) {
	t.sigMu.Lock()
	defer t.sigMu.Unlock()
	t.intStatus |= bit
	if t.irq != nil {
		t.irq(true)
	}
}

// Status returns the device status register as the driver reads it.
func (t *MMIO) Status() uint8 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.statusLocked()
}

func (t *MMIO) statusLocked() uint8 {
	t.sigMu.Lock()
	defer t.sigMu.Unlock()
	s := t.status
	if t.needsReset {
		s |= StatusNeedsReset
	}
	return s
}

func (t *MMIO) offered() uint64 { return t.dev.Features() | TransportFeatures }

// Read handles a guest load of len(p) bytes at offset off in the device's
// window. Registers below ConfigOffset take only aligned 4-byte loads;
// anything else, and write-only registers, read as zero.
func (t *MMIO) Read(off uint64, p []byte) {
	clear(p)
	t.mu.Lock()
	defer t.mu.Unlock()
	if off >= ConfigOffset {
		t.dev.ConfigRead(off-ConfigOffset, p)
		return
	}
	if len(p) != 4 || off%4 != 0 {
		return
	}
	var v uint32
	switch off {
	case regMagicValue:
		v = MagicValue
	case regVersion:
		v = 2
	case regDeviceID:
		v = t.dev.Type()
	case regVendorID:
		v = VendorID
	case regDeviceFeatures:
		switch t.devFeatSel {
		case 0:
			v = uint32(t.offered())
		case 1:
			v = uint32(t.offered() >> 32)
		}
	case regQueueNumMax:
		if q := t.selected(); q != nil {
			v = uint32(min(t.dev.QueueMaxSize(int(t.queueSel)), MaxQueueSize))
		}
	case regQueueReady:
		if q := t.selected(); q != nil && q.ready {
			v = 1
		}
	case regInterruptStatus:
		t.sigMu.Lock()
		v = t.intStatus
		t.sigMu.Unlock()
	case regStatus:
		v = uint32(t.statusLocked())
	case regSHMLenLow, regSHMLenHigh:
		v = 0xffffffff // no shared memory regions: length -1
	case regSHMBaseLow, regSHMBaseHigh:
		v = 0xffffffff
	case regConfigGeneration:
		t.sigMu.Lock()
		v = t.configGen
		t.sigMu.Unlock()
	}
	binary.LittleEndian.PutUint32(p, v)
}

// selected returns the registers of the queue QueueSel names, or nil.
// Preconditions: t.mu held.
func (t *MMIO) selected() *queueRegs {
	if uint64(t.queueSel) >= uint64(len(t.queues)) {
		return nil
	}
	return &t.queues[t.queueSel]
}

// Write handles a guest store of p at offset off in the device's window.
// Registers below ConfigOffset take only aligned 4-byte stores; others are
// ignored. A store the protocol forbids at this point sets
// DEVICE_NEEDS_RESET.
func (t *MMIO) Write(off uint64, p []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if off >= ConfigOffset {
		t.dev.ConfigWrite(off-ConfigOffset, p)
		return
	}
	if len(p) != 4 || off%4 != 0 {
		return
	}
	v := binary.LittleEndian.Uint32(p)
	switch off {
	case regDeviceFeaturesSel:
		t.devFeatSel = v
	case regDriverFeaturesSel:
		t.drvFeatSel = v
	case regDriverFeatures:
		if t.status&(StatusDriver|StatusFeaturesOK) != StatusDriver {
			t.misbehaved()
			return
		}
		switch t.drvFeatSel {
		case 0:
			t.drvFeatures = t.drvFeatures&^0xffffffff | uint64(v)
		case 1:
			t.drvFeatures = t.drvFeatures&0xffffffff | uint64(v)<<32
		default:
			if v != 0 {
				t.misbehaved() // no such feature bits can be offered
			}
		}
	case regQueueSel:
		t.queueSel = v
	case regQueueNum, regQueueDescLow, regQueueDescHigh, regQueueDriverLow,
		regQueueDriverHigh, regQueueDeviceLow, regQueueDeviceHigh, regQueueReady:
		t.writeQueue(off, v)
	case regQueueNotify:
		if t.activated && uint64(v) < uint64(len(t.queues)) {
			t.dev.Notify(int(v))
		}
	case regInterruptACK:
		t.sigMu.Lock()
		t.intStatus &^= v
		if t.intStatus == 0 && t.irq != nil {
			t.irq(false)
		}
		t.sigMu.Unlock()
	case regStatus:
		t.writeStatus(uint8(v))
	}
}

// writeQueue handles the per-queue registers. The driver may program a
// queue only between FEATURES_OK and DRIVER_OK, and only while it is not
// ready. Preconditions: t.mu held.
func (t *MMIO) writeQueue(off uint64, v uint32) {
	q := t.selected()
	if off == regQueueReady && v == 0 && q != nil && t.status&StatusDriverOK == 0 {
		// Linux disables queues this way after a reset, too.
		q.ready, q.q = false, nil
		return
	}
	if q == nil || t.status&(StatusFeaturesOK|StatusDriverOK) != StatusFeaturesOK {
		t.misbehaved()
		return
	}
	if off == regQueueReady {
		t.setReady(q, v)
		return
	}
	if q.ready {
		t.misbehaved()
		return
	}
	lo := func(x uint64) uint64 { return x&^0xffffffff | uint64(v) }
	hi := func(x uint64) uint64 { return x&0xffffffff | uint64(v)<<32 }
	switch off {
	case regQueueNum:
		maxSize := uint32(t.dev.QueueMaxSize(int(t.queueSel)))
		if v == 0 || v > maxSize || v > MaxQueueSize || v&(v-1) != 0 {
			t.misbehaved()
			return
		}
		q.num = uint16(v)
	case regQueueDescLow:
		q.desc = lo(q.desc)
	case regQueueDescHigh:
		q.desc = hi(q.desc)
	case regQueueDriverLow:
		q.driver = lo(q.driver)
	case regQueueDriverHigh:
		q.driver = hi(q.driver)
	case regQueueDeviceLow:
		q.device = lo(q.device)
	case regQueueDeviceHigh:
		q.device = hi(q.device)
	}
}

// setReady checks the queue's configuration when the driver marks it ready.
// Preconditions: t.mu held.
func (t *MMIO) setReady(q *queueRegs, v uint32) {
	switch v {
	case 1:
		if q.ready {
			return
		}
		qq, err := NewQueue(t.mem, QueueConfig{
			Size:      q.num,
			DescTable: q.desc, DriverArea: q.driver, DeviceArea: q.device,
			EventIdx: t.drvFeatures&FeatureRingEventIdx != 0,
		})
		if err != nil {
			t.misbehaved()
			return
		}
		q.ready, q.q = true, qq
	default:
		t.misbehaved()
	}
}

// writeStatus applies a driver write to the Status register: 0 resets the
// device; otherwise bits are only ever added, in the order ACKNOWLEDGE,
// DRIVER, FEATURES_OK, DRIVER_OK. DRIVER_OK sticks only if the device was
// activated. Preconditions: t.mu held.
func (t *MMIO) writeStatus(v uint8) {
	if v == 0 {
		t.reset()
		return
	}
	v &^= StatusNeedsReset // the device's bit, not the driver's
	old := t.status
	if old&^v != 0 {
		t.misbehaved() // the driver may not clear bits but by reset
		return
	}
	added := v &^ old
	if added&StatusFailed != 0 {
		t.status |= StatusFailed
		added &^= StatusFailed
	}
	if added&StatusAcknowledge != 0 {
		t.status |= StatusAcknowledge
	}
	if added&StatusDriver != 0 {
		if t.status&StatusAcknowledge == 0 {
			t.misbehaved()
			return
		}
		t.status |= StatusDriver
	}
	if added&StatusFeaturesOK != 0 {
		if t.status&StatusDriver == 0 {
			t.misbehaved()
			return
		}
		// Features the device did not offer, or no VERSION_1: leave
		// FEATURES_OK clear; the driver reads it back and gives up, as
		// the spec describes.
		if f := t.drvFeatures; f&^t.offered() == 0 && f&FeatureVersion1 != 0 {
			t.status |= StatusFeaturesOK
		}
	}
	if added&StatusDriverOK != 0 {
		if t.status&StatusFeaturesOK == 0 {
			t.misbehaved()
			return
		}
		if t.activate() {
			t.status |= StatusDriverOK
		}
	}
	if added&^(StatusAcknowledge|StatusDriver|StatusFeaturesOK|StatusDriverOK|StatusFailed) != 0 {
		t.misbehaved() // reserved bits
	}
}

// activate hands the ready queues to the device, unless it already needs a
// reset, and reports whether the device is now active. Preconditions: t.mu
// held.
func (t *MMIO) activate() bool {
	if t.activated {
		return true
	}
	t.sigMu.Lock()
	broken := t.needsReset
	t.sigMu.Unlock()
	if broken {
		return false
	}
	qs := make([]*Queue, len(t.queues))
	for i := range t.queues {
		qs[i] = t.queues[i].q
	}
	if err := t.dev.Activate(t.mem, qs); err != nil {
		t.misbehaved()
		return false
	}
	t.activated = true
	return true
}

// reset returns the transport to its initial state, stopping the device
// first if it was active. Preconditions: t.mu held.
func (t *MMIO) reset() {
	if t.activated {
		t.dev.Reset()
		t.activated = false
	}
	t.status, t.devFeatSel, t.drvFeatSel, t.drvFeatures, t.queueSel = 0, 0, 0, 0, 0
	clear(t.queues)
	t.sigMu.Lock()
	pending := t.intStatus != 0
	t.intStatus, t.needsReset = 0, false
	if pending && t.irq != nil {
		t.irq(false)
	}
	t.sigMu.Unlock()
}

// misbehaved records a driver protocol violation: DEVICE_NEEDS_RESET, and a
// configuration-change interrupt if the driver is already running.
// Preconditions: t.mu held.
func (t *MMIO) misbehaved() {
	t.sigMu.Lock()
	defer t.sigMu.Unlock()
	t.needsReset = true
	if t.status&StatusDriverOK != 0 {
		t.intStatus |= InterruptConfigChange
		if t.irq != nil {
			t.irq(true)
		}
	}
}

package virtio

import (
	"encoding/binary"
	"errors"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fakeDevice records the transport's calls.
type fakeDevice struct {
	features    uint64
	maxSize     []uint16
	config      [8]byte
	activateErr error

	activations [][]QueueConfig // the config of each queue passed (zero for nil)
	queues      []*Queue
	resets      int
	notifies    []int
}

func (f *fakeDevice) Type() uint32     { return 4 }
func (f *fakeDevice) Features() uint64 { return f.features }
func (f *fakeDevice) ConfigRead(off uint64, p []byte) {
	if off < uint64(len(f.config)) {
		copy(p, f.config[off:])
	}
}
func (f *fakeDevice) ConfigWrite(off uint64, p []byte) {
	if off < uint64(len(f.config)) {
		copy(f.config[off:], p)
	}
}
func (f *fakeDevice) QueueMaxSize(i int) uint16 { return f.maxSize[i] }
func (f *fakeDevice) NumQueues() int            { return len(f.maxSize) }
func (f *fakeDevice) Activate(m Memory, qs []*Queue) error {
	if f.activateErr != nil {
		return f.activateErr
	}
	var cfgs []QueueConfig
	for _, q := range qs {
		var c QueueConfig
		if q != nil {
			c = q.Config()
		}
		cfgs = append(cfgs, c)
	}
	f.activations = append(f.activations, cfgs)
	f.queues = qs
	return nil
}
func (f *fakeDevice) Reset()           { f.resets++ }
func (f *fakeDevice) Notify(q int)     { f.notifies = append(f.notifies, q) }
func newFakeDevice() *fakeDevice       { return &fakeDevice{features: 1 << 0, maxSize: []uint16{256, 16}} }
func le32(v uint32) []byte             { return binary.LittleEndian.AppendUint32(nil, v) }
func (r *regs) w(off uint64, v uint32) { r.t.Write(off, le32(v)) }
func (r *regs) r(off uint64) uint32 {
	var b [4]byte
	r.t.Read(off, b[:])
	return binary.LittleEndian.Uint32(b[:])
}

type regs struct {
	t   *MMIO
	irq []bool
}

func newRegs(d Device, m Memory) *regs {
	r := &regs{}
	r.t = NewMMIO(d, m, func(level bool) { r.irq = append(r.irq, level) })
	return r
}

// queueLayout is where setupQueue places queue i.
func queueLayout(i int, num uint16) QueueConfig {
	base := uint64(0x4000 * (i + 1))
	return QueueConfig{Size: num, DescTable: base, DriverArea: base + 0x1000, DeviceArea: base + 0x2000}
}

func (r *regs) setupQueue(i int, num uint16) {
	c := queueLayout(i, num)
	r.w(regQueueSel, uint32(i))
	r.w(regQueueNum, uint32(num))
	r.w(regQueueDescLow, uint32(c.DescTable))
	r.w(regQueueDescHigh, uint32(c.DescTable>>32))
	r.w(regQueueDriverLow, uint32(c.DriverArea))
	r.w(regQueueDriverHigh, 0)
	r.w(regQueueDeviceLow, uint32(c.DeviceArea))
	r.w(regQueueDeviceHigh, 0)
	r.w(regQueueReady, 1)
}

// negotiate runs reset, ACKNOWLEDGE, DRIVER, features and FEATURES_OK.
func (r *regs) negotiate(features uint64) {
	r.w(regStatus, 0)
	r.w(regStatus, StatusAcknowledge)
	r.w(regStatus, StatusAcknowledge|StatusDriver)
	r.w(regDriverFeaturesSel, 1)
	r.w(regDriverFeatures, uint32(features>>32))
	r.w(regDriverFeaturesSel, 0)
	r.w(regDriverFeatures, uint32(features))
	r.w(regStatus, StatusAcknowledge|StatusDriver|StatusFeaturesOK)
}

const statusUp = StatusAcknowledge | StatusDriver | StatusFeaturesOK | StatusDriverOK

func TestMMIOInitSequence(t *testing.T) {
	dev := newFakeDevice()
	mem := make(SliceMemory, 0x20000)
	r := newRegs(dev, mem)

	ident := []uint32{r.r(regMagicValue), r.r(regVersion), r.r(regDeviceID), r.r(regVendorID)}
	if diff := cmp.Diff([]uint32{MagicValue, 2, 4, VendorID}, ident); diff != "" {
		t.Errorf("identification registers (-want +got):\n%s", diff)
	}
	r.w(regDeviceFeaturesSel, 0)
	lo := r.r(regDeviceFeatures)
	r.w(regDeviceFeaturesSel, 1)
	hi := r.r(regDeviceFeatures)
	r.w(regDeviceFeaturesSel, 2)
	beyond := r.r(regDeviceFeatures)
	if got, want := uint64(hi)<<32|uint64(lo), uint64(1|TransportFeatures); got != want || beyond != 0 {
		t.Errorf("DeviceFeatures = %#x (sel 2: %#x), want %#x (0)", got, beyond, want)
	}

	r.negotiate(FeatureVersion1 | FeatureRingEventIdx | 1)
	if got := r.r(regStatus); got != StatusAcknowledge|StatusDriver|StatusFeaturesOK {
		t.Fatalf("Status after FEATURES_OK = %#x", got)
	}
	r.w(regQueueSel, 0)
	if got := r.r(regQueueNumMax); got != 256 {
		t.Errorf("QueueNumMax[0] = %d, want 256", got)
	}
	r.w(regQueueSel, 2)
	if got := r.r(regQueueNumMax); got != 0 {
		t.Errorf("QueueNumMax[2] (no such queue) = %d, want 0", got)
	}
	r.setupQueue(0, 128)
	r.setupQueue(1, 16)
	if got := r.r(regQueueReady); got != 1 {
		t.Errorf("QueueReady[1] = %d, want 1", got)
	}
	if len(dev.activations) != 0 {
		t.Fatal("Activate called before DRIVER_OK")
	}
	r.w(regStatus, statusUp)
	if got := r.r(regStatus); got != statusUp {
		t.Errorf("Status = %#x, want %#x", got, statusUp)
	}
	q0, q1 := queueLayout(0, 128), queueLayout(1, 16)
	q0.EventIdx, q1.EventIdx = true, true
	q0.MaxChainBytes, q1.MaxChainBytes = DefaultMaxChainBytes, DefaultMaxChainBytes
	if diff := cmp.Diff([][]QueueConfig{{q0, q1}}, dev.activations); diff != "" {
		t.Errorf("Activate calls (-want +got):\n%s", diff)
	}
	r.w(regStatus, statusUp) // rewriting the same status activates nothing again
	if len(dev.activations) != 1 {
		t.Errorf("Activate called %d times, want 1", len(dev.activations))
	}

	r.w(regQueueNotify, 1)
	r.w(regQueueNotify, 2) // no such queue: ignored
	r.w(regQueueNotify, 0)
	if diff := cmp.Diff([]int{1, 0}, dev.notifies); diff != "" {
		t.Errorf("Notify calls (-want +got):\n%s", diff)
	}

	// Config space goes to the device.
	r.t.Write(ConfigOffset+2, []byte{0xaa, 0xbb})
	var b [4]byte
	r.t.Read(ConfigOffset, b[:])
	if b != [4]byte{0, 0, 0xaa, 0xbb} {
		t.Errorf("config read = % x", b)
	}

	r.w(regStatus, 0)
	if dev.resets != 1 || r.r(regStatus) != 0 {
		t.Errorf("after reset: resets = %d, Status = %#x", dev.resets, r.r(regStatus))
	}
	r.w(regQueueSel, 0)
	if got := r.r(regQueueReady); got != 0 {
		t.Errorf("QueueReady after reset = %d", got)
	}
	// And the device comes up again after a second init.
	r.negotiate(FeatureVersion1)
	r.setupQueue(0, 256)
	r.w(regStatus, statusUp)
	if len(dev.activations) != 2 || dev.activations[1][1] != (QueueConfig{}) {
		t.Errorf("second activation = %+v, want queue 1 nil", dev.activations)
	}
}

func TestMMIOBadSequences(t *testing.T) {
	okFeatures := uint64(FeatureVersion1 | 1)
	tests := []struct {
		name       string
		dev        func(d *fakeDevice)
		run        func(r *regs)
		wantStatus uint32
		activated  bool
	}{
		{
			name: "feature not offered",
			run: func(r *regs) {
				r.negotiate(FeatureVersion1 | 1<<1)
			},
			wantStatus: StatusAcknowledge | StatusDriver,
		},
		{
			name: "feature not offered, high word",
			run: func(r *regs) {
				r.negotiate(FeatureVersion1 | 1<<40)
			},
			wantStatus: StatusAcknowledge | StatusDriver,
		},
		{
			name:       "no VERSION_1",
			run:        func(r *regs) { r.negotiate(1) },
			wantStatus: StatusAcknowledge | StatusDriver,
		},
		{
			name: "DRIVER_OK after refused features",
			run: func(r *regs) {
				r.negotiate(1)
				r.w(regStatus, statusUp)
			},
			wantStatus: StatusAcknowledge | StatusDriver | StatusNeedsReset,
		},
		{
			name: "QueueNum over max",
			run: func(r *regs) {
				r.negotiate(okFeatures)
				r.setupQueue(1, 32)
				r.w(regStatus, statusUp)
			},
			wantStatus: StatusAcknowledge | StatusDriver | StatusFeaturesOK | StatusNeedsReset,
		},
		{
			name: "QueueNum not a power of two",
			run: func(r *regs) {
				r.negotiate(okFeatures)
				r.setupQueue(0, 100)
			},
			wantStatus: StatusAcknowledge | StatusDriver | StatusFeaturesOK | StatusNeedsReset,
		},
		{
			name: "ring outside memory",
			run: func(r *regs) {
				r.negotiate(okFeatures)
				r.w(regQueueSel, 0)
				r.w(regQueueNum, 8)
				r.w(regQueueDescHigh, 1)
				r.w(regQueueReady, 1)
			},
			wantStatus: StatusAcknowledge | StatusDriver | StatusFeaturesOK | StatusNeedsReset,
		},
		{
			name: "queue setup before FEATURES_OK",
			run: func(r *regs) {
				r.w(regStatus, StatusAcknowledge)
				r.w(regStatus, StatusAcknowledge|StatusDriver)
				r.setupQueue(0, 8)
			},
			wantStatus: StatusAcknowledge | StatusDriver | StatusNeedsReset,
		},
		{
			name: "queue reprogrammed while ready",
			run: func(r *regs) {
				r.negotiate(okFeatures)
				r.setupQueue(0, 8)
				r.w(regQueueNum, 4)
			},
			wantStatus: StatusAcknowledge | StatusDriver | StatusFeaturesOK | StatusNeedsReset,
		},
		{
			name: "DRIVER_OK without FEATURES_OK",
			run: func(r *regs) {
				r.w(regStatus, StatusAcknowledge)
				r.w(regStatus, StatusAcknowledge|StatusDriver|StatusDriverOK)
			},
			wantStatus: StatusAcknowledge | StatusDriver | StatusNeedsReset,
		},
		{
			name:       "DRIVER without ACKNOWLEDGE",
			run:        func(r *regs) { r.w(regStatus, StatusDriver) },
			wantStatus: StatusNeedsReset,
		},
		{
			name: "status bit cleared",
			run: func(r *regs) {
				r.w(regStatus, StatusAcknowledge)
				r.w(regStatus, StatusAcknowledge|StatusDriver)
				r.w(regStatus, StatusAcknowledge)
			},
			wantStatus: StatusAcknowledge | StatusDriver | StatusNeedsReset,
		},
		{
			name: "features written after FEATURES_OK",
			run: func(r *regs) {
				r.negotiate(okFeatures)
				r.w(regDriverFeatures, 0)
			},
			wantStatus: StatusAcknowledge | StatusDriver | StatusFeaturesOK | StatusNeedsReset,
		},
		{
			name: "Activate fails",
			dev:  func(d *fakeDevice) { d.activateErr = errors.New("no") },
			run: func(r *regs) {
				r.negotiate(okFeatures)
				r.setupQueue(0, 8)
				r.w(regStatus, statusUp)
			},
			wantStatus: StatusAcknowledge | StatusDriver | StatusFeaturesOK | StatusNeedsReset,
		},
		{
			name: "driver sets FAILED",
			run: func(r *regs) {
				r.w(regStatus, StatusAcknowledge)
				r.w(regStatus, StatusAcknowledge|StatusFailed)
			},
			wantStatus: StatusAcknowledge | StatusFailed,
		},
		{
			name: "wrong-size and unaligned register writes ignored",
			run: func(r *regs) {
				r.t.Write(regStatus, []byte{StatusAcknowledge})
				r.t.Write(regStatus, []byte{StatusAcknowledge, 0})
				r.t.Write(regStatus+1, le32(StatusAcknowledge))
				r.t.Write(regStatus, append(le32(StatusAcknowledge), 0, 0, 0, 0))
			},
			wantStatus: 0,
		},
		{
			name: "queue disabled after reset, as Linux does",
			run: func(r *regs) {
				r.negotiate(okFeatures)
				r.setupQueue(0, 8)
				r.w(regStatus, 0)
				r.w(regQueueSel, 0)
				r.w(regQueueReady, 0)
			},
			wantStatus: 0,
		},
		{
			name: "full init",
			run: func(r *regs) {
				r.negotiate(okFeatures)
				r.setupQueue(0, 8)
				r.w(regStatus, statusUp)
			},
			wantStatus: statusUp,
			activated:  true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dev := newFakeDevice()
			if tt.dev != nil {
				tt.dev(dev)
			}
			r := newRegs(dev, make(SliceMemory, 0x20000))
			tt.run(r)
			if got := r.r(regStatus); got != tt.wantStatus {
				t.Errorf("Status = %#x, want %#x", got, tt.wantStatus)
			}
			if got := len(dev.activations) > 0; got != tt.activated {
				t.Errorf("activated = %v, want %v", got, tt.activated)
			}
			// Whatever happened, a reset brings the device back to 0.
			r.w(regStatus, 0)
			if got := r.r(regStatus); got != 0 {
				t.Errorf("Status after reset = %#x", got)
			}
		})
	}
}

func TestMMIOUnalignedReads(t *testing.T) {
	r := newRegs(newFakeDevice(), make(SliceMemory, 0x1000))
	for _, tc := range []struct {
		off uint64
		n   int
	}{{regMagicValue, 2}, {regMagicValue, 1}, {regMagicValue + 1, 4}, {regMagicValue, 8}, {0x0fe, 2}} {
		p := []byte{9, 9, 9, 9, 9, 9, 9, 9}[:tc.n]
		r.t.Read(tc.off, p)
		for _, b := range p {
			if b != 0 {
				t.Errorf("Read(%#x, %d bytes) = % x, want zeros", tc.off, tc.n, p)
				break
			}
		}
	}
}

func TestMMIOInterrupts(t *testing.T) {
	dev := newFakeDevice()
	r := newRegs(dev, make(SliceMemory, 0x20000))
	r.negotiate(FeatureVersion1)
	r.setupQueue(0, 8)
	r.w(regStatus, statusUp)

	r.t.SignalUsed()
	if got := r.r(regInterruptStatus); got != InterruptUsedBuffer {
		t.Errorf("InterruptStatus = %#x, want used buffer", got)
	}
	r.t.ConfigChanged()
	if got := r.r(regInterruptStatus); got != InterruptUsedBuffer|InterruptConfigChange {
		t.Errorf("InterruptStatus = %#x, want both", got)
	}
	if got := r.r(regConfigGeneration); got != 1 {
		t.Errorf("ConfigGeneration = %d, want 1", got)
	}
	r.w(regInterruptACK, InterruptUsedBuffer)
	if got := r.r(regInterruptStatus); got != InterruptConfigChange {
		t.Errorf("InterruptStatus after ACK = %#x", got)
	}
	r.w(regInterruptACK, InterruptConfigChange)
	if got := r.r(regInterruptStatus); got != 0 {
		t.Errorf("InterruptStatus after second ACK = %#x", got)
	}
	if diff := cmp.Diff([]bool{true, true, false}, r.irq); diff != "" {
		t.Errorf("irq levels (-want +got):\n%s", diff)
	}

	// A protocol violation after DRIVER_OK raises a config interrupt.
	r.irq = nil
	r.w(regQueueNum, 4)
	if got, st := r.r(regInterruptStatus), r.r(regStatus); got != InterruptConfigChange || st&StatusNeedsReset == 0 {
		t.Errorf("after violation: InterruptStatus = %#x, Status = %#x", got, st)
	}
	// Reset drops the line and the pending bits.
	r.w(regStatus, 0)
	if diff := cmp.Diff([]bool{true, false}, r.irq); diff != "" {
		t.Errorf("irq levels (-want +got):\n%s", diff)
	}
	if got := r.r(regInterruptStatus); got != 0 {
		t.Errorf("InterruptStatus after reset = %#x", got)
	}

	// A device's own SetNeedsReset.
	r.t.SetNeedsReset()
	if got := r.r(regStatus); got != StatusNeedsReset {
		t.Errorf("Status after SetNeedsReset = %#x", got)
	}
}

// TestMMIOConcurrent drives the registers from several "vCPUs" while a
// "device goroutine" signals, for the race detector.
func TestMMIOConcurrent(t *testing.T) {
	dev := newFakeDevice()
	tr := NewMMIO(dev, make(SliceMemory, 0x20000), func(bool) {})
	r := &regs{t: tr}
	r.negotiate(FeatureVersion1)
	r.setupQueue(0, 8)
	r.w(regStatus, statusUp)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 2000 {
			tr.SignalUsed()
			tr.ConfigChanged()
		}
	}()
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			rr := &regs{t: tr}
			for range 2000 {
				rr.w(regInterruptACK, rr.r(regInterruptStatus))
				rr.r(regStatus)
				rr.r(regConfigGeneration)
			}
		})
	}
	wg.Wait()
	<-done
	if got := r.r(regConfigGeneration); got != 2000 {
		t.Errorf("ConfigGeneration = %d, want 2000", got)
	}
}

// TestMMIOEndToEnd brings a device up through the registers, then has the
// test driver add chains and kick: the device pops, answers and interrupts;
// a malformed chain makes it ask for a reset.
func TestMMIOEndToEnd(t *testing.T) {
	d := newTestDriver(t, 8)
	dev := &popDevice{fakeDevice: fakeDevice{maxSize: []uint16{8}}}
	r := newRegs(dev, d.mem)
	dev.t = r.t
	r.negotiate(FeatureVersion1)
	r.w(regQueueSel, 0)
	r.w(regQueueNum, 8)
	r.w(regQueueDescLow, testDesc)
	r.w(regQueueDriverLow, testAvail)
	r.w(regQueueDeviceLow, testUsed)
	r.w(regQueueReady, 1)
	r.w(regStatus, statusUp)

	h0 := d.addChain(buf{testData, 8, false}, buf{testData + 0x100, 8, true})
	h1 := d.addChain(buf{testData + 0x200, 2, true}, buf{testData + 0x300, 2, true})
	r.w(regQueueNotify, 0)
	if diff := cmp.Diff([]usedElem{{uint32(h0), 4}, {uint32(h1), 4}}, d.used()); diff != "" {
		t.Errorf("used ring (-want +got):\n%s", diff)
	}
	if got := string(d.mem[testData+0x200:testData+0x202]) + string(d.mem[testData+0x300:testData+0x302]); got != "fuzz" {
		t.Errorf("reply split over two buffers = %q", got)
	}
	if got := r.r(regInterruptStatus); got != InterruptUsedBuffer {
		t.Errorf("InterruptStatus = %#x, want used buffer", got)
	}

	d.setDesc(testDesc, 5, testData, 1, descFNext, 5) // a loop
	d.publish(5)
	r.w(regQueueNotify, 0)
	if got := r.r(regStatus); got&StatusNeedsReset == 0 {
		t.Errorf("Status after malformed chain = %#x, want DEVICE_NEEDS_RESET", got)
	}
}

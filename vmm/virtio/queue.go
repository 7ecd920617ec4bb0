package virtio

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
)

// Descriptor flags (virtio 1.2 §2.7.5).
const (
	descFNext     = 1
	descFWrite    = 2
	descFIndirect = 4

	descSize = 16

	// availFNoInterrupt is VIRTQ_AVAIL_F_NO_INTERRUPT.
	availFNoInterrupt = 1
)

const (
	// MaxQueueSize is the largest split virtqueue size (virtio 1.2 §2.7).
	MaxQueueSize = 32768
	// MaxIndirectEntries bounds an indirect table (a table of this many
	// entries is 512 KiB); longer tables are rejected with ErrIndirect.
	MaxIndirectEntries = 32768
	// DefaultMaxChainBytes is the chain length limit used when
	// QueueConfig.MaxChainBytes is zero.
	DefaultMaxChainBytes = 64 << 20
)

// QueueConfig places one split virtqueue in guest memory.
type QueueConfig struct {
	// Size is the number of descriptors: a power of two, 1..MaxQueueSize.
	Size uint16
	// DescTable, DriverArea (the available ring) and DeviceArea (the used
	// ring) are guest physical addresses aligned to 16, 2 and 4 bytes.
	DescTable, DriverArea, DeviceArea uint64
	// EventIdx is whether VIRTIO_F_RING_EVENT_IDX was negotiated.
	EventIdx bool
	// MaxChainBytes caps the summed length of one chain's buffers (readable
	// and writable together); 0 means DefaultMaxChainBytes.
	MaxChainBytes uint32
}

// Queue is the device side of one split virtqueue. It is not safe for
// concurrent use: one device goroutine owns it at a time.
type Queue struct {
	cfg       QueueConfig
	lastAvail uint16 // next avail ring entry the device will consume
	usedIdx   uint16 // the device's used->idx, as last published
	// signalled is usedIdx at the last NeedsNotify; with event idx it is
	// the "old" of vring_need_event.
	signalled uint16
	broken    bool // avail idx was seen out of range; Pop keeps failing
	// buf is scratch space for ring and descriptor accesses, so that
	// passing it to Memory does not allocate on every access.
	buf [descSize]byte
}

// Desc is one guest buffer of a chain.
type Desc struct {
	Addr uint64
	Len  uint32
}

// Chain is one descriptor chain taken from the available ring: the
// device-readable buffers, then the device-writable ones. Zero-length
// descriptors are dropped.
type Chain struct {
	Head     uint16
	Readable []Desc
	Writable []Desc
}

// NewQueue checks cfg against the virtio spec and guest memory m, and returns
// a queue whose indexes start at zero, as after a device reset.
func NewQueue(m Memory, cfg QueueConfig) (*Queue, error) {
	n := uint64(cfg.Size)
	if n == 0 || n > MaxQueueSize || n&(n-1) != 0 {
		return nil, fmt.Errorf("virtio: queue size %d is not a power of two in 1..%d: %w", n, MaxQueueSize, ErrBadQueue)
	}
	if cfg.DescTable%16 != 0 || cfg.DriverArea%2 != 0 || cfg.DeviceArea%4 != 0 {
		return nil, fmt.Errorf("virtio: queue rings misaligned (desc %#x, driver %#x, device %#x): %w",
			cfg.DescTable, cfg.DriverArea, cfg.DeviceArea, ErrBadQueue)
	}
	areas := []struct {
		name      string
		addr, len uint64
	}{
		{"descriptor table", cfg.DescTable, descSize * n},
		{"available ring", cfg.DriverArea, 6 + 2*n},
		{"used ring", cfg.DeviceArea, 6 + 8*n},
	}
	for _, a := range areas {
		if err := checkRange(m, a.addr, a.len); err != nil {
			return nil, fmt.Errorf("virtio: queue %s: %w", a.name, err)
		}
	}
	if cfg.MaxChainBytes == 0 {
		cfg.MaxChainBytes = DefaultMaxChainBytes
	}
	return &Queue{cfg: cfg}, nil
}

// Config returns the queue's configuration.
func (q *Queue) Config() QueueConfig { return q.cfg }

// LastAvail returns the index of the next available ring entry Pop consumes.
func (q *Queue) LastAvail() uint16 { return q.lastAvail }

// UsedIdx returns the used ring index the device last published.
func (q *Queue) UsedIdx() uint16 { return q.usedIdx }

// fence is a full memory barrier for the CPU: a locked read-modify-write is
// one on amd64 (and sequentially consistent atomics are on arm64). The
// virtqueue protocol needs it where a store must be visible before a later
// load (publish used idx, then read used_event; publish avail_event, then
// re-read avail idx).
var fenceWord atomic.Uint32

func fence() { fenceWord.Add(1) }

func (q *Queue) read16(m Memory, gpa uint64) (uint16, error) {
	b := q.buf[:2]
	if err := m.ReadAt(b, gpa); err != nil {
		return 0, fmt.Errorf("virtio: read ring at %#x: %w", gpa, err)
	}
	return binary.LittleEndian.Uint16(b), nil
}

func (q *Queue) write16(m Memory, gpa uint64, v uint16) error {
	b := q.buf[:2]
	binary.LittleEndian.PutUint16(b, v)
	if err := m.WriteAt(b, gpa); err != nil {
		return fmt.Errorf("virtio: write ring at %#x: %w", gpa, err)
	}
	return nil
}

// availIdx reads avail->idx and checks it is at most Size entries ahead.
func (q *Queue) availIdx(m Memory) (uint16, error) {
	idx, err := q.read16(m, q.cfg.DriverArea+2)
	if err != nil {
		return 0, err
	}
	if pending := idx - q.lastAvail; pending > q.cfg.Size {
		q.broken = true
		return 0, fmt.Errorf("virtio: avail idx %d is %d entries past %d, queue size %d: %w",
			idx, pending, q.lastAvail, q.cfg.Size, ErrAvailIdx)
	}
	return idx, nil
}

// Pop takes the next chain from the available ring, or returns nil, nil when
// the ring is empty. With event idx it also publishes avail_event so that
// the driver notifies the device of the next entry, and re-checks the ring
// afterwards, so a device that sleeps after a nil Pop misses no notification.
//
// A malformed chain yields an error wrapping ErrOutOfRange, ErrLoop,
// ErrBadOrder, ErrTooLong or ErrIndirect; its head is consumed anyway, so a
// caller never spins on it. ErrAvailIdx is permanent until the queue is
// rebuilt. Either way the driver is broken, and the device should ask for a
// reset (MMIO.SetNeedsReset) rather than go on.
func (q *Queue) Pop(m Memory) (*Chain, error) {
	if q.broken {
		return nil, fmt.Errorf("virtio: queue unusable until reset: %w", ErrAvailIdx)
	}
	idx, err := q.availIdx(m)
	if err != nil {
		return nil, err
	}
	if idx == q.lastAvail {
		if !q.cfg.EventIdx {
			return nil, nil
		}
		if err := q.write16(m, q.availEventAddr(), q.lastAvail); err != nil {
			return nil, err
		}
		fence()
		if idx, err = q.availIdx(m); err != nil || idx == q.lastAvail {
			return nil, err
		}
	}
	// Reading the ring entry after avail->idx needs load-load ordering,
	// which amd64 gives; a weaker architecture would need a barrier here.
	slot := uint64(q.lastAvail % q.cfg.Size)
	head, err := q.read16(m, q.cfg.DriverArea+4+2*slot)
	if err != nil {
		return nil, err
	}
	q.lastAvail++
	c, err := q.walk(m, head)
	if err != nil {
		return nil, fmt.Errorf("virtio: chain at head %d: %w", head, err)
	}
	return c, nil
}

func (q *Queue) availEventAddr() uint64 { return q.cfg.DeviceArea + 4 + 8*uint64(q.cfg.Size) }
func (q *Queue) usedEventAddr() uint64  { return q.cfg.DriverArea + 4 + 2*uint64(q.cfg.Size) }

// walk follows one chain from head. Every loop iteration reads one
// descriptor and is bounded by the size of the table it is in, so a walk
// reads at most Size + MaxIndirectEntries descriptors.
func (q *Queue) walk(m Memory, head uint16) (*Chain, error) {
	c := &Chain{Head: head}
	table, tableLen := q.cfg.DescTable, uint32(q.cfg.Size)
	indirect := false
	idx := uint32(head)
	if idx >= tableLen {
		return nil, fmt.Errorf("virtio: head %d >= queue size %d: %w", idx, tableLen, ErrOutOfRange)
	}
	var total uint64
	raw := q.buf[:]
	for n := uint32(1); ; n++ {
		if n > tableLen {
			return nil, fmt.Errorf("virtio: more than %d descriptors: %w", tableLen, ErrLoop)
		}
		if err := m.ReadAt(raw, table+descSize*uint64(idx)); err != nil {
			return nil, fmt.Errorf("virtio: read descriptor %d: %w", idx, err)
		}
		addr := binary.LittleEndian.Uint64(raw[0:])
		length := binary.LittleEndian.Uint32(raw[8:])
		flags := binary.LittleEndian.Uint16(raw[12:])
		next := uint32(binary.LittleEndian.Uint16(raw[14:]))

		if flags&descFIndirect != 0 {
			switch {
			case indirect:
				return nil, fmt.Errorf("virtio: descriptor %d: nested indirect table: %w", idx, ErrIndirect)
			case flags&descFNext != 0:
				return nil, fmt.Errorf("virtio: descriptor %d: INDIRECT with NEXT: %w", idx, ErrIndirect)
			case length == 0 || length%descSize != 0 || length/descSize > MaxIndirectEntries:
				return nil, fmt.Errorf("virtio: descriptor %d: indirect table length %d: %w", idx, length, ErrIndirect)
			}
			if err := checkRange(m, addr, uint64(length)); err != nil {
				return nil, fmt.Errorf("virtio: descriptor %d: indirect table: %w", idx, err)
			}
			table, tableLen, indirect = addr, length/descSize, true
			idx, n = 0, 0
			continue
		}

		if length > 0 {
			if err := checkRange(m, addr, uint64(length)); err != nil {
				return nil, fmt.Errorf("virtio: descriptor %d: buffer: %w", idx, err)
			}
			total += uint64(length)
			if total > uint64(q.cfg.MaxChainBytes) {
				return nil, fmt.Errorf("virtio: chain over %d bytes: %w", q.cfg.MaxChainBytes, ErrTooLong)
			}
			d := Desc{Addr: addr, Len: length}
			if flags&descFWrite != 0 {
				c.Writable = append(c.Writable, d)
			} else if len(c.Writable) > 0 {
				return nil, fmt.Errorf("virtio: descriptor %d: %w", idx, ErrBadOrder)
			} else {
				c.Readable = append(c.Readable, d)
			}
		}
		if flags&descFNext == 0 {
			return c, nil
		}
		if next >= tableLen {
			return nil, fmt.Errorf("virtio: descriptor %d: next %d >= table size %d: %w", idx, next, tableLen, ErrOutOfRange)
		}
		idx = next
	}
}

// Push returns the chain with the given head to the driver, recording that
// the device wrote written bytes into it. It writes the used element first
// and used->idx second: on amd64 plain stores are not reordered with each
// other, so the driver never sees the new idx before the element, provided
// Memory's WriteAt stores in program order (see Memory). Call NeedsNotify
// afterwards to decide whether to interrupt the guest.
func (q *Queue) Push(m Memory, head uint16, written uint32) error {
	if head >= q.cfg.Size {
		return fmt.Errorf("virtio: push head %d >= queue size %d: %w", head, q.cfg.Size, ErrOutOfRange)
	}
	elem := q.buf[:8]
	binary.LittleEndian.PutUint32(elem[0:], uint32(head))
	binary.LittleEndian.PutUint32(elem[4:], written)
	slot := uint64(q.usedIdx % q.cfg.Size)
	if err := m.WriteAt(elem, q.cfg.DeviceArea+4+8*slot); err != nil {
		return fmt.Errorf("virtio: write used element: %w", err)
	}
	if err := q.write16(m, q.cfg.DeviceArea+2, q.usedIdx+1); err != nil {
		return err
	}
	q.usedIdx++
	return nil
}

// NeedsNotify reports whether the driver wants an interrupt for the entries
// pushed since the previous NeedsNotify. With event idx it is
// vring_need_event(used_event, used idx, used idx at the previous call);
// without, it is whether the driver left VIRTQ_AVAIL_F_NO_INTERRUPT clear.
func (q *Queue) NeedsNotify(m Memory) (bool, error) {
	// The used idx store must be visible before used_event or the flags
	// are read, or the device and driver can each miss the other's update.
	fence()
	if !q.cfg.EventIdx {
		flags, err := q.read16(m, q.cfg.DriverArea)
		if err != nil {
			return false, err
		}
		return flags&availFNoInterrupt == 0, nil
	}
	event, err := q.read16(m, q.usedEventAddr())
	if err != nil {
		return false, err
	}
	old, cur := q.signalled, q.usedIdx
	q.signalled = cur
	return needEvent(event, cur, old), nil
}

// needEvent is vring_need_event from the virtio spec: whether the index
// moved from old to cur across event, with uint16 wraparound.
func needEvent(event, cur, old uint16) bool {
	return cur-event-1 < cur-old
}

// ReadAll copies the chain's device-readable buffers, in order, into a new
// slice. It fails with ErrTooLong if they hold more than limit bytes.
func (c *Chain) ReadAll(m Memory, limit int) ([]byte, error) {
	var total uint64
	for _, d := range c.Readable {
		total += uint64(d.Len)
	}
	if limit < 0 || total > uint64(limit) {
		return nil, fmt.Errorf("virtio: chain %d: %d readable bytes, limit %d: %w", c.Head, total, limit, ErrTooLong)
	}
	out := make([]byte, total)
	off := 0
	for _, d := range c.Readable {
		if err := m.ReadAt(out[off:off+int(d.Len)], d.Addr); err != nil {
			return nil, fmt.Errorf("virtio: chain %d: read buffer: %w", c.Head, err)
		}
		off += int(d.Len)
	}
	return out, nil
}

// WriteAll copies data into the chain's device-writable buffers, in order,
// and returns how many bytes it wrote. If data is longer than those buffers
// it writes what fits and fails with ErrTooLong.
func (c *Chain) WriteAll(m Memory, data []byte) (int, error) {
	n := 0
	for _, d := range c.Writable {
		if n == len(data) {
			break
		}
		k := min(int(d.Len), len(data)-n)
		if err := m.WriteAt(data[n:n+k], d.Addr); err != nil {
			return n, fmt.Errorf("virtio: chain %d: write buffer: %w", c.Head, err)
		}
		n += k
	}
	if n < len(data) {
		return n, fmt.Errorf("virtio: chain %d: %d bytes into %d writable: %w", c.Head, len(data), n, ErrTooLong)
	}
	return n, nil
}

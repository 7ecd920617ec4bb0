package vmm

import (
	"errors"
	"fmt"
	"sort"
	"sync"
)

// ErrOverlap is returned by Bus.Register for a range that overlaps one
// already registered (or is empty or wraps around).
var ErrOverlap = errors.New("vmm: bus range overlaps or is empty")

// BusDevice handles accesses to its range; off is relative to the range's
// base. Guest-chosen offsets and lengths must be tolerated.
type BusDevice interface {
	Read(off uint64, p []byte)
	Write(off uint64, p []byte)
}

type busRange struct {
	base, size uint64
	name       string
	dev        BusDevice
}

// Bus dispatches guest port or MMIO accesses to the device whose range
// holds the address. Reads of unclaimed addresses return all ones (0xff
// bytes), as on a PC bus with nothing behind it; writes to them are
// dropped. It is safe for concurrent use.
type Bus struct {
	mu     sync.RWMutex
	ranges []busRange // sorted by base, disjoint
}

// Register claims [base, base+size) for dev. name appears in errors.
func (b *Bus) Register(name string, base, size uint64, dev BusDevice) error {
	if size == 0 || base+size < base || dev == nil {
		return fmt.Errorf("%w: %s at %#x+%#x", ErrOverlap, name, base, size)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	i := sort.Search(len(b.ranges), func(i int) bool { return b.ranges[i].base >= base })
	if i > 0 {
		if p := b.ranges[i-1]; p.base+p.size > base {
			return fmt.Errorf("%w: %s at %#x+%#x overlaps %s", ErrOverlap, name, base, size, p.name)
		}
	}
	if i < len(b.ranges) {
		if n := b.ranges[i]; base+size > n.base {
			return fmt.Errorf("%w: %s at %#x+%#x overlaps %s", ErrOverlap, name, base, size, n.name)
		}
	}
	b.ranges = append(b.ranges, busRange{})
	copy(b.ranges[i+1:], b.ranges[i:])
	b.ranges[i] = busRange{base: base, size: size, name: name, dev: dev}
	return nil
}

// find returns the device whose range holds addr and the offset of addr
// within it. An access is routed by its first byte.
func (b *Bus) find(addr uint64) (BusDevice, uint64, bool) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	i := sort.Search(len(b.ranges), func(i int) bool { return b.ranges[i].base > addr })
	if i == 0 {
		return nil, 0, false
	}
	r := b.ranges[i-1]
	if addr-r.base >= r.size {
		return nil, 0, false
	}
	return r.dev, addr - r.base, true
}

// Read fills p from the device at addr and reports whether one claimed it;
// otherwise p is filled with 0xff.
func (b *Bus) Read(addr uint64, p []byte) bool {
	d, off, ok := b.find(addr)
	if !ok {
		for i := range p {
			p[i] = 0xff
		}
		return false
	}
	d.Read(off, p)
	return true
}

// Write passes p to the device at addr and reports whether one claimed it.
func (b *Bus) Write(addr uint64, p []byte) bool {
	d, off, ok := b.find(addr)
	if !ok {
		return false
	}
	d.Write(off, p)
	return true
}

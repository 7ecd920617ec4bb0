package vmm

import (
	"fmt"

	"github.com/greatjail/cvm/vmm/loader"
	"github.com/greatjail/cvm/vmm/virtio"
)

// Region is a run of guest RAM: Size bytes at guest-physical GPA, backed by
// the host bytes at Offset in Memory's backing slice.
type Region struct {
	GPA, Size, Offset uint64
}

// Memory is guest RAM as the devices see it: one host mapping split into
// regions around the 32-bit MMIO gap. It implements virtio.Memory and
// virtio.RangeChecker. It does no locking; the guest and the devices order
// their accesses through the virtio protocol.
type Memory struct {
	mem     []byte
	regions []Region
}

var (
	_ virtio.Memory       = (*Memory)(nil)
	_ virtio.RangeChecker = (*Memory)(nil)
)

// RAMRegions is the guest-physical placement of size bytes of RAM: below
// the MMIO gap, and the rest from 4 GiB.
func RAMRegions(size uint64) []Region {
	low := min(size, loader.MMIOGapStart)
	rs := []Region{{GPA: 0, Size: low, Offset: 0}}
	if size > low {
		rs = append(rs, Region{GPA: loader.MMIOGapEnd, Size: size - low, Offset: low})
	}
	return rs
}

// NewMemory returns guest memory over mem laid out by RAMRegions.
func NewMemory(mem []byte) *Memory {
	return &Memory{mem: mem, regions: RAMRegions(uint64(len(mem)))}
}

// Regions returns the RAM regions.
func (m *Memory) Regions() []Region { return m.regions }

// slice returns the host bytes of [gpa, gpa+n), which must lie in one region.
func (m *Memory) slice(gpa, n uint64) ([]byte, error) {
	for _, r := range m.regions {
		if gpa >= r.GPA && gpa-r.GPA < r.Size {
			off := gpa - r.GPA
			if n > r.Size-off {
				break
			}
			return m.mem[r.Offset+off : r.Offset+off+n], nil
		}
	}
	return nil, fmt.Errorf("vmm: guest memory [%#x, +%#x): %w", gpa, n, virtio.ErrOutOfRange)
}

// CheckRange implements virtio.RangeChecker.
func (m *Memory) CheckRange(gpa, n uint64) error {
	_, err := m.slice(gpa, n)
	return err
}

// ReadAt implements virtio.Memory.
func (m *Memory) ReadAt(p []byte, gpa uint64) error {
	s, err := m.slice(gpa, uint64(len(p)))
	if err != nil {
		return err
	}
	copy(p, s)
	return nil
}

// WriteAt implements virtio.Memory.
func (m *Memory) WriteAt(p []byte, gpa uint64) error {
	s, err := m.slice(gpa, uint64(len(p)))
	if err != nil {
		return err
	}
	copy(s, p)
	return nil
}

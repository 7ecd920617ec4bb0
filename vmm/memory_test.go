package vmm

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/greatjail/cvm/vmm/virtio"
)

func TestRAMRegions(t *testing.T) {
	tests := []struct {
		size uint64
		want []Region
	}{
		{256 << 20, []Region{{0, 256 << 20, 0}}},
		{3 << 30, []Region{{0, 3 << 30, 0}}},
		{4 << 30, []Region{{0, 3 << 30, 0}, {4 << 30, 1 << 30, 3 << 30}}},
	}
	for _, tc := range tests {
		if d := cmp.Diff(tc.want, RAMRegions(tc.size)); d != "" {
			t.Errorf("RAMRegions(%d) (-want +got):\n%s", tc.size, d)
		}
	}
}

func TestMemoryBounds(t *testing.T) {
	m := NewMemory(make([]byte, 2*4096))
	tests := []struct {
		name   string
		gpa, n uint64
		ok     bool
	}{
		{"first byte", 0, 1, true},
		{"all", 0, 8192, true},
		{"last byte", 8191, 1, true},
		{"one past", 8191, 2, false},
		{"at end", 8192, 1, false},
		{"far", 1 << 40, 1, false},
		{"overflow", ^uint64(0), 2, false},
		{"huge n", 1, ^uint64(0), false},
	}
	for _, tc := range tests {
		err := m.CheckRange(tc.gpa, tc.n)
		if tc.ok != (err == nil) {
			t.Errorf("%s: CheckRange(%#x, %#x) = %v, want ok=%v", tc.name, tc.gpa, tc.n, err, tc.ok)
		}
		if err != nil && !errors.Is(err, virtio.ErrOutOfRange) {
			t.Errorf("%s: %v does not wrap virtio.ErrOutOfRange", tc.name, err)
		}
	}
	if err := m.WriteAt([]byte("hello"), 4094); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 5)
	if err := m.ReadAt(p, 4094); err != nil || string(p) != "hello" {
		t.Errorf("ReadAt = %q, %v", p, err)
	}
	if err := m.WriteAt([]byte("xy"), 8191); err == nil {
		t.Error("WriteAt across the end succeeded")
	}
	if err := m.ReadAt(p, 8190); err == nil {
		t.Error("ReadAt across the end succeeded")
	}
}

// Memory above the MMIO gap is reached at 4 GiB, and the gap itself is a
// hole. Uses a fake layout so the test needs no 4 GiB allocation.
func TestMemoryHole(t *testing.T) {
	m := &Memory{mem: make([]byte, 8192), regions: []Region{{0, 4096, 0}, {1 << 32, 4096, 4096}}}
	if err := m.WriteAt([]byte{7}, 1<<32); err != nil {
		t.Fatal(err)
	}
	if m.mem[4096] != 7 {
		t.Error("write at 4 GiB did not land at offset 4096")
	}
	if err := m.CheckRange(4096, 1); err == nil {
		t.Error("hole is readable")
	}
	if err := m.CheckRange(4000, 200); err == nil {
		t.Error("range crossing into the hole passes")
	}
}

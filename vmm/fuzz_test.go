package vmm

import (
	"encoding/binary"
	"testing"
)

type nop struct{}

func (nop) Read(off uint64, p []byte)  { clear(p) }
func (nop) Write(off uint64, p []byte) {}

// FuzzBus registers guest-like ranges and accesses: registration keeps the
// ranges disjoint and sorted, and dispatch never panics and routes an
// address only to the range holding it.
func FuzzBus(f *testing.F) {
	f.Add([]byte{0xf8, 3, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0}, uint64(0x3f9))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 0, 0, 0}, ^uint64(0))
	f.Fuzz(func(t *testing.T, ranges []byte, addr uint64) {
		var b Bus
		for len(ranges) >= 16 {
			base, size := binary.LittleEndian.Uint64(ranges), binary.LittleEndian.Uint64(ranges[8:])
			ranges = ranges[16:]
			_ = b.Register("r", base, size, nop{})
		}
		for i := 1; i < len(b.ranges); i++ {
			p, n := b.ranges[i-1], b.ranges[i]
			if p.base+p.size > n.base || p.base+p.size < p.base {
				t.Fatalf("ranges overlap: %+v %+v", p, n)
			}
		}
		p := make([]byte, 4)
		claimed := b.Read(addr, p)
		inside := false
		for _, r := range b.ranges {
			if addr >= r.base && addr-r.base < r.size {
				inside = true
			}
		}
		if claimed != inside {
			t.Fatalf("addr %#x claimed=%v, inside a range=%v", addr, claimed, inside)
		}
		b.Write(addr, p)
	})
}

// FuzzMemory checks that guest-chosen addresses never reach outside RAM.
func FuzzMemory(f *testing.F) {
	f.Add(uint64(0), uint16(1))
	f.Add(uint64(8191), uint16(2))
	f.Add(^uint64(0), uint16(100))
	f.Fuzz(func(t *testing.T, gpa uint64, n uint16) {
		m := NewMemory(make([]byte, 8192))
		p := make([]byte, n)
		err := m.ReadAt(p, gpa)
		fits := gpa < 8192 && uint64(n) <= 8192-gpa
		if (err == nil) != fits {
			t.Fatalf("ReadAt(%d bytes at %#x) = %v, fits=%v", n, gpa, err, fits)
		}
		if err := m.WriteAt(p, gpa); (err == nil) != fits {
			t.Fatalf("WriteAt(%d bytes at %#x) = %v, fits=%v", n, gpa, err, fits)
		}
	})
}

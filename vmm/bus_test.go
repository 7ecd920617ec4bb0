package vmm

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// recorder is a BusDevice that logs accesses and reads back a fixed byte.
type recorder struct {
	name string
	log  *[]string
}

func (r recorder) Read(off uint64, p []byte) {
	for i := range p {
		p[i] = byte(off) + byte(i)
	}
	*r.log = append(*r.log, r.name+" read")
}

func (r recorder) Write(off uint64, p []byte) {
	*r.log = append(*r.log, r.name+" write")
}

func TestBusRegister(t *testing.T) {
	var log []string
	var b Bus
	must := func(name string, base, size uint64) {
		t.Helper()
		if err := b.Register(name, base, size, recorder{name, &log}); err != nil {
			t.Fatalf("Register %s: %v", name, err)
		}
	}
	must("a", 0x3f8, 8)
	must("b", 0x60, 5)
	must("c", 0x400, 1) // adjacent to nothing
	must("d", 0x3f0, 8) // touches a's start
	tests := []struct {
		name       string
		base, size uint64
	}{
		{"inside a", 0x3fa, 1},
		{"covers a", 0x3f0, 0x20},
		{"tail overlaps b", 0x5f, 2},
		{"head overlaps b", 0x64, 4},
		{"empty", 0x1000, 0},
		{"wraps", ^uint64(0), 2},
	}
	for _, tc := range tests {
		if err := b.Register(tc.name, tc.base, tc.size, recorder{tc.name, &log}); !errors.Is(err, ErrOverlap) {
			t.Errorf("Register %s [%#x+%#x): %v, want ErrOverlap", tc.name, tc.base, tc.size, err)
		}
	}
}

func TestBusDispatch(t *testing.T) {
	var log []string
	var b Bus
	for _, r := range []struct {
		name       string
		base, size uint64
	}{{"serial", 0x3f8, 8}, {"kbd", 0x60, 5}} {
		if err := b.Register(r.name, r.base, r.size, recorder{r.name, &log}); err != nil {
			t.Fatal(err)
		}
	}
	type access struct {
		Addr    uint64
		Write   bool
		Claimed bool
		Data    []byte
	}
	var got []access
	for _, a := range []struct {
		addr  uint64
		write bool
		n     int
	}{
		{0x3f8, false, 1}, {0x3fd, false, 2}, {0x3ff, true, 1}, {0x400, false, 2},
		{0x3f7, true, 1}, {0x64, true, 1}, {0x65, false, 4}, {0, false, 1},
	} {
		p := make([]byte, a.n)
		var ok bool
		if a.write {
			ok = b.Write(a.addr, p)
		} else {
			ok = b.Read(a.addr, p)
		}
		got = append(got, access{a.addr, a.write, ok, p})
	}
	want := []access{
		{0x3f8, false, true, []byte{0}},
		{0x3fd, false, true, []byte{5, 6}},
		{0x3ff, true, true, []byte{0}},
		{0x400, false, false, []byte{0xff, 0xff}},
		{0x3f7, true, false, []byte{0}},
		{0x64, true, true, []byte{0}},
		{0x65, false, false, []byte{0xff, 0xff, 0xff, 0xff}},
		{0, false, false, []byte{0xff}},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("accesses (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"serial read", "serial read", "serial write", "kbd write"}, log); d != "" {
		t.Errorf("device log (-want +got):\n%s", d)
	}
}

func TestSleepPort(t *testing.T) {
	var got []string
	s := sleepPort{poweroff: func() { got = append(got, "off") }, reset: func() { got = append(got, "reset") }}
	s.Write(0, []byte{0x80}) // WAK_STS clear: ignored
	s.Write(0, []byte{0x34})
	s.Write(0, []byte{0x01})
	s.Write(1, []byte{0x34})       // wrong offset
	s.Write(0, []byte{0x34, 0x00}) // wrong width
	p := []byte{0xaa}
	s.Read(0, p)
	if d := cmp.Diff([]string{"off", "reset"}, got); d != "" {
		t.Errorf("events (-want +got):\n%s", d)
	}
	if p[0] != 0 {
		t.Errorf("read %#x, want 0", p[0])
	}
}

func TestCleanupOrder(t *testing.T) {
	var got []int
	var c cleanup
	for i := range 3 {
		c.push(func() error {
			got = append(got, i)
			if i == 1 {
				return errors.New("one failed")
			}
			return nil
		})
	}
	err := c.run()
	if d := cmp.Diff([]int{2, 1, 0}, got); d != "" {
		t.Errorf("order (-want +got):\n%s", d)
	}
	if err == nil || err.Error() != "one failed" {
		t.Errorf("run: %v, want the failing step's error", err)
	}
	if len(c) != 0 {
		t.Error("stack not cleared")
	}
}

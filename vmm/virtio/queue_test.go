package virtio

import (
	"bytes"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestPopChains(t *testing.T) {
	tests := []struct {
		name     string
		add      func(d *testDriver) uint16
		want     Chain
		indirect bool
	}{
		{
			name: "single readable",
			add:  func(d *testDriver) uint16 { return d.addChain(buf{testData, 64, false}) },
			want: Chain{Readable: []Desc{{testData, 64}}},
		},
		{
			name: "chained readable then writable",
			add: func(d *testDriver) uint16 {
				return d.addChain(buf{testData, 16, false}, buf{testData + 0x100, 512, false}, buf{testData + 0x400, 1, true})
			},
			want: Chain{Readable: []Desc{{testData, 16}, {testData + 0x100, 512}}, Writable: []Desc{{testData + 0x400, 1}}},
		},
		{
			name: "writable only",
			add:  func(d *testDriver) uint16 { return d.addChain(buf{testData, 8, true}, buf{testData + 8, 8, true}) },
			want: Chain{Writable: []Desc{{testData, 8}, {testData + 8, 8}}},
		},
		{
			name: "zero-length descriptor dropped",
			add: func(d *testDriver) uint16 {
				return d.addChain(buf{testData, 4, false}, buf{0xffff_ffff_0000, 0, false}, buf{testData + 8, 4, true})
			},
			want: Chain{Readable: []Desc{{testData, 4}}, Writable: []Desc{{testData + 8, 4}}},
		},
		{
			name: "indirect",
			add: func(d *testDriver) uint16 {
				return d.addIndirect(0x8000, buf{testData, 16, false}, buf{testData + 0x200, 4096, true}, buf{testData + 0x2000, 1, true})
			},
			want: Chain{Readable: []Desc{{testData, 16}}, Writable: []Desc{{testData + 0x200, 4096}, {testData + 0x2000, 1}}},
		},
		{
			name: "direct descriptors then indirect",
			add: func(d *testDriver) uint16 {
				d.chain(0x8000, 0, 1, []buf{{testData + 0x100, 8, true}})
				d.setDesc(testDesc, 0, testData, 8, descFNext, 1)
				d.setDesc(testDesc, 1, 0x8000, 16, descFIndirect, 0)
				d.publish(0)
				return 0
			},
			want: Chain{Readable: []Desc{{testData, 8}}, Writable: []Desc{{testData + 0x100, 8}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newTestDriver(t, 8)
			q := d.queue(false)
			d.nextDesc = 3 // not at slot 0, so heads are not trivially zero
			head := tt.add(d)
			got, err := q.Pop(d.mem)
			if err != nil {
				t.Fatalf("Pop() error = %v", err)
			}
			tt.want.Head = head
			if diff := cmp.Diff(&tt.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Pop() mismatch (-want +got):\n%s", diff)
			}
			if got, err := q.Pop(d.mem); got != nil || err != nil {
				t.Errorf("second Pop() = %v, %v, want nil, nil", got, err)
			}
			if err := q.Push(d.mem, head, 77); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]usedElem{{uint32(head), 77}}, d.used()); diff != "" {
				t.Errorf("used ring mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestPopPushWraparound runs the indexes through 0xffff -> 0 several times
// on a small queue, with several chains in flight.
func TestPopPushWraparound(t *testing.T) {
	for _, eventIdx := range []bool{false, true} {
		d := newTestDriver(t, 4)
		q := d.queue(eventIdx)
		for round := range 65536 { // 3 chains a round: indexes wrap 3 times
			var heads []uint16
			for i := range 3 {
				heads = append(heads, d.addChain(buf{testData + uint64(i), 1, false}))
			}
			for _, h := range heads {
				c, err := q.Pop(d.mem)
				if err != nil || c == nil || c.Head != h {
					t.Fatalf("round %d: Pop() = %+v, %v, want head %d", round, c, err, h)
				}
				if err := q.Push(d.mem, c.Head, uint32(round)); err != nil {
					t.Fatal(err)
				}
			}
			if got := d.used(); len(got) != 3 || got[2] != (usedElem{uint32(heads[2]), uint32(round)}) {
				t.Fatalf("round %d: used = %v", round, got)
			}
		}
		if q.LastAvail() != d.availIdx || q.UsedIdx() != d.availIdx {
			t.Errorf("eventIdx=%v: LastAvail %d, UsedIdx %d, want both %d", eventIdx, q.LastAvail(), q.UsedIdx(), d.availIdx)
		}
	}
}

func TestNeedEvent(t *testing.T) {
	tests := []struct {
		event, cur, old uint16
		want            bool
	}{
		{event: 0, cur: 1, old: 0, want: true},
		{event: 1, cur: 1, old: 0, want: false},
		{event: 5, cur: 10, old: 3, want: true},
		{event: 2, cur: 10, old: 3, want: false},
		{event: 10, cur: 10, old: 3, want: false},
		{event: 9, cur: 10, old: 3, want: true},
		{event: 3, cur: 10, old: 3, want: true},
		// Wraparound: new crossed 0xffff -> 0.
		{event: 0xffff, cur: 1, old: 0xfffe, want: true},
		{event: 0xfffe, cur: 0xffff, old: 0xfffe, want: true},
		{event: 0, cur: 1, old: 0xfffe, want: true},
		{event: 5, cur: 1, old: 0xfffe, want: false},
		{event: 0xfffd, cur: 1, old: 0xfffe, want: false},
		{event: 0xffff, cur: 0xffff, old: 0xfffe, want: false},
		{event: 7, cur: 7, old: 7, want: false},
	}
	for _, tt := range tests {
		if got := needEvent(tt.event, tt.cur, tt.old); got != tt.want {
			t.Errorf("needEvent(%#x, %#x, %#x) = %v, want %v", tt.event, tt.cur, tt.old, got, tt.want)
		}
	}
}

func TestNeedsNotify(t *testing.T) {
	t.Run("no event idx", func(t *testing.T) {
		d := newTestDriver(t, 8)
		q := d.queue(false)
		var got []bool
		for _, flags := range []uint16{0, availFNoInterrupt, 0} {
			d.put16(testAvail, flags)
			n, err := q.NeedsNotify(d.mem)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, n)
		}
		if diff := cmp.Diff([]bool{true, false, true}, got); diff != "" {
			t.Errorf("NeedsNotify (-want +got):\n%s", diff)
		}
	})
	t.Run("event idx across wraparound", func(t *testing.T) {
		d := newTestDriver(t, 8)
		q := d.queue(true)
		// Advance both indexes to 0xfffc.
		for range 0xfffc {
			d.addChain(buf{testData, 1, false})
			c, err := q.Pop(d.mem)
			if err != nil {
				t.Fatal(err)
			}
			if err := q.Push(d.mem, c.Head, 0); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := q.NeedsNotify(d.mem); err != nil { // old = 0xfffc
			t.Fatal(err)
		}
		steps := []struct {
			push      int
			usedEvent uint16
			want      bool
		}{
			{push: 1, usedEvent: 0xfffc, want: true},  // 0xfffc -> 0xfffd crosses 0xfffc
			{push: 2, usedEvent: 0x0000, want: false}, // -> 0xffff, event 0 not yet
			{push: 2, usedEvent: 0x0000, want: true},  // -> 0x0001 crosses 0
			{push: 1, usedEvent: 0x0000, want: false}, // event already passed
			{push: 0, usedEvent: 0x0001, want: false}, // nothing new
			{push: 3, usedEvent: 0x0003, want: true},  // -> 0x0005
		}
		for i, s := range steps {
			for range s.push {
				d.addChain(buf{testData, 1, false})
				c, err := q.Pop(d.mem)
				if err != nil {
					t.Fatal(err)
				}
				if err := q.Push(d.mem, c.Head, 0); err != nil {
					t.Fatal(err)
				}
			}
			d.setUsedEvent(s.usedEvent)
			got, err := q.NeedsNotify(d.mem)
			if err != nil {
				t.Fatal(err)
			}
			if got != s.want {
				t.Errorf("step %d (used idx %#x, used_event %#x): NeedsNotify = %v, want %v", i, q.UsedIdx(), s.usedEvent, got, s.want)
			}
		}
	})
}

func TestPopPublishesAvailEvent(t *testing.T) {
	d := newTestDriver(t, 8)
	q := d.queue(true)
	d.addChain(buf{testData, 1, false})
	d.addChain(buf{testData, 1, false})
	for range 2 {
		if c, err := q.Pop(d.mem); c == nil || err != nil {
			t.Fatalf("Pop() = %v, %v", c, err)
		}
	}
	if c, err := q.Pop(d.mem); c != nil || err != nil {
		t.Fatalf("Pop() on empty = %v, %v", c, err)
	}
	if got := d.availEvent(); got != 2 {
		t.Errorf("avail_event = %d, want 2", got)
	}
}

func TestPopAttacks(t *testing.T) {
	const table = 0x8000
	tests := []struct {
		name    string
		setup   func(d *testDriver)
		maxLen  uint32
		wantErr error
	}{
		{"self loop", func(d *testDriver) {
			d.setDesc(testDesc, 0, testData, 1, descFNext, 0)
			d.publish(0)
		}, 0, ErrLoop},
		{"loop via next", func(d *testDriver) {
			d.setDesc(testDesc, 0, testData, 1, descFNext, 1)
			d.setDesc(testDesc, 1, testData, 1, descFNext, 2)
			d.setDesc(testDesc, 2, testData, 1, descFNext, 0)
			d.publish(0)
		}, 0, ErrLoop},
		{"loop of zero-length descriptors", func(d *testDriver) {
			d.setDesc(testDesc, 0, 0, 0, descFNext, 1)
			d.setDesc(testDesc, 1, 0, 0, descFNext, 0)
			d.publish(0)
		}, 0, ErrLoop},
		{"indirect loop", func(d *testDriver) {
			d.setDesc(table, 0, testData, 1, descFNext, 1)
			d.setDesc(table, 1, testData, 1, descFNext, 0)
			d.setDesc(testDesc, 0, table, 32, descFIndirect, 0)
			d.publish(0)
		}, 0, ErrLoop},
		{"nested indirect", func(d *testDriver) {
			d.setDesc(table, 0, table+0x100, 16, descFIndirect, 0)
			d.setDesc(table+0x100, 0, testData, 1, 0, 0)
			d.setDesc(testDesc, 0, table, 16, descFIndirect, 0)
			d.publish(0)
		}, 0, ErrIndirect},
		{"indirect with next", func(d *testDriver) {
			d.setDesc(table, 0, testData, 1, 0, 0)
			d.setDesc(testDesc, 0, table, 16, descFIndirect|descFNext, 1)
			d.publish(0)
		}, 0, ErrIndirect},
		{"indirect length not a multiple of 16", func(d *testDriver) {
			d.setDesc(testDesc, 0, table, 17, descFIndirect, 0)
			d.publish(0)
		}, 0, ErrIndirect},
		{"indirect length zero", func(d *testDriver) {
			d.setDesc(testDesc, 0, table, 0, descFIndirect, 0)
			d.publish(0)
		}, 0, ErrIndirect},
		{"indirect table too big", func(d *testDriver) {
			d.setDesc(testDesc, 0, 0, 16*(MaxIndirectEntries+1), descFIndirect, 0)
			d.publish(0)
		}, 0, ErrIndirect},
		{"head index >= size", func(d *testDriver) {
			d.publish(8)
		}, 0, ErrOutOfRange},
		{"next index >= size", func(d *testDriver) {
			d.setDesc(testDesc, 0, testData, 1, descFNext, 8)
			d.publish(0)
		}, 0, ErrOutOfRange},
		{"indirect next index >= table entries", func(d *testDriver) {
			d.setDesc(table, 0, testData, 1, descFNext, 2)
			d.setDesc(testDesc, 0, table, 32, descFIndirect, 0)
			d.publish(0)
		}, 0, ErrOutOfRange},
		{"addr+len overflows", func(d *testDriver) {
			d.setDesc(testDesc, 0, 0xffff_ffff_ffff_fff0, 0x20, 0, 0)
			d.publish(0)
		}, 0, ErrOutOfRange},
		{"buffer past memory end", func(d *testDriver) {
			d.setDesc(testDesc, 0, testMem-8, 9, descFWrite, 0)
			d.publish(0)
		}, 0, ErrOutOfRange},
		{"buffer far outside memory", func(d *testDriver) {
			d.setDesc(testDesc, 0, 1<<40, 1, 0, 0)
			d.publish(0)
		}, 0, ErrOutOfRange},
		{"indirect table past memory end", func(d *testDriver) {
			d.setDesc(testDesc, 0, testMem-16, 32, descFIndirect, 0)
			d.publish(0)
		}, 0, ErrOutOfRange},
		{"indirect table addr+len overflows", func(d *testDriver) {
			d.setDesc(testDesc, 0, 0xffff_ffff_ffff_fff0, 32, descFIndirect, 0)
			d.publish(0)
		}, 0, ErrOutOfRange},
		{"readable after writable", func(d *testDriver) {
			d.addChain(buf{testData, 1, true}, buf{testData + 1, 1, false})
		}, 0, ErrBadOrder},
		{"readable after writable inside indirect", func(d *testDriver) {
			d.addIndirect(table, buf{testData, 1, true}, buf{testData + 1, 1, false})
		}, 0, ErrBadOrder},
		{"total length over limit", func(d *testDriver) {
			d.addChain(buf{testData, 64, false}, buf{testData + 64, 64, true})
		}, 100, ErrTooLong},
		{"total length over a large limit", func(d *testDriver) {
			// Eight descriptors each covering all of memory.
			for i := range uint16(8) {
				d.setDesc(testDesc, i, 0, testMem, descFNext, i+1)
			}
			d.setDesc(testDesc, 7, 0, testMem, 0, 0)
			d.publish(0)
		}, 7 * testMem, ErrTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, probe := range []bool{false, true} {
				d := newTestDriver(t, 8)
				cfg := d.config(false)
				cfg.MaxChainBytes = tt.maxLen
				var m Memory = d.mem
				if probe {
					m = probeMemory{d.mem} // exercise the path without RangeChecker
				}
				q, err := NewQueue(m, cfg)
				if err != nil {
					t.Fatal(err)
				}
				tt.setup(d)
				c, err := q.Pop(m)
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("probe=%v: Pop() = %+v, %v, want error %v", probe, c, err, tt.wantErr)
				}
				if c != nil {
					t.Errorf("Pop() returned chain %+v with error", c)
				}
				// The bad head was consumed: the queue does not spin on it.
				if c, err := q.Pop(m); c != nil || err != nil {
					t.Errorf("Pop() after error = %+v, %v, want nil, nil", c, err)
				}
			}
		})
	}
}

// probeMemory hides SliceMemory's RangeChecker.
type probeMemory struct{ m SliceMemory }

func (p probeMemory) ReadAt(b []byte, gpa uint64) error  { return p.m.ReadAt(b, gpa) }
func (p probeMemory) WriteAt(b []byte, gpa uint64) error { return p.m.WriteAt(b, gpa) }

func TestPopAvailIdxJump(t *testing.T) {
	for _, jump := range []uint16{9, 0x8000, 0xffff} {
		d := newTestDriver(t, 8)
		q := d.queue(false)
		d.addChain(buf{testData, 1, false})
		if _, err := q.Pop(d.mem); err != nil {
			t.Fatal(err)
		}
		d.put16(testAvail+2, 1+jump)
		for i := range 2 { // the queue stays broken
			if c, err := q.Pop(d.mem); c != nil || !errors.Is(err, ErrAvailIdx) {
				t.Errorf("jump %d, Pop #%d = %+v, %v, want %v", jump, i, c, err, ErrAvailIdx)
			}
		}
	}
	// Exactly size ahead is legal: a full ring.
	d := newTestDriver(t, 8)
	q := d.queue(false)
	for range 8 {
		d.addChain(buf{testData, 1, false})
	}
	for i := range 8 {
		if c, err := q.Pop(d.mem); c == nil || err != nil {
			t.Fatalf("full ring Pop #%d = %v, %v", i, c, err)
		}
	}
}

func TestNewQueueErrors(t *testing.T) {
	mem := make(SliceMemory, testMem)
	ok := QueueConfig{Size: 8, DescTable: testDesc, DriverArea: testAvail, DeviceArea: testUsed}
	tests := []struct {
		name    string
		mod     func(c *QueueConfig)
		wantErr error
	}{
		{"size 0", func(c *QueueConfig) { c.Size = 0 }, ErrBadQueue},
		{"size 3", func(c *QueueConfig) { c.Size = 3 }, ErrBadQueue},
		{"size 65535", func(c *QueueConfig) { c.Size = 65535 }, ErrBadQueue},
		{"desc misaligned", func(c *QueueConfig) { c.DescTable = testDesc + 8 }, ErrBadQueue},
		{"avail misaligned", func(c *QueueConfig) { c.DriverArea = testAvail + 1 }, ErrBadQueue},
		{"used misaligned", func(c *QueueConfig) { c.DeviceArea = testUsed + 2 }, ErrBadQueue},
		{"desc past memory", func(c *QueueConfig) { c.DescTable = testMem - 16 }, ErrOutOfRange},
		{"used past memory", func(c *QueueConfig) { c.DeviceArea = testMem - 64 }, ErrOutOfRange},
		{"avail overflows", func(c *QueueConfig) { c.DriverArea = 0xffff_ffff_ffff_fffe }, ErrOutOfRange},
	}
	for _, tt := range tests {
		c := ok
		tt.mod(&c)
		if _, err := NewQueue(mem, c); !errors.Is(err, tt.wantErr) {
			t.Errorf("%s: NewQueue() error = %v, want %v", tt.name, err, tt.wantErr)
		}
	}
	if _, err := NewQueue(mem, QueueConfig{Size: MaxQueueSize, DescTable: 0, DriverArea: 0x80000, DeviceArea: 0x90000}); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("32768-entry queue in 128 KiB: error = %v, want %v", err, ErrOutOfRange)
	}
}

func TestPushErrors(t *testing.T) {
	d := newTestDriver(t, 8)
	q := d.queue(false)
	if err := q.Push(d.mem, 8, 0); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("Push(head 8) error = %v, want %v", err, ErrOutOfRange)
	}
	if got := d.used(); len(got) != 0 {
		t.Errorf("failed Push wrote used entries %v", got)
	}
}

func TestReadAllWriteAll(t *testing.T) {
	d := newTestDriver(t, 8)
	q := d.queue(false)
	copy(d.mem[testData:], "hello, ")
	copy(d.mem[testData+0x100:], "world")
	d.addChain(buf{testData, 7, false}, buf{testData + 0x100, 5, false}, buf{testData + 0x200, 3, true}, buf{testData + 0x300, 4, true})
	c, err := q.Pop(d.mem)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.ReadAll(d.mem, 12)
	if err != nil || string(got) != "hello, world" {
		t.Errorf("ReadAll(12) = %q, %v, want %q", got, err, "hello, world")
	}
	if _, err := c.ReadAll(d.mem, 11); !errors.Is(err, ErrTooLong) {
		t.Errorf("ReadAll(11) error = %v, want %v", err, ErrTooLong)
	}
	n, err := c.WriteAll(d.mem, []byte("abcdef"))
	if err != nil || n != 6 {
		t.Errorf("WriteAll(6 bytes) = %d, %v", n, err)
	}
	if got := string(d.mem[testData+0x200 : testData+0x203]); got != "abc" {
		t.Errorf("first writable = %q", got)
	}
	if got := d.mem[testData+0x300 : testData+0x304]; !bytes.Equal(got, []byte("def\x00")) {
		t.Errorf("second writable = %q", got)
	}
	n, err = c.WriteAll(d.mem, []byte("12345678"))
	if n != 7 || !errors.Is(err, ErrTooLong) {
		t.Errorf("WriteAll(8 bytes into 7) = %d, %v, want 7, %v", n, err, ErrTooLong)
	}
}

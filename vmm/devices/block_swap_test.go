package devices

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/greatjail/cvm/vmm/virtio"
)

// Media change (Block.Swap) through the test driver: an empty device, a
// disk swapped in and out, the configuration-change interrupt, and
// requests queued across a swap.

const (
	regInterruptStatus  = 0x060
	regConfigGeneration = 0x0fc
)

// patternDisk returns a file of sectors sectors, every byte fill.
func patternDisk(t *testing.T, sectors int, fill byte) *os.File {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(t.TempDir(), "disk.img"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if _, err := f.Write(bytes.Repeat([]byte{fill}, sectors*SectorSize)); err != nil {
		t.Fatal(err)
	}
	return f
}

// capacity reads the capacity field of the device's configuration space.
func (d *testDriver) capacity() uint64 {
	lo, hi := d.r(0x100), d.r(0x104)
	return uint64(hi)<<32 | uint64(lo)
}

// getID asks for the serial and returns it with the status.
func (d *testDriver) getID() (string, byte) {
	clear(d.mem[dataAddr : dataAddr+BlockIDLen])
	_, status := d.request(blkTGetID, 0, &buf{dataAddr, BlockIDLen, true})
	return string(bytes.TrimRight(d.mem[dataAddr:dataAddr+BlockIDLen], "\x00")), status
}

// state is what the driver sees of the device after a swap.
type blockState struct {
	Capacity      uint64
	Serial        string
	GetIDStatus   byte
	ReadStatus    byte // sector 0
	WriteStatus   byte // sector 0
	Generation    uint32
	ConfigChanged bool // the configuration-change bit in InterruptStatus
}

func (d *testDriver) state(t *testing.T) blockState {
	t.Helper()
	s := blockState{Capacity: d.capacity(), Generation: d.r(regConfigGeneration)}
	s.ConfigChanged = d.r(regInterruptStatus)&virtio.InterruptConfigChange != 0
	d.w(regInterruptACK, virtio.InterruptConfigChange)
	s.Serial, s.GetIDStatus = d.getID()
	_, s.ReadStatus = d.request(blkTIn, 0, &buf{dataAddr, SectorSize, true})
	copy(d.mem[dataAddr:], bytes.Repeat([]byte("w"), SectorSize))
	_, s.WriteStatus = d.request(blkTOut, 0, &buf{dataAddr, SectorSize, false})
	return s
}

func TestBlockSwap(t *testing.T) {
	dev := NewEmptyBlock()
	d := newTestDriver(t, dev)
	if d.features&blkFRO != 0 {
		t.Error("an empty (media-change) device offers VIRTIO_BLK_F_RO")
	}
	a := patternDisk(t, 8, 0xaa)
	b := patternDisk(t, 4, 0xbb)
	steps := []struct {
		name string
		f    *os.File
		opts BlockOptions
		want blockState
	}{
		{"empty at start", nil, BlockOptions{}, blockState{0, "", blkSIOErr, blkSIOErr, blkSIOErr, 0, false}},
		{"disk a, read-only", a, BlockOptions{ID: "cvm-disk-1", ReadOnly: true}, blockState{8, "cvm-disk-1", blkSOK, blkSOK, blkSIOErr, 1, true}},
		{"disk b, writable", b, BlockOptions{ID: "cvm-disk-2"}, blockState{4, "cvm-disk-2", blkSOK, blkSOK, blkSOK, 2, true}},
		{"ejected", nil, BlockOptions{ID: "ignored"}, blockState{0, "", blkSIOErr, blkSIOErr, blkSIOErr, 3, true}},
		{"disk a again, writable", a, BlockOptions{ID: "cvm-disk-3"}, blockState{8, "cvm-disk-3", blkSOK, blkSOK, blkSOK, 4, true}},
	}
	irqs := d.irqs
	for i, st := range steps {
		if i > 0 {
			if err := dev.Swap(st.f, st.opts); err != nil {
				t.Fatalf("%s: Swap: %v", st.name, err)
			}
			if d.irqs == irqs {
				t.Errorf("%s: Swap raised no interrupt", st.name)
			}
		}
		if diff := cmp.Diff(st.want, d.state(t)); diff != "" {
			t.Errorf("%s: what the driver sees (-want +got):\n%s", st.name, diff)
		}
		irqs = d.irqs
	}
	// The read-only step left a alone; the writable ones wrote "w" to
	// sector 0 of b and of a.
	for _, f := range []*os.File{a, b} {
		got := make([]byte, SectorSize)
		if _, err := f.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, bytes.Repeat([]byte("w"), SectorSize)) {
			t.Errorf("%s: sector 0 = %q..., want the writes of the writable steps", f.Name(), got[:8])
		}
	}
	got := make([]byte, SectorSize)
	if _, err := a.ReadAt(got, SectorSize); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, bytes.Repeat([]byte{0xaa}, SectorSize)) {
		t.Error("sector 1 of a changed")
	}
	if d.needsReset() {
		t.Error("NEEDS_RESET after media changes")
	}
}

// Requests the driver queued before a swap and the device serves after it
// go to the new medium, within its capacity.
func TestBlockSwapQueued(t *testing.T) {
	dev := NewEmptyBlock()
	d := newTestDriver(t, dev)
	big, small := patternDisk(t, 8, 0x11), patternDisk(t, 2, 0x22)
	if err := dev.Swap(big, BlockOptions{ID: "big"}); err != nil {
		t.Fatal(err)
	}
	// Two reads queued without a kick: sector 0 and sector 5, each with
	// its own header, data and status.
	hdr0, hdr5 := uint64(drvData+0x200), uint64(drvData+0x300)
	st0, st5 := uint64(drvData+0x400), uint64(drvData+0x401)
	data0, data5 := uint64(dataAddr), uint64(dataAddr+SectorSize)
	copy(d.mem[hdr0:], blkHeaderBytes(blkTIn, 0))
	copy(d.mem[hdr5:], blkHeaderBytes(blkTIn, 5))
	d.mem[st0], d.mem[st5] = 0xff, 0xff
	d.addChain(buf{hdr0, blkHeaderLen, false}, buf{data0, SectorSize, true}, buf{st0, 1, true})
	d.addChain(buf{hdr5, blkHeaderLen, false}, buf{data5, SectorSize, true}, buf{st5, 1, true})
	if err := dev.Swap(small, BlockOptions{ID: "small"}); err != nil {
		t.Fatal(err)
	}
	used := d.kick()
	if len(used) != 2 {
		t.Fatalf("used %v, want both requests", used)
	}
	if d.mem[st0] != blkSOK || !bytes.Equal(d.mem[data0:data0+SectorSize], bytes.Repeat([]byte{0x22}, SectorSize)) {
		t.Errorf("queued read of sector 0: status %d, data %#x...; want OK and the new disk's bytes", d.mem[st0], d.mem[data0:data0+4])
	}
	if d.mem[st5] != blkSIOErr {
		t.Errorf("queued read of sector 5, past the new capacity of 2: status %d, want IOERR", d.mem[st5])
	}
	// Queued, then ejected: IOERR.
	d.mem[st0] = 0xff
	d.addChain(buf{hdr0, blkHeaderLen, false}, buf{data0, SectorSize, true}, buf{st0, 1, true})
	if err := dev.Swap(nil, BlockOptions{}); err != nil {
		t.Fatal(err)
	}
	if used := d.kick(); len(used) != 1 || d.mem[st0] != blkSIOErr {
		t.Errorf("read queued before the eject: used %v, status %d; want IOERR", used, d.mem[st0])
	}
}

// Swaps from another goroutine while the driver reads: every read sees
// one whole medium, never a mix, and never fails (both media hold the
// sector). Run with -race, this also checks the locking.
func TestBlockSwapConcurrent(t *testing.T) {
	dev := NewEmptyBlock()
	d := newTestDriver(t, dev)
	a, b := patternDisk(t, 64, 0xaa), patternDisk(t, 64, 0xbb)
	if err := dev.Swap(a, BlockOptions{ID: "a"}); err != nil {
		t.Fatal(err)
	}
	const n = 200
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range n {
			f, id := a, "a"
			if i%2 == 0 {
				f, id = b, "b"
			}
			if err := dev.Swap(f, BlockOptions{ID: id}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	const length = 32 * SectorSize
	for range n {
		_, status := d.request(blkTIn, 0, &buf{dataAddr, length, true})
		got := d.mem[dataAddr : dataAddr+length]
		if status != blkSOK {
			t.Fatalf("read during swaps: status %d, want OK", status)
		}
		if c := got[0]; c != 0xaa && c != 0xbb || !bytes.Equal(got, bytes.Repeat([]byte{got[0]}, length)) {
			t.Fatalf("read during swaps mixed the media: starts %#x, has %d bytes of it", got[0], bytes.Count(got, got[:1]))
		}
	}
	wg.Wait()
}

func TestBlockSwapErrors(t *testing.T) {
	dev := NewEmptyBlock()
	d := newTestDriver(t, dev)
	good := patternDisk(t, 2, 0x33)
	if err := dev.Swap(good, BlockOptions{ID: "good"}); err != nil {
		t.Fatal(err)
	}
	tiny, err := os.Create(filepath.Join(t.TempDir(), "tiny"))
	if err != nil {
		t.Fatal(err)
	}
	defer tiny.Close()
	tiny.Write(make([]byte, SectorSize-1))
	dir, err := os.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	for _, tt := range []struct {
		name string
		f    *os.File
		opts BlockOptions
	}{
		{"smaller than a sector", tiny, BlockOptions{ID: "tiny"}},
		{"a directory", dir, BlockOptions{ID: "dir"}},
		{"a long serial", patternDisk(t, 2, 0x44), BlockOptions{ID: "this-id-is-longer-than-twenty"}},
	} {
		irqs := d.irqs
		if err := dev.Swap(tt.f, tt.opts); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Swap = %v, want ErrInvalid", tt.name, err)
		}
		if d.irqs != irqs {
			t.Errorf("%s: a failed Swap raised an interrupt", tt.name)
		}
		if got, want := d.capacity(), uint64(2); got != want {
			t.Errorf("%s: capacity after a failed Swap = %d, want %d (the medium kept)", tt.name, got, want)
		}
		if id, _ := d.getID(); id != "good" {
			t.Errorf("%s: serial after a failed Swap = %q, want %q", tt.name, id, "good")
		}
	}
	if got := d.r(regConfigGeneration); got != 1 {
		t.Errorf("config generation = %d, want 1 (one successful swap)", got)
	}
}

// retiredDisk wraps a boundedDisk and fails the test on any access once
// it has been swapped out.
type retiredDisk struct {
	*boundedDisk
	retired bool
}

func (d *retiredDisk) check() {
	if d.retired {
		d.t.Error("a swapped-out medium was accessed")
	}
}

func (d *retiredDisk) ReadAt(p []byte, off int64) (int, error) {
	d.check()
	return d.boundedDisk.ReadAt(p, off)
}

func (d *retiredDisk) WriteAt(p []byte, off int64) (int, error) {
	d.check()
	return d.boundedDisk.WriteAt(p, off)
}

func (d *retiredDisk) Sync() error { d.check(); return nil }

// FuzzBlockSwap interleaves media changes with requests. Each op is 3
// bytes: kind, a, b. Kind 0 swaps in a disk of a%17 sectors (0: ejects;
// read-only when b is odd); 1 reads and 2 writes (b%4)+1 sectors at
// sector a; 3 flushes; 4 asks for the serial. The disks fail the test on
// any access outside their size, on writes when read-only, and on any
// access after they were swapped out; an empty device answers IOERR to
// everything, and a transfer past the capacity is IOERR.
func FuzzBlockSwap(f *testing.F) {
	f.Add([]byte{1, 0, 0, 0, 8, 0, 1, 7, 0, 1, 7, 1, 0, 2, 1, 1, 1, 0, 2, 0, 0, 0, 0, 0, 1, 0, 0, 4, 0, 0})
	f.Add([]byte{0, 4, 0, 2, 3, 0, 0, 16, 2, 3, 0, 0, 2, 0, 3})
	f.Add([]byte{4, 0, 0, 0, 1, 0, 4, 0, 0, 0, 0, 0, 4, 0, 0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 3*256 {
			return
		}
		const hdrAt, dataAt = 0x1000, 0x2000
		mem := make(virtio.SliceMemory, 0x2000+4*SectorSize+1)
		b := NewEmptyBlock()
		var cur *retiredDisk
		var sectors uint64
		for i := 0; i+2 < len(ops); i += 3 {
			kind, a, v := ops[i]%5, ops[i+1], ops[i+2]
			if kind == 0 {
				n := int(a % 17)
				var next *retiredDisk
				var d disk
				if n > 0 {
					next = &retiredDisk{boundedDisk: &boundedDisk{t: t, data: make([]byte, n*SectorSize), readOnly: v%2 == 1}}
					d = next
				}
				if err := b.swap(d, int64(n*SectorSize), BlockOptions{ID: "fuzz", ReadOnly: v%2 == 1}); err != nil {
					t.Fatal(err)
				}
				if cur != nil {
					cur.retired = true
				}
				cur, sectors = next, uint64(n)
				if got := b.Capacity(); got != sectors {
					t.Fatalf("capacity after swapping in %d sectors = %d", n, got)
				}
				continue
			}
			typ := map[byte]uint32{1: blkTIn, 2: blkTOut, 3: blkTFlush, 4: blkTGetID}[kind]
			copy(mem[hdrAt:], blkHeaderBytes(typ, uint64(a)))
			c := virtio.Chain{Readable: []virtio.Desc{{Addr: hdrAt, Len: blkHeaderLen}}}
			length := uint32(0)
			switch kind {
			case 1, 2:
				length = uint32(v%4+1) * SectorSize
			case 4:
				length = BlockIDLen
			}
			if kind == 2 {
				c.Readable = append(c.Readable, virtio.Desc{Addr: dataAt, Len: length})
				length = 0
			}
			c.Writable = []virtio.Desc{{Addr: dataAt, Len: length + 1}}
			b.mu.Lock()
			_, ok := b.handle(mem, &c)
			b.mu.Unlock()
			status := mem[dataAt+uint64(length)]
			if !ok {
				t.Fatalf("op %d: a well-formed request was not answered", i/3)
			}
			if cur == nil && status != blkSIOErr {
				t.Fatalf("op %d (kind %d) on an empty device: status %d, want IOERR", i/3, kind, status)
			}
			if (kind == 1 || kind == 2) && uint64(a)+uint64(v%4+1) > sectors && status != blkSIOErr {
				t.Fatalf("op %d: %d sectors at %d past the capacity of %d: status %d, want IOERR", i/3, v%4+1, a, sectors, status)
			}
		}
	})
}

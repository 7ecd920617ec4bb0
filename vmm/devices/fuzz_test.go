package devices

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/greatjail/cvm/vmm/virtio"
)

// boundedDisk is an in-memory disk that fails the test on any access outside
// its size, and on any write when read-only.
type boundedDisk struct {
	t        *testing.T
	data     []byte
	readOnly bool
}

var errOutside = errors.New("access outside the disk")

func (d *boundedDisk) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off > int64(len(d.data)) || int64(len(p)) > int64(len(d.data))-off {
		d.t.Errorf("ReadAt(%d bytes, %d) outside a %d-byte disk", len(p), off, len(d.data))
		return 0, errOutside
	}
	return copy(p, d.data[off:]), nil
}

func (d *boundedDisk) WriteAt(p []byte, off int64) (int, error) {
	if d.readOnly {
		d.t.Errorf("WriteAt on a read-only disk")
	}
	if off < 0 || off > int64(len(d.data)) || int64(len(p)) > int64(len(d.data))-off {
		d.t.Errorf("WriteAt(%d bytes, %d) outside a %d-byte disk", len(p), off, len(d.data))
		return 0, errOutside
	}
	return copy(d.data[off:], p), nil
}

func (d *boundedDisk) Sync() error { return nil }

// FuzzBlockRequest hands Block.handle arbitrary request chains: readable
// bytes (header and data) split into two buffers at split, and writable
// buffers of the lengths in wlens (little-endian uint16 each, possibly
// running off the end of guest memory). The disk fails the test on any
// access beyond its 8 sectors.
func FuzzBlockRequest(f *testing.F) {
	f.Add(blkHeaderBytes(blkTIn, 0), uint16(16), []byte{0x00, 0x02, 0x01, 0x00}, false)
	f.Add(blkHeaderBytes(blkTIn, 7), uint16(3), []byte{0x00, 0x04, 0x01, 0x00}, false)
	f.Add(append(blkHeaderBytes(blkTOut, 7), make([]byte, 1024)...), uint16(100), []byte{0x01, 0x00}, false)
	f.Add(append(blkHeaderBytes(blkTOut, 1), make([]byte, 512)...), uint16(16), []byte{0x01, 0x00}, true)
	f.Add(blkHeaderBytes(blkTFlush, 0), uint16(0), []byte{0x01, 0x00}, false)
	f.Add(blkHeaderBytes(blkTGetID, 0), uint16(16), []byte{0x05, 0x00, 0x20, 0x00}, false)
	f.Add(blkHeaderBytes(blkTIn, 1<<55), uint16(16), []byte{0x00, 0x02, 0x01, 0x00}, false)
	f.Add([]byte{0, 0, 0}, uint16(1), []byte{}, false)
	f.Add(blkHeaderBytes(blkTIn, 0), uint16(16), []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, false)

	const (
		memSize   = 256 << 10
		readAddr  = 0x1000
		writeAddr = 0x20000
		sectors   = 8
	)
	f.Fuzz(func(t *testing.T, readable []byte, split uint16, wlens []byte, ro bool) {
		if len(readable) > 64<<10 || len(wlens) > 32 {
			return
		}
		mem := make(virtio.SliceMemory, memSize)
		copy(mem[readAddr:], readable)
		var c virtio.Chain
		s := min(int(split), len(readable))
		for _, part := range [][2]int{{0, s}, {s, len(readable)}} {
			if n := part[1] - part[0]; n > 0 {
				c.Readable = append(c.Readable, virtio.Desc{Addr: readAddr + uint64(part[0]), Len: uint32(n)})
			}
		}
		addr := uint64(writeAddr)
		var wtotal uint64
		for i := 0; i+1 < len(wlens); i += 2 {
			n := uint64(binary.LittleEndian.Uint16(wlens[i:]))
			if n == 0 {
				continue // Queue.Pop drops empty buffers
			}
			c.Writable = append(c.Writable, virtio.Desc{Addr: addr, Len: uint32(n)})
			addr += n
			wtotal += n
		}
		d := &boundedDisk{t: t, data: make([]byte, sectors*SectorSize), readOnly: ro}
		b, err := newBlock(d, int64(len(d.data)), BlockOptions{ReadOnly: ro, ID: "fuzz"})
		if err != nil {
			t.Fatal(err)
		}
		n, ok := b.handle(mem, &c)
		if uint64(n) > wtotal {
			t.Errorf("used length %d > %d writable bytes", n, wtotal)
		}
		if ok && wtotal > 0 {
			if st := mem[writeAddr+wtotal-1]; st > blkSUnsupp {
				t.Errorf("status byte %d is not a virtio-blk status", st)
			}
		}
		if wtotal == 0 && ok {
			t.Error("chain without a status byte reported as answered")
		}
	})
}

// FuzzSerial replays arbitrary port accesses and host input on a UART. Each
// op is 2 bytes: register (low 3 bits; bit 3 makes it a read, bit 4 feeds
// value as host input instead) and value. The UART must not panic, must
// keep its transmitter empty, and must only ever change the interrupt
// level (never repeat it).
func FuzzSerial(f *testing.F) {
	f.Add([]byte{uartIER, ierTHRI | ierRDI, 0x10, 'a', 0x08 | uartIIR, 0, 0x08 | uartRBR, 0})
	f.Add([]byte{uartLCR, lcrDLAB, uartRBR, 1, uartIER, 0, uartLCR, 3, uartRBR, 'x'})
	f.Add([]byte{uartMCR, mcrLoop | 0x0a, 0x08 | uartMSR, 0, uartRBR, 'y', 0x08 | uartRBR, 0})
	f.Add([]byte{uartIIR, 0x07, 0x08 | uartIIR, 0, uartSCR, 0x5a, 0x08 | uartSCR, 0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		var last *bool
		s := NewSerial(nil, func(l bool) {
			if last != nil && *last == l {
				t.Errorf("interrupt level %v reported twice in a row", l)
			}
			last = &l
		})
		for i := 0; i+1 < len(ops); i += 2 {
			op, v := ops[i], ops[i+1]
			off := uint64(op & 7)
			switch {
			case op&0x10 != 0:
				s.Receive([]byte{v})
			case op&0x08 != 0:
				var p [2]byte
				s.Read(off, p[:1+int(op>>5&1)])
			default:
				s.Write(off, []byte{v})
			}
			if lsr := in(s, uartLSR); lsr&(lsrTHRE|lsrTEMT) != lsrTHRE|lsrTEMT {
				t.Fatalf("LSR = %#x, transmitter not empty", lsr)
			}
		}
	})
}

// FuzzBlockQueue drives a Block through its transport with an arbitrary
// descriptor table and available ring (the first 256 + 36 bytes of ring)
// and arbitrary guest data after them, then kicks. Nothing may panic, the
// disk must not be touched out of bounds, and a second kick must not hang.
func FuzzBlockQueue(f *testing.F) {
	// One well-formed IN request: desc 0 header, desc 1 data, desc 2 status.
	seed := make([]byte, 256+36+blkHeaderLen)
	put := func(i int, addr uint64, n uint32, flags, next uint16) {
		e := seed[16*i:]
		binary.LittleEndian.PutUint64(e, addr)
		binary.LittleEndian.PutUint32(e[8:], n)
		binary.LittleEndian.PutUint16(e[12:], flags)
		binary.LittleEndian.PutUint16(e[14:], next)
	}
	put(0, drvData, blkHeaderLen, descFNext, 1)
	put(1, drvData+0x1000, SectorSize, descFNext|descFWrite, 2)
	put(2, drvData+0x2000, 1, descFWrite, 0)
	binary.LittleEndian.PutUint16(seed[256+2:], 1) // avail idx 1, ring[0] = 0
	copy(seed[256+36:], blkHeaderBytes(blkTIn, 3))
	f.Add(seed)
	f.Add(make([]byte, 300))

	f.Fuzz(func(t *testing.T, ring []byte) {
		disk := &boundedDisk{t: t, data: make([]byte, 8*SectorSize)}
		b, err := newBlock(disk, int64(len(disk.data)), BlockOptions{})
		if err != nil {
			t.Fatal(err)
		}
		d := newTestDriver(t, b)
		n := copy(d.mem[drvDesc:drvDesc+256], ring)
		n += copy(d.mem[drvAvail:drvAvail+36], ring[n:])
		copy(d.mem[drvData:drvData+0x10000], ring[n:])
		d.w(regQueueNotify, 0)
		d.w(regQueueNotify, 0)
	})
}

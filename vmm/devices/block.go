package devices

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/greatjail/cvm/vmm/virtio"
)

// SectorSize is the virtio-blk sector: capacity, request offsets and data
// lengths are in these units.
const SectorSize = 512

// Block feature bits (virtio 1.2 §5.2.3).
const (
	blkFSegMax  = 1 << 2
	blkFRO      = 1 << 5
	blkFBlkSize = 1 << 6
	blkFFlush   = 1 << 9
)

// Request types and status values (virtio 1.2 §5.2.6).
const (
	blkTIn    = 0
	blkTOut   = 1
	blkTFlush = 4
	blkTGetID = 8

	blkSOK     = 0
	blkSIOErr  = 1
	blkSUnsupp = 2

	blkHeaderLen = 16
	// BlockIDLen is the length of the GET_ID answer: the device serial,
	// NUL-padded.
	BlockIDLen = 20

	blkQueueSize = 256
	blkConfigLen = 24 // through blk_size
	blkChunk     = 128 << 10
)

// disk is what Block does its I/O on; *os.File implements it, tests wrap it.
type disk interface {
	io.ReaderAt
	io.WriterAt
	Sync() error
}

// BlockOptions configures NewBlock.
type BlockOptions struct {
	// ReadOnly offers VIRTIO_BLK_F_RO and fails every write with IOERR.
	ReadOnly bool
	// ID is the serial the guest reads with GET_ID (/sys/block/vda/serial);
	// at most BlockIDLen bytes.
	ID string
}

// Block is a virtio block device (virtio 1.2 §5.2) backed by a file. The
// capacity is the file's size at NewBlock rounded down to whole sectors;
// requests beyond it fail with IOERR. File I/O uses ReadAt and WriteAt only,
// so the file offset is never moved. Its virtio.Device methods are called
// by its virtio.MMIO under the transport's lock (see the package doc).
//
// A Block can also change its medium while the guest runs (Swap), the way a
// removable drive does: NewEmptyBlock makes one with no medium (capacity 0,
// every request failing with IOERR), Swap puts a file in or takes it out
// and raises the configuration-change interrupt, and the driver re-reads
// the capacity (Linux: virtblk_config_changed).
type Block struct {
	sig Signaler
	// offerRO is whether the device offers VIRTIO_BLK_F_RO; fixed at
	// construction, since the driver reads features only once.
	offerRO bool

	// mu guards the medium below. Notify holds it while it serves the
	// queue, so Swap waits for requests in progress and no request sees
	// half of a swap. Lock order: the transport's lock, then mu.
	mu       sync.Mutex
	disk     disk // nil: no medium
	sectors  uint64
	readOnly bool
	id       [BlockIDLen]byte

	// Set by Activate, cleared by Reset; only touched under the
	// transport's lock.
	mem virtio.Memory
	q   *virtio.Queue
	buf []byte
}

var _ virtio.Device = (*Block)(nil)

// NewBlock returns a block device over the regular file f, which the caller
// keeps owning and closes after the device is done. f must be open for
// writing unless opts.ReadOnly.
func NewBlock(f *os.File, opts BlockOptions) (*Block, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("devices: block: %w", err)
	}
	return newBlock(f, fi.Size(), opts)
}

func newBlock(d disk, size int64, opts BlockOptions) (*Block, error) {
	b := &Block{sig: nopSignaler{}, offerRO: opts.ReadOnly}
	if err := b.setMedium(d, size, opts); err != nil {
		return nil, err
	}
	return b, nil
}

// NewEmptyBlock returns a block device with no medium: capacity 0, and
// every request (GET_ID too, which Linux shows as an empty serial) fails
// with IOERR until Swap puts a file in. It never offers VIRTIO_BLK_F_RO,
// which the driver reads only once, so that a writable medium can come
// later; a read-only medium fails writes with IOERR instead.
func NewEmptyBlock() *Block { return &Block{sig: nopSignaler{}} }

// Swap replaces the device's medium with the regular file f (nil: no
// medium; opts is then ignored), which the caller keeps owning, and raises
// the configuration-change interrupt (when the Signaler given to Attach
// has ConfigChanged, as *virtio.MMIO does) so that the driver re-reads the
// capacity. The capacity becomes f's size rounded down to whole sectors, the
// serial opts.ID; opts.ReadOnly fails writes with IOERR (the feature bit
// offered to the driver does not change). When Swap returns, no request
// uses the previous file any more: the caller may close it. Requests the
// driver queued but the device has not served yet are served from f.
// Swap is safe to call while the guest runs, from any goroutine.
func (b *Block) Swap(f *os.File, opts BlockOptions) error {
	var d disk
	var size int64
	if f != nil {
		fi, err := f.Stat()
		if err != nil {
			return fmt.Errorf("devices: block: %w", err)
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("devices: block: %s is not a regular file: %w", f.Name(), ErrInvalid)
		}
		d, size = f, fi.Size()
	}
	return b.swap(d, size, opts)
}

func (b *Block) swap(d disk, size int64, opts BlockOptions) error {
	b.mu.Lock()
	err := b.setMedium(d, size, opts)
	b.mu.Unlock()
	if err != nil {
		return err
	}
	if c, ok := b.sig.(configNotifier); ok {
		c.ConfigChanged()
	}
	return nil
}

// configNotifier is a Signaler that can also raise the
// configuration-change interrupt, as *virtio.MMIO does.
type configNotifier interface{ ConfigChanged() }

var _ configNotifier = (*virtio.MMIO)(nil)

// setMedium checks and installs a medium; d nil empties the device.
// Preconditions: b.mu held, or b not shared yet.
func (b *Block) setMedium(d disk, size int64, opts BlockOptions) error {
	if d == nil {
		b.disk, b.sectors, b.readOnly, b.id = nil, 0, false, [BlockIDLen]byte{}
		return nil
	}
	if len(opts.ID) > BlockIDLen {
		return fmt.Errorf("devices: block: id %q longer than %d bytes: %w", opts.ID, BlockIDLen, ErrInvalid)
	}
	if size < SectorSize {
		return fmt.Errorf("devices: block: backing file of %d bytes holds no %d-byte sector: %w", size, SectorSize, ErrInvalid)
	}
	b.disk, b.sectors, b.readOnly = d, uint64(size)/SectorSize, opts.ReadOnly
	b.id = [BlockIDLen]byte{}
	copy(b.id[:], opts.ID)
	return nil
}

// Attach sets where the device signals used buffers, configuration changes
// and resets; call it once, with the device's *virtio.MMIO, before the
// guest runs.
func (b *Block) Attach(s Signaler) { b.sig = s }

// Capacity returns the device size in sectors (0 without a medium).
func (b *Block) Capacity() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sectors
}

// Type implements virtio.Device.
func (b *Block) Type() uint32 { return TypeBlock }

// Features implements virtio.Device.
func (b *Block) Features() uint64 {
	f := uint64(blkFSegMax | blkFBlkSize | blkFFlush)
	if b.offerRO {
		f |= blkFRO
	}
	return f
}

// ConfigRead implements virtio.Device: capacity, seg_max and blk_size of
// struct virtio_blk_config; everything else reads as zero.
func (b *Block) ConfigRead(off uint64, p []byte) {
	clear(p)
	var cfg [blkConfigLen]byte
	binary.LittleEndian.PutUint64(cfg[0:], b.Capacity())
	binary.LittleEndian.PutUint32(cfg[12:], blkQueueSize-2) // seg_max: the ring less header and status
	binary.LittleEndian.PutUint32(cfg[20:], SectorSize)
	if off < uint64(len(cfg)) {
		copy(p, cfg[off:])
	}
}

// ConfigWrite implements virtio.Device; the configuration is read-only.
func (b *Block) ConfigWrite(off uint64, p []byte) {}

// QueueMaxSize implements virtio.Device.
func (b *Block) QueueMaxSize(int) uint16 { return blkQueueSize }

// NumQueues implements virtio.Device.
func (b *Block) NumQueues() int { return 1 }

// Activate implements virtio.Device.
func (b *Block) Activate(m virtio.Memory, qs []*virtio.Queue) error {
	b.mem, b.q = m, qs[0]
	return nil
}

// Reset implements virtio.Device.
func (b *Block) Reset() { b.mem, b.q, b.buf = nil, nil, nil }

// Notify implements virtio.Device: it serves every available request
// synchronously, then interrupts the driver if it asked to be.
func (b *Block) Notify(queue int) {
	if queue != 0 || b.q == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	serve(b.q, b.mem, b.sig, func(c *virtio.Chain) (uint32, bool) { return b.handle(b.mem, c) })
}

// handle answers one request: a 16-byte header in the readable buffers,
// then data, and a status byte as the last writable byte. It returns the
// used length (data written into the guest plus the status byte), and false
// if the chain has no writable byte to put a status in or guest memory
// fails under the status byte. Every request fails with IOERR while the
// device has no medium.
// Preconditions: b.mu held.
func (b *Block) handle(m virtio.Memory, c *virtio.Chain) (uint32, bool) {
	rlen, wlen := totalLen(c.Readable), totalLen(c.Writable)
	if wlen == 0 {
		return 0, false
	}
	statusAddr := subDescs(c.Writable, wlen-1, 1)[0].Addr
	dataW := subDescs(c.Writable, 0, wlen-1)

	var n uint64
	status := byte(blkSIOErr)
	var hdr [blkHeaderLen]byte
	if b.disk != nil && rlen >= blkHeaderLen && gather(m, c.Readable, hdr[:]) == nil {
		typ := binary.LittleEndian.Uint32(hdr[0:])
		sector := binary.LittleEndian.Uint64(hdr[8:])
		dataR := subDescs(c.Readable, blkHeaderLen, rlen-blkHeaderLen)
		switch typ {
		case blkTIn:
			n, status = b.read(m, sector, dataW)
		case blkTOut:
			status = b.write(m, sector, dataR)
		case blkTFlush:
			if b.disk.Sync() == nil {
				status = blkSOK
			}
		case blkTGetID:
			n, status = b.getID(m, dataW)
		default:
			status = blkSUnsupp
		}
	}
	if err := m.WriteAt([]byte{status}, statusAddr); err != nil {
		return uint32(n), false
	}
	return uint32(n + 1), true
}

// span checks a transfer of length bytes at sector and returns its byte
// offset in the file.
func (b *Block) span(sector, length uint64) (int64, bool) {
	if length%SectorSize != 0 || sector > b.sectors || length/SectorSize > b.sectors-sector {
		return 0, false
	}
	return int64(sector * SectorSize), true
}

func (b *Block) chunk() []byte {
	if b.buf == nil {
		b.buf = make([]byte, blkChunk)
	}
	return b.buf
}

// read copies from the file into the guest buffers ds and returns how many
// bytes it wrote into the guest.
func (b *Block) read(m virtio.Memory, sector uint64, ds []virtio.Desc) (uint64, byte) {
	off, ok := b.span(sector, totalLen(ds))
	if !ok {
		return 0, blkSIOErr
	}
	var n uint64
	buf := b.chunk()
	for _, d := range ds {
		for done := uint64(0); done < uint64(d.Len); {
			p := buf[:min(uint64(d.Len)-done, blkChunk)]
			if k, _ := b.disk.ReadAt(p, off); k < len(p) {
				return n, blkSIOErr // short read: the file shrank under us
			}
			if m.WriteAt(p, d.Addr+done) != nil {
				return n, blkSIOErr
			}
			off += int64(len(p))
			done += uint64(len(p))
			n += uint64(len(p))
		}
	}
	return n, blkSOK
}

// write copies the guest buffers ds into the file.
func (b *Block) write(m virtio.Memory, sector uint64, ds []virtio.Desc) byte {
	if b.readOnly {
		return blkSIOErr
	}
	off, ok := b.span(sector, totalLen(ds))
	if !ok {
		return blkSIOErr
	}
	buf := b.chunk()
	for _, d := range ds {
		for done := uint64(0); done < uint64(d.Len); {
			p := buf[:min(uint64(d.Len)-done, blkChunk)]
			if m.ReadAt(p, d.Addr+done) != nil {
				return blkSIOErr
			}
			if _, err := b.disk.WriteAt(p, off); err != nil {
				return blkSIOErr
			}
			off += int64(len(p))
			done += uint64(len(p))
		}
	}
	return blkSOK
}

// getID writes as much of the 20-byte serial as fits into ds.
func (b *Block) getID(m virtio.Memory, ds []virtio.Desc) (uint64, byte) {
	id := b.id[:min(totalLen(ds), BlockIDLen)]
	var n uint64
	for _, d := range ds {
		if len(id) == 0 {
			break
		}
		k := min(uint64(d.Len), uint64(len(id)))
		if m.WriteAt(id[:k], d.Addr) != nil {
			return n, blkSIOErr
		}
		id, n = id[k:], n+k
	}
	return n, blkSOK
}

func totalLen(ds []virtio.Desc) uint64 {
	var t uint64
	for _, d := range ds {
		t += uint64(d.Len)
	}
	return t
}

// subDescs returns the buffers covering bytes [off, off+n) of ds, which
// must lie within totalLen(ds).
func subDescs(ds []virtio.Desc, off, n uint64) []virtio.Desc {
	var out []virtio.Desc
	for _, d := range ds {
		if n == 0 {
			break
		}
		l := uint64(d.Len)
		if off >= l {
			off -= l
			continue
		}
		k := min(l-off, n)
		out = append(out, virtio.Desc{Addr: d.Addr + off, Len: uint32(k)})
		off, n = 0, n-k
	}
	return out
}

// gather fills p from the start of ds, which must hold at least len(p)
// bytes.
func gather(m virtio.Memory, ds []virtio.Desc, p []byte) error {
	for _, d := range subDescs(ds, 0, uint64(len(p))) {
		if err := m.ReadAt(p[:d.Len], d.Addr); err != nil {
			return err
		}
		p = p[d.Len:]
	}
	return nil
}

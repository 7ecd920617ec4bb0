package devices

import (
	"io"

	"github.com/greatjail/cvm/vmm/virtio"
)

// Virtio device IDs.
const (
	TypeBlock = 2
	TypeRNG   = 4
)

// rngQueueSize is the entropy queue's maximum size.
const rngQueueSize = 256

// rngMaxChain caps how many bytes one request is filled with; Linux asks for
// at most a page or so. Writable space beyond it is left untouched.
const rngMaxChain = 64 << 10

// RNG is a virtio entropy device (virtio 1.2 §5.4): one request queue whose
// writable buffers it fills from a reader. Its methods are called by its
// virtio.MMIO under the transport's lock (see the package doc).
type RNG struct {
	src io.Reader
	sig Signaler

	// Set by Activate, cleared by Reset.
	mem virtio.Memory
	q   *virtio.Queue
	buf []byte
}

var _ virtio.Device = (*RNG)(nil)

// NewRNG returns an entropy device that reads from src (crypto/rand.Reader
// in production). A read error from src ends the request with the bytes
// read so far.
func NewRNG(src io.Reader) *RNG { return &RNG{src: src, sig: nopSignaler{}} }

// Attach sets where the device signals used buffers; call it once, with the
// device's *virtio.MMIO, before the guest runs.
func (r *RNG) Attach(s Signaler) { r.sig = s }

// Type implements virtio.Device.
func (r *RNG) Type() uint32 { return TypeRNG }

// Features implements virtio.Device; the entropy device has none.
func (r *RNG) Features() uint64 { return 0 }

// ConfigRead implements virtio.Device; there is no configuration space.
func (r *RNG) ConfigRead(off uint64, p []byte) { clear(p) }

// ConfigWrite implements virtio.Device; writes are ignored.
func (r *RNG) ConfigWrite(off uint64, p []byte) {}

// QueueMaxSize implements virtio.Device.
func (r *RNG) QueueMaxSize(int) uint16 { return rngQueueSize }

// NumQueues implements virtio.Device.
func (r *RNG) NumQueues() int { return 1 }

// Activate implements virtio.Device. A driver that did not make the queue
// ready gets a device that ignores kicks.
func (r *RNG) Activate(m virtio.Memory, qs []*virtio.Queue) error {
	r.mem, r.q = m, qs[0]
	return nil
}

// Reset implements virtio.Device.
func (r *RNG) Reset() { r.mem, r.q, r.buf = nil, nil, nil }

// Notify implements virtio.Device: it serves every available request, then
// interrupts the driver if it asked to be.
func (r *RNG) Notify(queue int) {
	if queue != 0 || r.q == nil {
		return
	}
	serve(r.q, r.mem, r.sig, r.fill)
}

// fill writes entropy into c's writable buffers, up to rngMaxChain bytes,
// and returns how many it wrote and false if guest memory failed.
func (r *RNG) fill(c *virtio.Chain) (uint32, bool) {
	var total uint32
	for _, d := range c.Writable {
		for done := uint32(0); done < d.Len && total < rngMaxChain; {
			k := min(d.Len-done, rngMaxChain-total, 4096)
			if r.buf == nil {
				r.buf = make([]byte, 4096)
			}
			b := r.buf[:k]
			got, err := io.ReadFull(r.src, b)
			if got > 0 {
				if err := r.mem.WriteAt(b[:got], d.Addr+uint64(done)); err != nil {
					return total, false
				}
				done += uint32(got)
				total += uint32(got)
			}
			if err != nil {
				return total, true
			}
		}
	}
	return total, true
}

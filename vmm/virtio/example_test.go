package virtio_test

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/greatjail/cvm/vmm/virtio"
)

// Example plays both sides of one request: the "guest" lays out a queue and
// a two-descriptor chain by hand, the device pops it, reads the request,
// writes a reply and returns the chain.
func Example() {
	mem := make(virtio.SliceMemory, 64<<10)
	const desc, avail, used = 0x1000, 0x2000, 0x3000
	q, err := virtio.NewQueue(mem, virtio.QueueConfig{Size: 8, DescTable: desc, DriverArea: avail, DeviceArea: used})
	if err != nil {
		fmt.Println(err)
		return
	}

	// Guest: descriptor 0 is the request (readable), descriptor 1 the reply
	// buffer (writable); publish head 0 in the available ring.
	le := binary.LittleEndian
	copy(mem[0x8000:], "ping")
	le.PutUint64(mem[desc:], 0x8000)
	le.PutUint32(mem[desc+8:], 4)
	le.PutUint16(mem[desc+12:], 1) // NEXT
	le.PutUint16(mem[desc+14:], 1)
	le.PutUint64(mem[desc+16:], 0x9000)
	le.PutUint32(mem[desc+24:], 16)
	le.PutUint16(mem[desc+28:], 2) // WRITE
	le.PutUint16(mem[avail+4:], 0)
	le.PutUint16(mem[avail+2:], 1)

	// Device.
	c, err := q.Pop(mem)
	if err != nil {
		fmt.Println(err)
		return
	}
	req, _ := c.ReadAll(mem, 4096)
	n, _ := c.WriteAll(mem, []byte("pong"))
	_ = q.Push(mem, c.Head, uint32(n))
	notify, _ := q.NeedsNotify(mem)

	fmt.Printf("request %q, reply %q, used idx %d, interrupt %v\n",
		req, mem[0x9000:0x9000+n], le.Uint16(mem[used+2:]), notify)
	// Output: request "ping", reply "pong", used idx 1, interrupt true
}

func BenchmarkPopPush(b *testing.B) {
	mem := make(virtio.SliceMemory, 64<<10)
	const desc, avail, used = 0x1000, 0x2000, 0x3000
	const size = 256
	q, err := virtio.NewQueue(mem, virtio.QueueConfig{Size: size, DescTable: desc, DriverArea: avail, DeviceArea: used, EventIdx: true})
	if err != nil {
		b.Fatal(err)
	}
	le := binary.LittleEndian
	for i := range uint64(size) { // every descriptor: a 512-byte writable buffer
		le.PutUint64(mem[desc+16*i:], 0x8000)
		le.PutUint32(mem[desc+16*i+8:], 512)
		le.PutUint16(mem[desc+16*i+12:], 2)
	}
	var idx uint16
	for b.Loop() {
		le.PutUint16(mem[avail+4+2*uint64(idx%size):], idx%size)
		idx++
		le.PutUint16(mem[avail+2:], idx)
		c, err := q.Pop(mem)
		if err != nil || c == nil {
			b.Fatal(c, err)
		}
		if err := q.Push(mem, c.Head, 512); err != nil {
			b.Fatal(err)
		}
		if _, err := q.NeedsNotify(mem); err != nil {
			b.Fatal(err)
		}
	}
}

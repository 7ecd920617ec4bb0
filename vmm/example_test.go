package vmm_test

import (
	"fmt"

	"github.com/greatjail/cvm/vmm"
)

type port struct{}

func (port) Read(off uint64, p []byte)  { p[0] = byte(off) }
func (port) Write(off uint64, p []byte) { fmt.Printf("write %#x at offset %d\n", p[0], off) }

// A Bus routes guest accesses to devices by address; nothing answers with
// all ones.
func ExampleBus() {
	var b vmm.Bus
	if err := b.Register("dev", 0x3f8, 8, port{}); err != nil {
		panic(err)
	}
	b.Write(0x3f9, []byte{0x42})
	p := make([]byte, 1)
	b.Read(0x3fa, p)
	fmt.Printf("read %#x\n", p[0])
	b.Read(0x500, p)
	fmt.Printf("unclaimed %#x\n", p[0])
	// Output:
	// write 0x42 at offset 1
	// read 0x2
	// unclaimed 0xff
}

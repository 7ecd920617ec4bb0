package devices_test

import (
	"fmt"
	"os"
	"strings"

	"github.com/greatjail/cvm/vmm/devices"
	"github.com/greatjail/cvm/vmm/virtio"
)

// Example wires the legacy devices the way the VMM's port-I/O dispatcher
// does, and a block device onto its virtio-mmio transport.
func Example() {
	var console strings.Builder
	com1 := devices.NewSerial(&console, func(level bool) { /* KVM_IRQ_LINE, GSI COM1IRQ */ })
	rebooted := false
	kbd := devices.NewI8042(func() { rebooted = true })

	// A guest port store: outb('h', 0x3f8) and so on, then reboot=k.
	for _, c := range []byte("hi\n") {
		com1.Write(0x3f8-devices.COM1Base, []byte{c})
	}
	kbd.Write(0x64-devices.I8042Base, []byte{0xfe})

	// A block device over a disk image, on its transport.
	f, err := os.CreateTemp("", "disk-*.img")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if err := f.Truncate(1 << 20); err != nil {
		fmt.Println(err)
		return
	}
	blk, err := devices.NewBlock(f, devices.BlockOptions{ReadOnly: true, ID: "rootfs"})
	if err != nil {
		fmt.Println(err)
		return
	}
	mem := make(virtio.SliceMemory, 1<<20)
	transport := virtio.NewMMIO(blk, mem, func(level bool) { /* irqfd */ })
	blk.Attach(transport)

	fmt.Printf("console %q, rebooted %v, disk %d sectors\n", console.String(), rebooted, blk.Capacity())
	// Output: console "hi\n", rebooted true, disk 2048 sectors
}

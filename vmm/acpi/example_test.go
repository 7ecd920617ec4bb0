package acpi_test

import (
	"fmt"
	"log"

	"github.com/greatjail/cvm/vmm/acpi"
)

func Example() {
	tables, err := acpi.Build(acpi.Config{
		VCPUs: 2,
		Devices: []acpi.Device{
			{Name: "V000", Base: 0xc0000000, Size: 0x1000, IRQ: 5}, // virtio-blk
			{Name: "V001", Base: 0xc0001000, Size: 0x1000, IRQ: 6}, // virtio-vsock
		},
		Serials: []acpi.Serial{{Name: "COM1", Port: 0x3f8, IRQ: 4}},
	}, 0x000e1000)
	if err != nil {
		log.Fatal(err)
	}
	// Copy each blob into guest memory at its GPA, reserve the range in
	// the e820 map, and set boot_params.acpi_rsdp_addr = tables.RSDPAddr.
	for _, b := range tables.Blobs() {
		fmt.Printf("%s at %#x, %d bytes\n", b.Name, b.GPA, len(b.Data))
	}
	// The VMM powers off when the guest writes this byte to the sleep
	// control port.
	fmt.Printf("power off: outb %#x to port %#x\n", acpi.PowerOffValue, acpi.DefaultSleepPort)
	// Output:
	// RSDP at 0xe0000, 36 bytes
	// XSDT at 0xe1000, 52 bytes
	// FADT at 0xe1038, 276 bytes
	// MADT at 0xe1150, 72 bytes
	// DSDT at 0xe1198, 243 bytes
	// power off: outb 0x34 to port 0x3c0
}

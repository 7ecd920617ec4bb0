package loader_test

import (
	"fmt"
	"log"
	"os"

	"github.com/greatjail/cvm/vmm/loader"
)

// Lay out a direct boot of a distro kernel with an initrd; a VMM backend
// then executes the plan and the measurement code hashes its pages.
func ExampleLinux() {
	kernel, err := os.ReadFile("vmlinuz")
	if err != nil {
		log.Fatal(err)
	}
	initrd, err := os.ReadFile("initrd.cpio")
	if err != nil {
		log.Fatal(err)
	}
	p, err := loader.Linux(loader.BootOptions{
		Kernel:     kernel,
		Initrd:     initrd,
		Cmdline:    "console=ttyS0 panic=-1",
		MemorySize: 512 << 20,
		VCPUs:      2,
	})
	if err != nil {
		log.Fatal(err)
	}
	for _, b := range p.Blobs {
		fmt.Printf("%-12s %#010x %#x %v\n", b.Name, b.GPA, b.Size, b.Type)
	}
	fmt.Printf("entry %#x in %v\n", p.BSP.RIP, p.BSP.Mode)
}

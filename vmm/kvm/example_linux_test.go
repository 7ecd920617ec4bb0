package kvm_test

import (
	"context"
	"fmt"
	"log"

	"github.com/greatjail/cvm/vmm/kvm"
)

// Example runs a three-instruction real-mode guest that writes a byte to
// an I/O port and halts. It needs /dev/kvm, so it is compiled but not run
// by go test.
func Example() {
	sys, err := kvm.Open("/dev/kvm")
	if err != nil {
		log.Fatal(err)
	}
	defer sys.Close()

	mem, err := kvm.Mmap(0x10000)
	if err != nil {
		log.Fatal(err)
	}
	defer kvm.Munmap(mem)                                    // deferred first, so it runs after vm.Close
	copy(mem[0x1000:], []byte{0xb0, 0x42, 0xe6, 0x10, 0xf4}) // mov al,0x42; out 0x10,al; hlt

	vm, err := sys.CreateVM()
	if err != nil {
		log.Fatal(err)
	}
	defer vm.Close() // also closes the vCPU
	if err := vm.SetUserMemoryRegion(0, 0, mem, 0); err != nil {
		log.Fatal(err)
	}
	cpu, err := vm.CreateVCPU(0)
	if err != nil {
		log.Fatal(err)
	}
	sregs, err := cpu.Sregs()
	if err != nil {
		log.Fatal(err)
	}
	sregs.CS.Base, sregs.CS.Selector = 0, 0
	if err := cpu.SetSregs(sregs); err != nil {
		log.Fatal(err)
	}
	if err := cpu.SetRegs(kvm.Regs{RIP: 0x1000, RFLAGS: 2}); err != nil {
		log.Fatal(err)
	}
	err = cpu.RunLoop(context.Background(), func(e kvm.Exit) (bool, error) {
		switch e.Reason {
		case kvm.ExitIO:
			fmt.Printf("port %#x <- %#x\n", e.IO.Port, e.IO.Data)
			return false, nil
		case kvm.ExitHLT:
			return true, nil
		}
		return true, fmt.Errorf("unexpected exit %s", e)
	})
	if err != nil {
		log.Fatal(err)
	}
}

package kvm

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// Tests in this file are tier kvm: they run tiny guests on /dev/kvm.

const kvmTSSAddr = 0xfffbd000 // Firecracker's choice, above guest RAM

func openKVM(t *testing.T) *System {
	t.Helper()
	if _, err := os.Stat("/dev/kvm"); errors.Is(err, fs.ErrNotExist) {
		t.Skip("tier kvm: /dev/kvm does not exist (no KVM driver bound on this host)")
	}
	s, err := Open("/dev/kvm")
	if errors.Is(err, fs.ErrPermission) {
		t.Skipf("tier kvm: /dev/kvm is not readable and writable by this user: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// newGuest creates a VM with memSize bytes of RAM at guest address 0 and
// one vCPU, all released at the end of the test.
func newGuest(t *testing.T, s *System, memSize int) (*VM, []byte, *VCPU) {
	t.Helper()
	mem, err := Mmap(memSize)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Munmap(mem) })
	vm, err := s.CreateVM()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vm.Close() })
	if err := vm.SetTSSAddr(kvmTSSAddr); err != nil {
		t.Fatal(err)
	}
	if err := vm.SetUserMemoryRegion(0, 0, mem, 0); err != nil {
		t.Fatal(err)
	}
	cpu, err := vm.CreateVCPU(0)
	if err != nil {
		t.Fatal(err)
	}
	return vm, mem, cpu
}

// runUntilHLT runs cpu, recording each exit (with its data copied) until
// HLT or, as a guard against a runaway guest, 16 exits.
func runUntilHLT(t *testing.T, cpu *VCPU) []Exit {
	t.Helper()
	var exits []Exit
	err := cpu.RunLoop(context.Background(), func(e Exit) (bool, error) {
		e.IO.Data = bytes.Clone(e.IO.Data)
		e.MMIO.Data = bytes.Clone(e.MMIO.Data)
		exits = append(exits, e)
		switch e.Reason {
		case ExitIO, ExitMMIO:
			if len(exits) >= 16 {
				return true, fmt.Errorf("no HLT after %d exits", len(exits))
			}
			return false, nil
		case ExitHLT:
			return true, nil
		}
		return true, fmt.Errorf("unexpected exit %s", e)
	})
	if err != nil {
		t.Fatalf("RunLoop: %v (exits so far: %v)", err, exits)
	}
	return exits
}

func TestRealModeGuest(t *testing.T) {
	s := openKVM(t)
	_, mem, cpu := newGuest(t, s, 0x10000)
	copy(mem[0x1000:], []byte{
		0xb0, 0x42, // mov al, 0x42
		0xe6, 0x10, // out 0x10, al
		0xf4, // hlt
	})
	sregs, err := cpu.Sregs()
	if err != nil {
		t.Fatal(err)
	}
	sregs.CS.Base, sregs.CS.Selector = 0, 0
	if err := cpu.SetSregs(sregs); err != nil {
		t.Fatal(err)
	}
	if err := cpu.SetRegs(Regs{RIP: 0x1000, RFLAGS: 2}); err != nil {
		t.Fatal(err)
	}
	got := runUntilHLT(t, cpu)
	want := []Exit{
		{Reason: ExitIO, IO: IOExit{Direction: IOOut, Size: 1, Port: 0x10, Count: 1, Data: []byte{0x42}}},
		{Reason: ExitHLT},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("exits mismatch (-want +got):\n%s", diff)
	}
	regs, err := cpu.Regs()
	if err != nil {
		t.Fatal(err)
	}
	if regs.RIP != 0x1005 || regs.RAX&0xff != 0x42 {
		t.Errorf("after HLT: RIP %#x AL %#x, want 0x1005, 0x42", regs.RIP, regs.RAX&0xff)
	}
}

// Long-mode guest layout.
const (
	lmGDT  = 0x500
	lmCode = 0x1000
	lmPML4 = 0x9000
	lmPDPT = 0xa000
	lmPD   = 0xb000 // four page directories, 0xb000-0xefff, mapping 4 GiB
	lmMMIO = 0xd0000000
)

// setupLongMode writes a GDT and identity page tables for the low 4 GiB
// (2 MiB pages) into mem and points cpu's special registers at them.
func setupLongMode(t *testing.T, mem []byte, cpu *VCPU) {
	t.Helper()
	le := binary.LittleEndian
	gdt := []uint64{
		0,                  // null
		0x00af9b000000ffff, // 0x08: 64-bit code, DPL 0
		0x00cf93000000ffff, // 0x10: flat data
		0x008f8b000000ffff, // 0x18: 64-bit TSS (busy)
	}
	for i, d := range gdt {
		le.PutUint64(mem[lmGDT+8*i:], d)
	}
	le.PutUint64(mem[lmPML4:], lmPDPT|0x3) // present, writable
	for i := range uint64(4) {
		pd := lmPD + 0x1000*i
		le.PutUint64(mem[lmPDPT+8*i:], pd|0x3)
		for j := range uint64(512) {
			le.PutUint64(mem[pd+8*j:], (i<<30|j<<21)|0x83) // present, writable, 2 MiB page
		}
	}
	sregs, err := cpu.Sregs()
	if err != nil {
		t.Fatal(err)
	}
	code := Segment{Limit: 0xffffffff, Selector: 0x08, Type: 11, Present: true, S: true, L: true, G: true}
	data := Segment{Limit: 0xffffffff, Selector: 0x10, Type: 3, Present: true, DB: true, S: true, G: true}
	sregs.CS = code
	sregs.DS, sregs.ES, sregs.FS, sregs.GS, sregs.SS = data, data, data, data, data
	sregs.TR = Segment{Limit: 0xfffff, Selector: 0x18, Type: 11, Present: true, G: true}
	sregs.GDT = DTable{Base: lmGDT, Limit: uint16(8*len(gdt) - 1)}
	sregs.IDT = DTable{}
	sregs.CR3 = lmPML4
	sregs.CR4 |= CR4PAE
	sregs.CR0 |= CR0PE | CR0PG | CR0ET
	sregs.EFER |= EFERLME | EFERLMA
	if err := cpu.SetSregs(sregs); err != nil {
		t.Fatal(err)
	}
}

func TestLongModeGuest(t *testing.T) {
	s := openKVM(t)
	_, mem, cpu := newGuest(t, s, 0x200000)
	cpuid, err := s.SupportedCPUID()
	if err != nil {
		t.Fatal(err)
	}
	if cpuid.Find(0, 0) == nil || cpuid.Find(0x80000001, 0) == nil {
		t.Fatalf("supported CPUID (%d entries) lacks leaf 0 or 0x80000001", len(cpuid.Entries))
	}
	if err := cpu.SetCPUID(cpuid); err != nil {
		t.Fatal(err)
	}
	setupLongMode(t, mem, cpu)
	copy(mem[lmCode:], []byte{
		0xb8, 0xef, 0xbe, 0xad, 0xde, // mov eax, 0xdeadbeef
		0xbb, 0x00, 0x00, 0x00, 0xd0, // mov ebx, 0xd0000000 (zero-extends into rbx)
		0x89, 0x03, // mov [rbx], eax
		0xb0, 0x42, // mov al, 0x42
		0xe6, 0x10, // out 0x10, al
		0xf4, // hlt
	})
	if err := cpu.SetRegs(Regs{RIP: lmCode, RSP: 0x8000, RFLAGS: 2}); err != nil {
		t.Fatal(err)
	}
	got := runUntilHLT(t, cpu)
	want := []Exit{
		{Reason: ExitMMIO, MMIO: MMIOExit{Addr: lmMMIO, IsWrite: true, Data: []byte{0xef, 0xbe, 0xad, 0xde}}},
		{Reason: ExitIO, IO: IOExit{Direction: IOOut, Size: 1, Port: 0x10, Count: 1, Data: []byte{0x42}}},
		{Reason: ExitHLT},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("exits mismatch (-want +got):\n%s", diff)
	}
}

func TestIRQChipAndPIT(t *testing.T) {
	s := openKVM(t)
	if n, err := s.CheckExtension(CapIRQChip); err != nil || n == 0 {
		t.Fatalf("CheckExtension(CapIRQChip) = %d, %v; want > 0", n, err)
	}
	vm, err := s.CreateVM()
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	if err := vm.SetIdentityMapAddr(0xfffbc000); err != nil {
		t.Fatal(err)
	}
	if err := vm.CreateIRQChip(); err != nil {
		t.Fatal(err)
	}
	if err := vm.CreatePIT2(); err != nil {
		t.Fatal(err)
	}
	for _, level := range []bool{true, false} {
		if err := vm.IRQLine(4, level); err != nil {
			t.Fatal(err)
		}
	}
}

func TestBadInput(t *testing.T) {
	s := openKVM(t)
	vm, mem, cpu := newGuest(t, s, 0x10000)

	if err := vm.SetUserMemoryRegion(1, 0x100000, mem[1:0x1001], 0); !errors.Is(err, ErrInvalid) {
		t.Errorf("SetUserMemoryRegion(unaligned) = %v, want ErrInvalid", err)
	}
	const sysenterCS = 0x174 // IA32_SYSENTER_CS, which KVM always emulates
	if err := cpu.SetMSRs([]MSR{{Index: sysenterCS, Data: 0x10}}); err != nil {
		t.Errorf("SetMSRs(IA32_SYSENTER_CS) = %v", err)
	}
	if got, err := cpu.MSRs(sysenterCS); err != nil || len(got) != 1 || got[0].Data != 0x10 {
		t.Errorf("MSRs(IA32_SYSENTER_CS) = %v, %v; want data 0x10", got, err)
	}
	if err := cpu.Close(); err != nil {
		t.Fatal(err)
	}
	if err := cpu.Close(); err != nil {
		t.Errorf("second VCPU.Close() = %v, want nil", err)
	}
	if _, err := cpu.Run(); !errors.Is(err, ErrClosed) {
		t.Errorf("Run on closed VCPU = %v, want ErrClosed", err)
	}
	if _, err := cpu.Regs(); !errors.Is(err, ErrClosed) {
		t.Errorf("Regs on closed VCPU = %v, want ErrClosed", err)
	}
	if err := vm.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.CreateVCPU(1); !errors.Is(err, ErrClosed) {
		t.Errorf("CreateVCPU on closed VM = %v, want ErrClosed", err)
	}
	if err := vm.IRQLine(4, true); !errors.Is(err, ErrClosed) {
		t.Errorf("IRQLine on closed VM = %v, want ErrClosed", err)
	}
}

// TestKick stops vCPUs that would never exit to userspace by themselves:
// one spinning in guest code, one halted with interrupts off under the
// in-kernel irqchip (so KVM handles the HLT and blocks in the kernel), and
// an application processor that never gets its startup IPI (KVM blocks it
// in the kernel and may answer EAGAIN, which is no error). Cancelling
// RunLoop's context must kick each out of KVM_RUN.
func TestKick(t *testing.T) {
	s := openKVM(t)
	for _, tc := range []struct {
		name    string
		code    []byte
		irqchip bool
		ap      bool // run vCPU 1, an application processor waiting for its startup IPI
	}{
		{"spin", []byte{0xeb, 0xfe}, false, false},              // jmp .
		{"halted", []byte{0xfa, 0xf4, 0xeb, 0xfd}, true, false}, // cli; hlt; jmp back to hlt
		{"ap-waiting-for-sipi", []byte{0xf4}, true, true},       // never runs: no SIPI
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem, err := Mmap(0x10000)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { Munmap(mem) })
			vm, err := s.CreateVM()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { vm.Close() })
			if err := vm.SetTSSAddr(kvmTSSAddr); err != nil {
				t.Fatal(err)
			}
			if tc.irqchip {
				if err := vm.CreateIRQChip(); err != nil {
					t.Fatal(err)
				}
			}
			if err := vm.SetUserMemoryRegion(0, 0, mem, 0); err != nil {
				t.Fatal(err)
			}
			cpu, err := vm.CreateVCPU(0)
			if err != nil {
				t.Fatal(err)
			}
			if tc.ap {
				if cpu, err = vm.CreateVCPU(1); err != nil {
					t.Fatal(err)
				}
			}
			copy(mem[0x1000:], tc.code)
			sregs, err := cpu.Sregs()
			if err != nil {
				t.Fatal(err)
			}
			sregs.CS.Base, sregs.CS.Selector = 0, 0
			if err := cpu.SetSregs(sregs); err != nil {
				t.Fatal(err)
			}
			if err := cpu.SetRegs(Regs{RIP: 0x1000, RFLAGS: 2}); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			entered := make(chan struct{})
			done := make(chan error, 1)
			go func() {
				close(entered)
				done <- cpu.RunLoop(ctx, func(e Exit) (bool, error) {
					return true, fmt.Errorf("unexpected exit %v", e)
				})
			}()
			<-entered
			// Give the vCPU time to enter the guest, so that the kick
			// finds it inside KVM_RUN (if it is still before it, the
			// test passes through the immediate_exit path instead).
			time.Sleep(300 * time.Millisecond)
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Fatalf("RunLoop after cancel: %v, want context.Canceled", err)
			}
			// A kick made while no RunLoop runs is not lost: the next
			// Run returns it as an ExitIntr exit.
			cpu.Kick()
			var got []ExitReason
			err = cpu.RunLoop(context.Background(), func(e Exit) (bool, error) {
				got = append(got, e.Reason)
				return true, nil
			})
			if err != nil || len(got) != 1 || got[0] != ExitIntr {
				t.Fatalf("RunLoop after Kick: exits %v, error %v; want one %v", got, err, ExitIntr)
			}
		})
	}
}

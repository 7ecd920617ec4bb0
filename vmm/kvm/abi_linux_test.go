package kvm

import (
	"testing"
	"unsafe"
)

// Expected numbers were printed by testdata/abi.c compiled with gcc against
// Debian 12's linux-libc-dev (<linux/kvm.h>, x86-64); see testdata/README.md.

func TestIoctlNumbers(t *testing.T) {
	tests := []struct {
		name string
		got  uintptr
		want uintptr
	}{
		{"KVM_GET_API_VERSION", ioctlGetAPIVersion, 0xAE00},
		{"KVM_CREATE_VM", ioctlCreateVM, 0xAE01},
		{"KVM_CHECK_EXTENSION", ioctlCheckExtension, 0xAE03},
		{"KVM_GET_VCPU_MMAP_SIZE", ioctlGetVCPUMmapSize, 0xAE04},
		{"KVM_GET_SUPPORTED_CPUID", ioctlGetSupportedCPUID, 0xC008AE05},
		{"KVM_CREATE_VCPU", ioctlCreateVCPU, 0xAE41},
		{"KVM_SET_USER_MEMORY_REGION", ioctlSetUserMemoryRegion, 0x4020AE46},
		{"KVM_SET_TSS_ADDR", ioctlSetTSSAddr, 0xAE47},
		{"KVM_SET_IDENTITY_MAP_ADDR", ioctlSetIdentityMapAddr, 0x4008AE48},
		{"KVM_CREATE_IRQCHIP", ioctlCreateIRQChip, 0xAE60},
		{"KVM_IRQ_LINE", ioctlIRQLine, 0x4008AE61},
		{"KVM_CREATE_PIT2", ioctlCreatePIT2, 0x4040AE77},
		{"KVM_RUN", ioctlRun, 0xAE80},
		{"KVM_GET_REGS", ioctlGetRegs, 0x8090AE81},
		{"KVM_SET_REGS", ioctlSetRegs, 0x4090AE82},
		{"KVM_GET_SREGS", ioctlGetSregs, 0x8138AE83},
		{"KVM_SET_SREGS", ioctlSetSregs, 0x4138AE84},
		{"KVM_GET_MSRS", ioctlGetMSRs, 0xC008AE88},
		{"KVM_SET_MSRS", ioctlSetMSRs, 0x4008AE89},
		{"KVM_GET_FPU", ioctlGetFPU, 0x81A0AE8C},
		{"KVM_SET_FPU", ioctlSetFPU, 0x41A0AE8D},
		{"KVM_SET_CPUID2", ioctlSetCPUID2, 0x4008AE90},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %#x, want %#x", tt.name, tt.got, tt.want)
		}
	}
}

func TestStructLayouts(t *testing.T) {
	var (
		regs  kvmRegs
		seg   kvmSegment
		dt    kvmDtable
		sregs kvmSregs
		fpu   kvmFPU
		ent   kvmCPUIDEntry2
		msr   kvmMSREntry
		mem   kvmUserspaceMemoryRegion
	)
	tests := []struct {
		name string
		got  uintptr
		want uintptr
	}{
		{"sizeof kvm_regs", unsafe.Sizeof(regs), 144},
		{"sizeof kvm_sregs", unsafe.Sizeof(sregs), 312},
		{"sizeof kvm_segment", unsafe.Sizeof(seg), 24},
		{"sizeof kvm_dtable", unsafe.Sizeof(dt), 16},
		{"sizeof kvm_fpu", unsafe.Sizeof(fpu), 416},
		{"sizeof kvm_cpuid2", unsafe.Sizeof(kvmCPUID2{}), 8},
		{"sizeof kvm_cpuid_entry2", unsafe.Sizeof(ent), 40},
		{"sizeof kvm_msrs", unsafe.Sizeof(kvmMSRs{}), 8},
		{"sizeof kvm_msr_entry", unsafe.Sizeof(msr), 16},
		{"sizeof kvm_userspace_memory_region", unsafe.Sizeof(mem), 32},
		{"sizeof kvm_irq_level", unsafe.Sizeof(kvmIRQLevel{}), 8},
		{"sizeof kvm_pit_config", unsafe.Sizeof(kvmPITConfig{}), 64},
		{"kvm_regs.rip", unsafe.Offsetof(regs.RIP), 128},
		{"kvm_regs.rflags", unsafe.Offsetof(regs.RFLAGS), 136},
		{"kvm_segment.limit", unsafe.Offsetof(seg.limit), 8},
		{"kvm_segment.selector", unsafe.Offsetof(seg.selector), 12},
		{"kvm_segment.type", unsafe.Offsetof(seg.typ), 14},
		{"kvm_segment.present", unsafe.Offsetof(seg.present), 15},
		{"kvm_segment.dpl", unsafe.Offsetof(seg.dpl), 16},
		{"kvm_segment.l", unsafe.Offsetof(seg.l), 19},
		{"kvm_segment.g", unsafe.Offsetof(seg.g), 20},
		{"kvm_segment.unusable", unsafe.Offsetof(seg.unusable), 22},
		{"kvm_dtable.limit", unsafe.Offsetof(dt.limit), 8},
		{"kvm_sregs.gdt", unsafe.Offsetof(sregs.gdt), 192},
		{"kvm_sregs.idt", unsafe.Offsetof(sregs.idt), 208},
		{"kvm_sregs.cr0", unsafe.Offsetof(sregs.cr0), 224},
		{"kvm_sregs.efer", unsafe.Offsetof(sregs.efer), 264},
		{"kvm_sregs.apic_base", unsafe.Offsetof(sregs.apicBase), 272},
		{"kvm_sregs.interrupt_bitmap", unsafe.Offsetof(sregs.interruptBitmap), 280},
		{"kvm_fpu.fcw", unsafe.Offsetof(fpu.fcw), 128},
		{"kvm_fpu.last_ip", unsafe.Offsetof(fpu.lastIP), 136},
		{"kvm_fpu.xmm", unsafe.Offsetof(fpu.xmm), 152},
		{"kvm_fpu.mxcsr", unsafe.Offsetof(fpu.mxcsr), 408},
		{"kvm_cpuid_entry2.eax", unsafe.Offsetof(ent.eax), 12},
		{"kvm_cpuid_entry2.padding", unsafe.Offsetof(ent.padding), 28},
		{"kvm_msr_entry.data", unsafe.Offsetof(msr.data), 8},
		{"kvm_userspace_memory_region.guest_phys_addr", unsafe.Offsetof(mem.guestPhysAddr), 8},
		{"kvm_userspace_memory_region.userspace_addr", unsafe.Offsetof(mem.userspaceAddr), 24},
		// kvm_run offsets used by the exit decoder.
		{"kvm_run.immediate_exit", runImmediateExit, 1},
		{"kvm_run.exit_reason", runExitReason, 8},
		{"kvm_run.io.direction", runIODirection, 32},
		{"kvm_run.io.size", runIOSize, 33},
		{"kvm_run.io.port", runIOPort, 34},
		{"kvm_run.io.count", runIOCount, 36},
		{"kvm_run.io.data_offset", runIODataOffset, 40},
		{"kvm_run.mmio.phys_addr", runMMIOPhysAddr, 32},
		{"kvm_run.mmio.data", runMMIOData, 40},
		{"kvm_run.mmio.len", runMMIOLen, 48},
		{"kvm_run.mmio.is_write", runMMIOIsWrite, 52},
		{"kvm_run.fail_entry.hardware_entry_failure_reason", runFailEntryReason, 32},
		{"kvm_run.fail_entry.cpu", runFailEntryCPU, 40},
		{"kvm_run.internal.suberror", runInternalSuberror, 32},
		{"kvm_run.internal.ndata", runNData, 36},
		{"kvm_run.internal.data", runData, 40},
		{"kvm_run.system_event.type", runSystemEventType, 32},
		{"kvm_run.hw.hardware_exit_reason", runHWExitReason, 32},
		{"kvm_run.kvm_valid_regs (end of union)", runUnionEnd, 288},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %d, want %d", tt.name, tt.got, tt.want)
		}
	}
}

func TestBuffers(t *testing.T) {
	buf, hdr, ents := cpuidBuffer(3)
	if got, want := len(buf)*8, 8+3*40; got != want {
		t.Errorf("cpuidBuffer(3) is %d bytes, want %d", got, want)
	}
	if hdr.nent != 3 || len(ents) != 3 {
		t.Errorf("cpuidBuffer(3): nent %d, %d entries; want 3, 3", hdr.nent, len(ents))
	}
	ents[2].padding[2] = 0xfeedface // the last entry must end with buf
	if buf[len(buf)-1]>>32 != 0xfeedface {
		t.Errorf("cpuidBuffer(3): last entry does not end at the buffer's end: %#x", buf[len(buf)-1])
	}
	mbuf, msrs := msrBuffer(2)
	msrs[1].data = 7
	if len(mbuf) != 5 || mbuf[4] != 7 || uint32(mbuf[0]) != 2 {
		t.Errorf("msrBuffer(2) = %#x, want 5 words, nmsrs 2, last data 7", mbuf)
	}
	if _, _, e := cpuidBuffer(0); e != nil {
		t.Errorf("cpuidBuffer(0) entries = %v, want nil", e)
	}
	if _, m := msrBuffer(0); m != nil {
		t.Errorf("msrBuffer(0) entries = %v, want nil", m)
	}
}

package kvm

// This file is the only place that knows the kernel's binary interface:
// struct layouts from <linux/kvm.h> and <asm/kvm.h> (x86-64), ioctl
// numbers, kvm_run offsets, and the raw ioctl calls. It is also the only
// file that imports unsafe. Layouts are checked against the kernel's sizes
// in abi_linux_test.go (numbers from testdata/abi.c).

import (
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// apiVersion is the only KVM API version Linux has ever reported.
const apiVersion = 12

// ioctl number encoding (asm-generic/ioctl.h): dir<<30 | size<<16 | type<<8 | nr.
const (
	kvmio = 0xAE

	iocNone  = 0
	iocWrite = 1
	iocRead  = 2
)

func ioc(dir, nr, size uintptr) uintptr {
	return dir<<30 | size<<16 | kvmio<<8 | nr
}

func ioNR(nr uintptr) uintptr            { return ioc(iocNone, nr, 0) }
func ior(nr, size uintptr) uintptr       { return ioc(iocRead, nr, size) }
func iow(nr, size uintptr) uintptr       { return ioc(iocWrite, nr, size) }
func iowr(nr, size uintptr) uintptr      { return ioc(iocRead|iocWrite, nr, size) }
func sizeOfU64() uintptr                 { var v uint64; return unsafe.Sizeof(v) }
func sizeOf[T any]() uintptr             { var v T; return unsafe.Sizeof(v) }
func ptr[T any](v *T) unsafe.Pointer     { return unsafe.Pointer(v) }
func words(n uintptr) []uint64           { return make([]uint64, (n+7)/8) }
func wordsPtr(b []uint64) unsafe.Pointer { return unsafe.Pointer(&b[0]) }

// Ioctl numbers, computed from their definitions in <linux/kvm.h>.
var (
	ioctlGetAPIVersion       = ioNR(0x00)
	ioctlCreateVM            = ioNR(0x01)
	ioctlCheckExtension      = ioNR(0x03)
	ioctlGetVCPUMmapSize     = ioNR(0x04)
	ioctlGetSupportedCPUID   = iowr(0x05, sizeOf[kvmCPUID2]())
	ioctlCreateVCPU          = ioNR(0x41)
	ioctlSetUserMemoryRegion = iow(0x46, sizeOf[kvmUserspaceMemoryRegion]())
	ioctlSetTSSAddr          = ioNR(0x47)
	ioctlSetIdentityMapAddr  = iow(0x48, sizeOfU64())
	ioctlCreateIRQChip       = ioNR(0x60)
	ioctlIRQLine             = iow(0x61, sizeOf[kvmIRQLevel]())
	ioctlCreatePIT2          = iow(0x77, sizeOf[kvmPITConfig]())
	ioctlRun                 = ioNR(0x80)
	ioctlGetRegs             = ior(0x81, sizeOf[kvmRegs]())
	ioctlSetRegs             = iow(0x82, sizeOf[kvmRegs]())
	ioctlGetSregs            = ior(0x83, sizeOf[kvmSregs]())
	ioctlSetSregs            = iow(0x84, sizeOf[kvmSregs]())
	ioctlGetMSRs             = iowr(0x88, sizeOf[kvmMSRs]())
	ioctlSetMSRs             = iow(0x89, sizeOf[kvmMSRs]())
	ioctlGetFPU              = ior(0x8c, sizeOf[kvmFPU]())
	ioctlSetFPU              = iow(0x8d, sizeOf[kvmFPU]())
	ioctlSetCPUID2           = iow(0x90, sizeOf[kvmCPUID2]())
)

// kvm_regs (asm/kvm.h), 144 bytes. Field names match [Regs] so the two
// convert directly.
type kvmRegs struct {
	RAX, RBX, RCX, RDX, RSI, RDI, RSP, RBP uint64
	R8, R9, R10, R11, R12, R13, R14, R15   uint64
	RIP, RFLAGS                            uint64
}

// kvm_segment, 24 bytes.
type kvmSegment struct {
	base                        uint64
	limit                       uint32
	selector                    uint16
	typ, present, dpl, db, s, l uint8
	g, avl, unusable, _         uint8
}

// kvm_dtable, 16 bytes.
type kvmDtable struct {
	base  uint64
	limit uint16
	_     [3]uint16
}

// kvm_sregs, 312 bytes.
type kvmSregs struct {
	cs, ds, es, fs, gs, ss, tr, ldt kvmSegment
	gdt, idt                        kvmDtable
	cr0, cr2, cr3, cr4, cr8         uint64
	efer, apicBase                  uint64
	interruptBitmap                 [4]uint64 // (KVM_NR_INTERRUPTS + 63) / 64
}

// kvm_fpu, 416 bytes.
type kvmFPU struct {
	fpr        [8][16]uint8
	fcw, fsw   uint16
	ftwx, _    uint8
	lastOpcode uint16
	lastIP     uint64
	lastDP     uint64
	xmm        [16][16]uint8
	mxcsr      uint32
	_          uint32
}

// kvm_userspace_memory_region, 32 bytes.
type kvmUserspaceMemoryRegion struct {
	slot          uint32
	flags         uint32
	guestPhysAddr uint64
	memorySize    uint64
	userspaceAddr uint64
}

// kvm_irq_level, 8 bytes (irq shares a union with status).
type kvmIRQLevel struct {
	irq, level uint32
}

// kvm_pit_config, 64 bytes.
type kvmPITConfig struct {
	flags uint32
	_     [15]uint32
}

const kvmPITSpeakerDummy = 1 // KVM_PIT_SPEAKER_DUMMY

// kvm_cpuid2 header, 8 bytes, followed by nent kvm_cpuid_entry2.
type kvmCPUID2 struct {
	nent, padding uint32
}

// kvm_cpuid_entry2, 40 bytes. Field names match [CPUIDEntry] apart from
// the padding.
type kvmCPUIDEntry2 struct {
	function, index, flags uint32
	eax, ebx, ecx, edx     uint32
	padding                [3]uint32
}

// kvm_msrs header, 8 bytes, followed by nmsrs kvm_msr_entry.
type kvmMSRs struct {
	nmsrs, pad uint32
}

// kvm_msr_entry, 16 bytes.
type kvmMSREntry struct {
	index, reserved uint32
	data            uint64
}

// kvm_run offsets (linux/kvm.h). The union starts at 32 and is 256 bytes;
// kvm_valid_regs follows it at 288.
const (
	runImmediateExit = 1
	runExitReason    = 8
	runUnion         = 32
	runUnionEnd      = runUnion + 256

	// union member io
	runIODirection  = 32 // u8
	runIOSize       = 33 // u8
	runIOPort       = 34 // u16
	runIOCount      = 36 // u32
	runIODataOffset = 40 // u64, from the start of kvm_run

	// union member mmio
	runMMIOPhysAddr = 32 // u64
	runMMIOData     = 40 // [8]u8
	runMMIOLen      = 48 // u32
	runMMIOIsWrite  = 52 // u8

	// union member fail_entry
	runFailEntryReason = 32 // u64 hardware_entry_failure_reason
	runFailEntryCPU    = 40 // u32

	// union member hw
	runHWExitReason = 32 // u64

	// union members internal and system_event share a shape
	runInternalSuberror = 32 // u32
	runSystemEventType  = 32 // u32
	runNData            = 36 // u32
	runData             = 40 // [16]u64
	runMaxData          = 16
)

// handle is an owned KVM file descriptor. It holds the fd in an *os.File
// so that an ioctl in progress keeps the descriptor alive: a concurrent
// close cannot let the number be reused under it.
type handle struct {
	f  *os.File
	rc syscall.RawConn
}

func newHandle(fd int, name string) (handle, error) {
	f := os.NewFile(uintptr(fd), name)
	if f == nil {
		unix.Close(fd)
		return handle{}, os.ErrInvalid
	}
	return fileHandle(f)
}

func fileHandle(f *os.File) (handle, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return handle{}, err
	}
	return handle{f: f, rc: rc}, nil
}

func (h handle) close() error { return h.f.Close() }

// ioctl issues an ioctl whose argument is a plain value.
func (h handle) ioctl(req, arg uintptr) (uintptr, error) {
	var r uintptr
	var errno syscall.Errno
	if err := h.rc.Control(func(fd uintptr) {
		r, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, req, arg)
	}); err != nil {
		return 0, ErrClosed
	}
	if errno != 0 {
		return r, errno
	}
	return r, nil
}

// ioctlPtr issues an ioctl whose argument points at Go memory.
func (h handle) ioctlPtr(req uintptr, p unsafe.Pointer) (uintptr, error) {
	var r uintptr
	var errno syscall.Errno
	if err := h.rc.Control(func(fd uintptr) {
		r, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, req, uintptr(p))
	}); err != nil {
		return 0, ErrClosed
	}
	if errno != 0 {
		return r, errno
	}
	return r, nil
}

// mmap maps the handle's fd (the vCPU's kvm_run area).
func (h handle) mmap(size int) ([]byte, error) {
	var b []byte
	var merr error
	if err := h.rc.Control(func(fd uintptr) {
		b, merr = unix.Mmap(int(fd), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	}); err != nil {
		return nil, ErrClosed
	}
	return b, merr
}

// userAddr is the host virtual address of b's first byte.
func userAddr(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }

// cpuidBuffer is a kvm_cpuid2 with room for n entries, in 8-byte words so
// that it is suitably aligned.
func cpuidBuffer(n int) ([]uint64, *kvmCPUID2, []kvmCPUIDEntry2) {
	buf := words(sizeOf[kvmCPUID2]() + uintptr(n)*sizeOf[kvmCPUIDEntry2]())
	hdr := (*kvmCPUID2)(wordsPtr(buf))
	hdr.nent = uint32(n)
	if n == 0 {
		return buf, hdr, nil
	}
	return buf, hdr, unsafe.Slice((*kvmCPUIDEntry2)(unsafe.Pointer(&buf[1])), n)
}

// msrBuffer is a kvm_msrs with room for n entries.
func msrBuffer(n int) ([]uint64, []kvmMSREntry) {
	buf := words(sizeOf[kvmMSRs]() + uintptr(n)*sizeOf[kvmMSREntry]())
	(*kvmMSRs)(wordsPtr(buf)).nmsrs = uint32(n)
	if n == 0 {
		return buf, nil
	}
	return buf, unsafe.Slice((*kvmMSREntry)(unsafe.Pointer(&buf[1])), n)
}

// atomicStoreByte and atomicLoadByte access one byte of the kvm_run page
// (immediate_exit) atomically, through the aligned 32-bit word holding it,
// since [VCPU.Kick] writes it from another thread while the kernel reads it.
func atomicStoreByte(p *byte, v byte) {
	off := uintptr(unsafe.Pointer(p)) & 3
	w := (*uint32)(unsafe.Add(unsafe.Pointer(p), -int(off)))
	shift := off * 8 // little endian
	for {
		old := atomic.LoadUint32(w)
		nw := old&^(0xff<<shift) | uint32(v)<<shift
		if atomic.CompareAndSwapUint32(w, old, nw) {
			return
		}
	}
}

func atomicLoadByte(p *byte) byte {
	off := uintptr(unsafe.Pointer(p)) & 3
	w := (*uint32)(unsafe.Add(unsafe.Pointer(p), -int(off)))
	return byte(atomic.LoadUint32(w) >> (off * 8))
}

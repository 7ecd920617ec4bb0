package kvm

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Sentinel errors. Errors from this package wrap one of these, an
// [fs.ErrPermission]-compatible *os.PathError, or the kernel's errno (a
// syscall.Errno, which matches the unix.E* constants with errors.Is).
var (
	// ErrNoKVM means the KVM device does not exist or has no driver bound.
	ErrNoKVM = errors.New("no KVM device")
	// ErrAPIVersion means the device reports an API version other than 12.
	ErrAPIVersion = errors.New("unsupported KVM API version")
	// ErrClosed means the handle was used after Close.
	ErrClosed = errors.New("use of closed KVM handle")
	// ErrInvalid means an argument was rejected before reaching the kernel.
	ErrInvalid = errors.New("invalid argument")
	// ErrMalformedExit means the kvm_run page held an exit this package
	// cannot decode safely (for example an I/O data range outside the page).
	ErrMalformedExit = errors.New("malformed kvm_run exit")
)

// Cap is a KVM capability number for [System.CheckExtension].
type Cap uint32

// Capabilities this package's callers commonly check (KVM_CAP_*).
const (
	CapIRQChip            Cap = 0
	CapUserMemory         Cap = 3
	CapSetTSSAddr         Cap = 4
	CapExtCPUID           Cap = 7
	CapNrVCPUs            Cap = 9
	CapNrMemslots         Cap = 10
	CapPIT2               Cap = 33
	CapSetIdentityMapAddr Cap = 37
	CapMaxVCPUs           Cap = 66
	CapImmediateExit      Cap = 136
)

// System is an open KVM device (normally /dev/kvm).
type System struct {
	h        handle
	path     string
	mmapSize int // KVM_GET_VCPU_MMAP_SIZE
}

// Open opens the KVM device at path and checks that it speaks API
// version 12. A missing device yields [ErrNoKVM]; lacking access yields an
// error matching [fs.ErrPermission]; any other version yields
// [ErrAPIVersion].
func Open(path string) (*System, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		switch {
		case errors.Is(err, fs.ErrNotExist), errors.Is(err, unix.ENXIO), errors.Is(err, unix.ENODEV):
			return nil, fmt.Errorf("kvm: %w: %w", ErrNoKVM, err)
		case errors.Is(err, fs.ErrPermission):
			return nil, fmt.Errorf("kvm: %w (read-write access is needed, usually via the kvm group)", err)
		}
		return nil, fmt.Errorf("kvm: %w", err)
	}
	h, err := fileHandle(f)
	if err != nil {
		return nil, fmt.Errorf("kvm: %s: %w", path, err)
	}
	s := &System{h: h, path: path}
	v, err := h.ioctl(ioctlGetAPIVersion, 0)
	if err != nil {
		h.close()
		if errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EINVAL) {
			return nil, fmt.Errorf("kvm: %s is not a KVM device: %w: %w", path, ErrNoKVM, err)
		}
		return nil, fmt.Errorf("kvm: %s: get api version: %w", path, err)
	}
	if v != apiVersion {
		h.close()
		return nil, fmt.Errorf("kvm: %s reports API version %d, want %d: %w", path, v, apiVersion, ErrAPIVersion)
	}
	n, err := h.ioctl(ioctlGetVCPUMmapSize, 0)
	if err != nil {
		h.close()
		return nil, fmt.Errorf("kvm: %s: get vcpu mmap size: %w", path, err)
	}
	if int(n) < runUnionEnd {
		h.close()
		return nil, fmt.Errorf("kvm: %s: vcpu mmap size %d is smaller than kvm_run: %w", path, n, ErrAPIVersion)
	}
	s.mmapSize = int(n)
	return s, nil
}

// Close closes the device. VMs created from it stay usable.
func (s *System) Close() error {
	if err := s.h.close(); err != nil {
		return fmt.Errorf("kvm: close %s: %w", s.path, err)
	}
	return nil
}

// CheckExtension reports a capability: 0 when absent, otherwise a
// capability-specific positive value (often 1, or a count).
func (s *System) CheckExtension(c Cap) (int, error) {
	r, err := s.h.ioctl(ioctlCheckExtension, uintptr(c))
	if err != nil {
		return 0, fmt.Errorf("kvm: check extension %d: %w", c, err)
	}
	return int(r), nil
}

// maxCPUIDEntries bounds the KVM_GET_SUPPORTED_CPUID buffer; the kernel's
// own limit (KVM_MAX_CPUID_ENTRIES) is 256.
const maxCPUIDEntries = 4096

// SupportedCPUID returns the CPUID leaves KVM can expose to guests on this
// host (KVM_GET_SUPPORTED_CPUID), growing its buffer while the kernel
// answers E2BIG.
func (s *System) SupportedCPUID() (*CPUID, error) {
	for n := 128; n <= maxCPUIDEntries; n *= 2 {
		buf, hdr, ents := cpuidBuffer(n)
		_, err := s.h.ioctlPtr(ioctlGetSupportedCPUID, wordsPtr(buf))
		if errors.Is(err, unix.E2BIG) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("kvm: get supported cpuid: %w", err)
		}
		if int(hdr.nent) > n {
			return nil, fmt.Errorf("kvm: get supported cpuid: kernel reported %d entries for a buffer of %d", hdr.nent, n)
		}
		return cpuidFromRaw(ents[:hdr.nent]), nil
	}
	return nil, fmt.Errorf("kvm: get supported cpuid: more than %d entries: %w", maxCPUIDEntries, unix.E2BIG)
}

// CreateVM creates an empty VM (KVM_CREATE_VM, default machine type).
func (s *System) CreateVM() (*VM, error) {
	fd, err := s.h.ioctl(ioctlCreateVM, 0)
	if err != nil {
		return nil, fmt.Errorf("kvm: create vm: %w", err)
	}
	h, err := newHandle(int(fd), "kvm-vm")
	if err != nil {
		return nil, fmt.Errorf("kvm: create vm: %w", err)
	}
	return &VM{h: h, mmapSize: s.mmapSize}, nil
}

// VM is a KVM virtual machine. See the package documentation for
// ownership and concurrency.
type VM struct {
	h        handle
	mmapSize int

	mu     sync.Mutex
	vcpus  []*VCPU // guarded by mu; those created and not yet closed by VM.Close
	closed bool    // guarded by mu
}

// Close closes the vCPUs created from vm that are still open, then the VM
// itself. Preconditions: none of its vCPUs is running. Guest memory is not
// unmapped. Calling Close again returns [ErrClosed].
func (vm *VM) Close() error {
	vm.mu.Lock()
	if vm.closed {
		vm.mu.Unlock()
		return fmt.Errorf("kvm: close vm: %w", ErrClosed)
	}
	vm.closed = true
	vcpus := vm.vcpus
	vm.vcpus = nil
	vm.mu.Unlock()

	var errs []error
	for _, c := range vcpus {
		if err := c.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := vm.h.close(); err != nil {
		errs = append(errs, fmt.Errorf("kvm: close vm: %w", err))
	}
	return errors.Join(errs...)
}

// Memory slot flags for [VM.SetUserMemoryRegion].
const (
	MemLogDirtyPages uint32 = 1 << 0 // KVM_MEM_LOG_DIRTY_PAGES
	MemReadOnly      uint32 = 1 << 1 // KVM_MEM_READONLY (guest writes exit as MMIO)
)

// checkRegion validates a memory slot request before it reaches the
// kernel, which would only answer EINVAL.
func checkRegion(gpa uint64, mem []byte, pageSize int) error {
	ps := uint64(pageSize)
	switch {
	case gpa%ps != 0:
		return fmt.Errorf("guest physical address %#x is not %d-byte aligned: %w", gpa, pageSize, ErrInvalid)
	case len(mem) == 0:
		return nil // deletes the slot
	case uint64(userAddr(mem))%ps != 0:
		return fmt.Errorf("host address %#x is not page aligned (use Mmap): %w", userAddr(mem), ErrInvalid)
	case uint64(len(mem))%ps != 0:
		return fmt.Errorf("size %#x is not a multiple of the page size %d: %w", len(mem), pageSize, ErrInvalid)
	case gpa+uint64(len(mem)) < gpa:
		return fmt.Errorf("region %#x+%#x wraps around: %w", gpa, len(mem), ErrInvalid)
	}
	return nil
}

// SetUserMemoryRegion maps mem into the guest at gpa as memory slot slot
// (KVM_SET_USER_MEMORY_REGION). mem must be page aligned and a whole number
// of pages, as returned by [Mmap], and must stay mapped while the VM lives.
// An empty mem deletes the slot. flags is a combination of MemLogDirtyPages
// and MemReadOnly.
func (vm *VM) SetUserMemoryRegion(slot uint32, gpa uint64, mem []byte, flags uint32) error {
	if err := checkRegion(gpa, mem, os.Getpagesize()); err != nil {
		return fmt.Errorf("kvm: set memory slot %d: %w", slot, err)
	}
	r := kvmUserspaceMemoryRegion{slot: slot, flags: flags, guestPhysAddr: gpa, memorySize: uint64(len(mem))}
	if len(mem) > 0 {
		r.userspaceAddr = uint64(userAddr(mem))
	}
	if _, err := vm.h.ioctlPtr(ioctlSetUserMemoryRegion, ptr(&r)); err != nil {
		return fmt.Errorf("kvm: set memory slot %d at %#x size %#x: %w", slot, gpa, len(mem), err)
	}
	return nil
}

// SetTSSAddr sets the guest physical address of the three pages KVM needs
// for real-mode emulation on Intel hosts (KVM_SET_TSS_ADDR). It must not
// overlap guest memory; Firecracker uses 0xfffbd000.
func (vm *VM) SetTSSAddr(addr uint64) error {
	if _, err := vm.h.ioctl(ioctlSetTSSAddr, uintptr(addr)); err != nil {
		return fmt.Errorf("kvm: set tss addr %#x: %w", addr, err)
	}
	return nil
}

// SetIdentityMapAddr sets the guest physical address of the one-page
// identity map KVM needs on Intel hosts (KVM_SET_IDENTITY_MAP_ADDR). Call
// it before creating vCPUs.
func (vm *VM) SetIdentityMapAddr(addr uint64) error {
	a := addr
	if _, err := vm.h.ioctlPtr(ioctlSetIdentityMapAddr, ptr(&a)); err != nil {
		return fmt.Errorf("kvm: set identity map addr %#x: %w", addr, err)
	}
	return nil
}

// CreateIRQChip creates the in-kernel PIC, IOAPIC and local APICs
// (KVM_CREATE_IRQCHIP). Call it before creating vCPUs. Afterwards a guest
// HLT is handled in the kernel and no longer exits to userspace.
func (vm *VM) CreateIRQChip() error {
	if _, err := vm.h.ioctl(ioctlCreateIRQChip, 0); err != nil {
		return fmt.Errorf("kvm: create irqchip: %w", err)
	}
	return nil
}

// CreatePIT2 creates the in-kernel i8254 PIT with a dummy speaker port, as
// Firecracker does (KVM_CREATE_PIT2). It needs the irqchip.
func (vm *VM) CreatePIT2() error {
	c := kvmPITConfig{flags: kvmPITSpeakerDummy}
	if _, err := vm.h.ioctlPtr(ioctlCreatePIT2, ptr(&c)); err != nil {
		return fmt.Errorf("kvm: create pit2: %w", err)
	}
	return nil
}

// IRQLine sets the level of a GSI on the in-kernel irqchip (KVM_IRQ_LINE).
// Edge-triggered lines are pulsed by setting true then false.
func (vm *VM) IRQLine(irq uint32, level bool) error {
	l := kvmIRQLevel{irq: irq}
	if level {
		l.level = 1
	}
	if _, err := vm.h.ioctlPtr(ioctlIRQLine, ptr(&l)); err != nil {
		return fmt.Errorf("kvm: irq line %d=%t: %w", irq, level, err)
	}
	return nil
}

// CreateVCPU creates vCPU id and maps its shared kvm_run area. The VCPU
// is closed by [VCPU.Close] or by [VM.Close].
func (vm *VM) CreateVCPU(id int) (*VCPU, error) {
	if id < 0 {
		return nil, fmt.Errorf("kvm: create vcpu %d: %w", id, ErrInvalid)
	}
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.closed {
		return nil, fmt.Errorf("kvm: create vcpu %d: %w", id, ErrClosed)
	}
	fd, err := vm.h.ioctl(ioctlCreateVCPU, uintptr(id))
	if err != nil {
		return nil, fmt.Errorf("kvm: create vcpu %d: %w", id, err)
	}
	h, err := newHandle(int(fd), fmt.Sprintf("kvm-vcpu:%d", id))
	if err != nil {
		return nil, fmt.Errorf("kvm: create vcpu %d: %w", id, err)
	}
	run, err := h.mmap(vm.mmapSize)
	if err != nil {
		h.close()
		return nil, fmt.Errorf("kvm: create vcpu %d: map kvm_run (%d bytes): %w", id, vm.mmapSize, err)
	}
	c := &VCPU{id: id, h: h, run: run}
	vm.vcpus = append(vm.vcpus, c)
	return c, nil
}

// Mmap allocates size bytes of anonymous, shared, zeroed memory for use
// as guest RAM. size must be a positive multiple of the page size. Release
// it with [Munmap] once no VM uses it.
func Mmap(size int) ([]byte, error) {
	if size <= 0 || size%os.Getpagesize() != 0 {
		return nil, fmt.Errorf("kvm: mmap %d bytes: size must be a positive multiple of %d: %w", size, os.Getpagesize(), ErrInvalid)
	}
	b, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil, fmt.Errorf("kvm: mmap %d bytes: %w", size, err)
	}
	return b, nil
}

// Munmap releases memory returned by [Mmap].
func Munmap(b []byte) error {
	if err := unix.Munmap(b); err != nil {
		return fmt.Errorf("kvm: munmap: %w", err)
	}
	return nil
}

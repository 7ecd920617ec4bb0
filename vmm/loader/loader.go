// Package loader parses Linux kernel images and lays out a direct Linux boot
// as a [plan.Plan].
//
// [Parse] accepts a bzImage (64-bit boot protocol, version 2.12 or later)
// or an x86-64 ELF vmlinux built with CONFIG_PVH. Kernel files are
// untrusted input: every offset and size is checked before use, and Parse
// never reads outside its input. [Linux] turns a kernel, an initrd and a
// command line into a launch plan using Firecracker's guest memory layout
// ([GDTAddr], [ZeroPageAddr], [CmdlineAddr], [KernelStart] and the rest).
//
// Functions in this package are pure and safe for concurrent use; the
// returned values share memory with the inputs (segment data are
// sub-slices of the kernel bytes), so callers must not modify the inputs
// while using them.
package loader

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
)

// Errors callers may branch on.
var (
	// ErrFormat: the bytes are not a well-formed bzImage or ELF kernel.
	ErrFormat = errors.New("not a valid kernel image")
	// ErrUnsupported: a well-formed kernel this loader cannot boot (boot
	// protocol older than 2.12, no 64-bit entry, not x86-64).
	ErrUnsupported = errors.New("unsupported kernel")
	// ErrNoPVH: an ELF vmlinux without a PVH entry note.
	ErrNoPVH = errors.New("vmlinux without CONFIG_PVH: no XEN_ELFNOTE_PHYS32_ENTRY note")
	// ErrTooSmall: guest memory cannot hold the kernel and initrd.
	ErrTooSmall = errors.New("guest memory too small")
	// ErrCmdline: the command line is too long or contains a NUL byte.
	ErrCmdline = errors.New("invalid kernel command line")
	// ErrInitrdTooLarge: the initrd does not fit below the kernel's
	// initrd_addr_max.
	ErrInitrdTooLarge = errors.New("initrd too large for the kernel's initrd_addr_max")
)

// MaxKernelSize is the largest kernel file Parse accepts, and the largest
// memory footprint (init_size, or the span of the ELF segments) it accepts.
const MaxKernelSize = 512 << 20

// Format is a kernel image format.
type Format uint8

// The kernel formats Parse recognizes.
const (
	BzImage Format = 1 // bzImage, booted through the 64-bit boot protocol
	ELFPVH  Format = 2 // ELF vmlinux, booted through its PVH entry
)

// String returns the name of the format.
func (f Format) String() string {
	switch f {
	case BzImage:
		return "bzImage"
	case ELFPVH:
		return "elf-pvh"
	}
	return "Format(" + strconv.Itoa(int(f)) + ")"
}

// Segment is a piece of the kernel to load at a guest-physical address:
// Data followed by zeros up to MemSize bytes.
type Segment struct {
	GPA     uint64
	Data    []byte // a sub-slice of the input to Parse
	MemSize uint64 // >= len(Data)
}

// Kernel is a parsed kernel image.
type Kernel struct {
	Format Format
	// SetupHeader is the bzImage's setup header; nil for ELF.
	SetupHeader *SetupHeader
	// Entry64 is the 64-bit entry point of a bzImage loaded at
	// KernelStart: KernelStart + 0x200. Zero for ELF.
	Entry64 uint64
	// PVHEntry is the 32-bit PVH entry point of an ELF vmlinux, from its
	// XEN_ELFNOTE_PHYS32_ENTRY note. Zero for bzImage.
	PVHEntry uint32
	// Segments are the parts to load: the ELF PT_LOAD segments at their
	// physical addresses, or the protected-mode kernel of a bzImage at
	// KernelStart.
	Segments []Segment
}

// Parse parses a bzImage or an x86-64 ELF vmlinux with a PVH note. It
// returns errors wrapping [ErrFormat], [ErrUnsupported] or [ErrNoPVH].
func Parse(b []byte) (*Kernel, error) {
	if len(b) > MaxKernelSize {
		return nil, fmt.Errorf("loader: kernel of %d bytes exceeds %d: %w", len(b), MaxKernelSize, ErrFormat)
	}
	switch {
	case bytes.HasPrefix(b, []byte(elfMagic)):
		return parseELF(b)
	case len(b) >= hdrMagicOff+4 && string(b[hdrMagicOff:hdrMagicOff+4]) == hdrMagic:
		return parseBzImage(b)
	}
	return nil, fmt.Errorf("loader: neither a bzImage (no HdrS at %#x) nor an ELF file: %w", hdrMagicOff, ErrFormat)
}

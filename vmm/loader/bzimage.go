package loader

import (
	"encoding/binary"
	"fmt"
)

// Offsets into a bzImage (equal to offsets into struct boot_params), from
// the Linux x86 boot protocol (Documentation/arch/x86/boot.rst).
const (
	hdrStart           = 0x1f1 // struct setup_header
	setupSectsOff      = 0x1f1
	bootFlagOff        = 0x1fe
	jumpOff            = 0x200 // the jump whose second byte sizes the header
	hdrMagicOff        = 0x202
	versionOff         = 0x206
	typeOfLoaderOff    = 0x210
	loadFlagsOff       = 0x211
	ramdiskImageOff    = 0x218
	ramdiskSizeOff     = 0x21c
	cmdLinePtrOff      = 0x228
	initrdAddrMaxOff   = 0x22c
	kernelAlignmentOff = 0x230
	relocatableOff     = 0x234
	xLoadFlagsOff      = 0x236
	cmdlineSizeOff     = 0x238
	prefAddressOff     = 0x258
	initSizeOff        = 0x260
	hdrMinEnd          = 0x264 // end of init_size, present since 2.10
	hdrMaxEnd          = 0x290 // edd_mbr_sig_buffer: where boot_params stops being the header

	hdrMagic      = "HdrS"
	bootFlag      = 0xaa55
	minVersion    = 0x020c
	loadedHigh    = 1 << 0 // loadflags LOADED_HIGH
	xlfKernel64   = 1 << 0 // xloadflags XLF_KERNEL_64
	defaultSects  = 4      // setup_sects 0 means 4
	entry64Offset = 0x200  // the 64-bit entry, from the protected-mode kernel start
)

// SetupHeader holds the fields of a bzImage setup header that loading needs.
type SetupHeader struct {
	SetupSects        uint8 // 512-byte setup sectors after the boot sector (0 read as 4)
	Version           uint16
	LoadFlags         uint8
	CmdlineSize       uint32 // longest command line, excluding the NUL
	InitrdAddrMax     uint32 // highest address the initrd may occupy
	KernelAlignment   uint32
	RelocatableKernel bool
	XLoadFlags        uint16
	PrefAddress       uint64
	InitSize          uint32 // memory the kernel needs from its (aligned) load address
	// Raw is the header as it appears in the file, from offset 0x1f1 to the
	// end the header's jump instruction gives (at most 0x290); the boot
	// loader copies it into boot_params.
	Raw []byte
}

func parseBzImage(b []byte) (*Kernel, error) {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("loader: bzImage: %s: %w", fmt.Sprintf(format, args...), ErrFormat)
	}
	if len(b) < hdrMinEnd {
		return nil, fail("truncated: %d bytes, header needs %d", len(b), hdrMinEnd)
	}
	le := binary.LittleEndian
	if f := le.Uint16(b[bootFlagOff:]); f != bootFlag {
		return nil, fail("boot flag %#04x, want %#04x", f, bootFlag)
	}
	h := &SetupHeader{
		SetupSects:        b[setupSectsOff],
		Version:           le.Uint16(b[versionOff:]),
		LoadFlags:         b[loadFlagsOff],
		CmdlineSize:       le.Uint32(b[cmdlineSizeOff:]),
		InitrdAddrMax:     le.Uint32(b[initrdAddrMaxOff:]),
		KernelAlignment:   le.Uint32(b[kernelAlignmentOff:]),
		RelocatableKernel: b[relocatableOff] != 0,
		XLoadFlags:        le.Uint16(b[xLoadFlagsOff:]),
		PrefAddress:       le.Uint64(b[prefAddressOff:]),
		InitSize:          le.Uint32(b[initSizeOff:]),
	}
	if h.Version < minVersion {
		return nil, fmt.Errorf("loader: bzImage: boot protocol %d.%02d, need 2.12 or later: %w", h.Version>>8, h.Version&0xff, ErrUnsupported)
	}
	if h.LoadFlags&loadedHigh == 0 {
		return nil, fmt.Errorf("loader: bzImage: not loaded high (a zImage): %w", ErrUnsupported)
	}
	if h.XLoadFlags&xlfKernel64 == 0 {
		return nil, fmt.Errorf("loader: bzImage: no 64-bit entry point (XLF_KERNEL_64 clear): %w", ErrUnsupported)
	}
	hdrEnd := min(hdrMagicOff+int(b[jumpOff+1]), hdrMaxEnd)
	if hdrEnd < hdrMinEnd {
		return nil, fail("header ends at %#x, before init_size", hdrEnd)
	}
	if hdrEnd > len(b) {
		return nil, fail("truncated: header ends at %#x, file has %d bytes", hdrEnd, len(b))
	}
	h.Raw = b[hdrStart:hdrEnd:hdrEnd]
	if a := h.KernelAlignment; a == 0 || a&(a-1) != 0 || a > 1<<30 {
		return nil, fail("kernel_alignment %#x is not a power of two up to 1 GiB", a)
	}
	if h.InitSize == 0 || h.InitSize > MaxKernelSize {
		return nil, fail("init_size %#x outside (0, %#x]", h.InitSize, MaxKernelSize)
	}
	if h.PrefAddress > 1<<40 {
		return nil, fail("pref_address %#x above 1 TiB", h.PrefAddress)
	}
	sects := int(h.SetupSects)
	if sects == 0 {
		sects = defaultSects
	}
	off := (sects + 1) * 512
	if off >= len(b) {
		return nil, fail("truncated: setup code ends at %#x, file has %d bytes", off, len(b))
	}
	data := b[off:len(b):len(b)]
	if len(data) <= entry64Offset {
		return nil, fail("protected-mode kernel of %d bytes has no 64-bit entry at %#x", len(data), entry64Offset)
	}
	return &Kernel{
		Format:      BzImage,
		SetupHeader: h,
		Entry64:     KernelStart + entry64Offset,
		Segments:    []Segment{{GPA: KernelStart, Data: data, MemSize: uint64(len(data))}},
	}, nil
}

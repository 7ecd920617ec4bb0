package tdxmeasure

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// ErrUnsupportedBoot: the direct-boot inputs are valid but lie outside what
// this package models (a kernel QEMU would refuse or patch in ways not
// modelled, an initrd that does not fit, a command line OVMF would mangle).
var ErrUnsupportedBoot = errors.New("tdxmeasure: unsupported direct boot")

// KernelImage says which bytes of the kernel TDVF hashes for RTMR1.
type KernelImage int

const (
	// KernelPatched: the image as QEMU patched it before handing it over
	// fw_cfg (setup-header edits; see PatchKernel). OVMF up to
	// edk2-stable202502 (Debian 12's 2022.11, Debian 13's 2025.02)
	// measures this.
	KernelPatched KernelImage = iota + 1
	// KernelRaw: the kernel file unchanged, as OVMF from
	// edk2-stable202505 on measures it (with a QEMU that passes the
	// unpatched image).
	KernelRaw
)

// ParseKernelImage parses "patched" or "raw".
func ParseKernelImage(s string) (KernelImage, error) {
	switch strings.ToLower(s) {
	case "patched":
		return KernelPatched, nil
	case "raw":
		return KernelRaw, nil
	}
	return 0, fmt.Errorf("kernel image %q: want patched (OVMF up to edk2-stable202502) or raw (later OVMF)", s)
}

// Stub says whether the kernel's EFI stub logs what it is given into RTMR2.
type Stub int

const (
	// StubCC: the EFI stub measures its load options and the initrd through
	// EFI_CC_MEASUREMENT_PROTOCOL (TDVF's measurement interface), as Linux
	// stubs built with confidential-computing measurement support do (the
	// Debian 13 6.12 kernel; not Debian 12's 6.1).
	StubCC Stub = iota + 1
	// StubNone: the EFI stub logs nothing in a TD (it knows only the TPM's
	// EFI_TCG2_PROTOCOL, which TDVF without a vTPM does not install), so
	// RTMR2 stays zero until the OS extends it.
	StubNone
)

// ParseStub parses "cc" or "none".
func ParseStub(s string) (Stub, error) {
	switch strings.ToLower(s) {
	case "cc":
		return StubCC, nil
	case "none":
		return StubNone, nil
	}
	return 0, fmt.Errorf("stub %q: want cc (the kernel's EFI stub measures through the CC measurement protocol) or none", s)
}

// Boot describes a TDX direct boot: QEMU -bios OVMF.fd -kernel -initrd
// -append on the q35 machine, the TDVF loading the kernel as an EFI
// application.
type Boot struct {
	Kernel  []byte // the kernel file (x86 bzImage with an EFI stub)
	Initrd  []byte // the initrd file; empty for none
	Cmdline string // QEMU -append, ASCII
	// MemorySize is the guest RAM in bytes (QEMU -m). Only KernelPatched
	// with an initrd depends on it (through the initrd's load address).
	MemorySize  uint64
	KernelImage KernelImage // which bytes of the kernel OVMF hashes
	Stub        Stub        // whether the kernel's EFI stub extends RTMR2
}

// Fixed EFI events of a boot, as TDVF logs them: EV_EFI_ACTION strings
// (ASCII, no NUL) and the EV_SEPARATOR data, each extended as SHA-384 of
// the data (TCG PC Client Platform Firmware Profile; EDK2 Tcg2Dxe and
// TdTcg2Dxe).
const (
	actionCallingApp = "Calling EFI Application from Boot Option"
	actionExitBS     = "Exit Boot Services Invocation"
	actionExitBSDone = "Exit Boot Services Returned with Success"
)

// separator is the EV_SEPARATOR event data of a successful boot.
var separator = []byte{0, 0, 0, 0}

// initrdSuffix is what OVMF appends to the command line when QEMU passes an
// initrd (OvmfPkg X86QemuLoadImageLib), so the stub finds it in the kernel
// loader file system.
const initrdSuffix = " initrd=initrd"

// maxCmdline bounds the command line (QEMU's own limit is the kernel's
// cmdline_size, 2 KiB on old kernels, larger on new ones).
const maxCmdline = 1 << 20

// RTMR1 returns the events TDVF extends into RTMR1 (PCRs 2-6: loader and
// kernel) for a direct boot, in order:
//
//  1. EV_EFI_BOOT_SERVICES_APPLICATION: the kernel's Authenticode SHA-384,
//     of the QEMU-patched or the raw image (b.KernelImage), when LoadImage
//     loads it;
//  2. EV_EFI_ACTION "Calling EFI Application from Boot Option", at
//     ReadyToBoot;
//  3. EV_SEPARATOR (4 zero bytes) for the PCRs of RTMR1;
//  4. EV_EFI_ACTION "Exit Boot Services Invocation";
//  5. EV_EFI_ACTION "Exit Boot Services Returned with Success".
func RTMR1(b Boot) (Replay, error) {
	var r Replay
	// Refuse a file that is no PE image before anything else.
	if err := authenticode(b.Kernel, io.Discard); err != nil {
		return r, err
	}
	img := b.Kernel
	name := "EV_EFI_BOOT_SERVICES_APPLICATION: kernel Authenticode SHA-384"
	switch b.KernelImage {
	case KernelPatched:
		var err error
		if img, err = PatchKernel(b.Kernel, len(b.Initrd), b.MemorySize, b.Cmdline); err != nil {
			return r, err
		}
		name += " (as patched by QEMU)"
	case KernelRaw:
		name += " (raw image)"
	default:
		return r, fmt.Errorf("%w: kernel image mode %d: want KernelPatched or KernelRaw", ErrUnsupportedBoot, b.KernelImage)
	}
	d, err := Authenticode(img)
	if err != nil {
		return r, err
	}
	r.Extend(name, d)
	r.Measure("EV_EFI_ACTION: "+actionCallingApp, []byte(actionCallingApp))
	r.Measure("EV_SEPARATOR", separator)
	r.Measure("EV_EFI_ACTION: "+actionExitBS, []byte(actionExitBS))
	r.Measure("EV_EFI_ACTION: "+actionExitBSDone, []byte(actionExitBSDone))
	return r, nil
}

// RTMR2 returns the events the kernel's EFI stub extends into RTMR2 (PCR 9)
// for a direct boot with b.Stub == StubCC, in order:
//
//  1. EV_EVENT_TAG "LOADED_IMAGE::LoadOptions": SHA-384 of the load options
//     OVMF gives the kernel (LoadOptionsBytes), when they are not empty;
//  2. EV_EVENT_TAG "Linux initrd": SHA-384 of the initrd file, when there
//     is one.
//
// With StubNone the list is empty.
func RTMR2(b Boot) (Replay, error) {
	var r Replay
	opts, err := LoadOptionsBytes(b.Cmdline, len(b.Initrd) > 0)
	if err != nil {
		return r, err
	}
	switch b.Stub {
	case StubCC:
	case StubNone:
		return r, nil
	default:
		return r, fmt.Errorf("%w: stub mode %d: want StubCC or StubNone", ErrUnsupportedBoot, b.Stub)
	}
	if len(opts) > 0 {
		r.Measure("EV_EVENT_TAG: LOADED_IMAGE::LoadOptions", opts)
	}
	if len(b.Initrd) > 0 {
		r.Measure("EV_EVENT_TAG: Linux initrd", b.Initrd)
	}
	return r, nil
}

// LoadOptionsBytes returns the EFI LoadOptions OVMF builds for a direct
// boot from QEMU's command line (OvmfPkg X86QemuLoadImageLib
// QemuLoadKernelImage): the command line, then " initrd=initrd" when there
// is an initrd, widened byte by byte to UTF-16LE, and a UTF-16 NUL. It is
// empty (no load options at all) when both the command line and the initrd
// are absent. Only ASCII without NUL is accepted: OVMF widens bytes, it
// does not decode UTF-8, and the kernel reads UTF-16 code units.
func LoadOptionsBytes(cmdline string, initrd bool) ([]byte, error) {
	if len(cmdline) > maxCmdline {
		return nil, fmt.Errorf("%w: command line of %d bytes, more than %d", ErrUnsupportedBoot, len(cmdline), maxCmdline)
	}
	for i := 0; i < len(cmdline); i++ {
		if c := cmdline[i]; c == 0 || c >= 0x80 {
			return nil, fmt.Errorf("%w: command line byte 0x%02x at offset %d: only ASCII without NUL is modelled", ErrUnsupportedBoot, c, i)
		}
	}
	s := cmdline
	if initrd {
		s += initrdSuffix
	}
	if s == "" {
		return nil, nil
	}
	b := make([]byte, 0, 2*len(s)+2)
	for i := 0; i < len(s); i++ {
		b = append(b, s[i], 0)
	}
	return append(b, 0, 0), nil
}

// Linux x86 boot protocol setup header (Documentation/arch/x86/boot.rst),
// the fields QEMU reads or writes (hw/i386/x86.c x86_load_linux).
const (
	hdrOldCmdMagic   = 0x020 // u16 0xA33F, protocol < 2.02
	hdrOldCmdOffset  = 0x022 // u16
	hdrMagic         = 0x202 // "HdrS"
	hdrVersion       = 0x206 // u16 boot protocol version
	hdrTypeOfLoader  = 0x210 // u8
	hdrLoadflags     = 0x211 // u8
	hdrRamdiskImage  = 0x218 // u32
	hdrRamdiskSize   = 0x21c // u32
	hdrHeapEndPtr    = 0x224 // u16
	hdrCmdLinePtr    = 0x228 // u32
	hdrInitrdAddrMax = 0x22c // u32, protocol >= 2.03
	hdrXLoadflags    = 0x236 // u16, protocol >= 2.12

	loadedHigh      = 0x01 // loadflags LOADED_HIGH
	canUseHeap      = 0x80 // loadflags CAN_USE_HEAP
	xlfInitrdAbove4 = 0x40 // xloadflags XLF_CAN_BE_LOADED_ABOVE_4G
	loaderQEMU      = 0xb0 // type_of_loader: QEMU, revision 0

	// acpiDataSize is the memory QEMU's pc machines reserve below the top of
	// low RAM for ACPI data, which the initrd must not overlap.
	acpiDataSize = 0x28000
	// q35 puts RAM below 4 GiB up to 0xB0000000 if it all fits there,
	// else up to 0x80000000 (hw/i386/pc_q35.c).
	q35LowmemLimit  = 0xb0000000
	q35LowmemSplit  = 0x80000000
	defaultInitrdMx = 0x37ffffff
)

// PatchKernel returns a copy of kernel with the setup-header edits QEMU's
// x86_load_linux makes before passing it through fw_cfg, for a guest with
// memSize bytes of RAM on the q35 machine and an initrd of initrdSize bytes
// (0: none):
//
//   - type_of_loader (0x210) = 0xB0 (protocol >= 2.00);
//   - loadflags (0x211) |= CAN_USE_HEAP, heap_end_ptr (0x224, u16) =
//     cmd_line address - real-mode address - 0x200 (protocol >= 2.01);
//   - cmd_line_ptr (0x228) = 0x20000, or 0x9A000 for a kernel not loaded
//     high (protocol >= 2.02; older ones get the 0xA33F magic at 0x20);
//   - with an initrd: ramdisk_image (0x218) = (initrd_max - size) rounded
//     down to 4 KiB and ramdisk_size (0x21C) = size, where initrd_max is
//     the kernel's limit (0xFFFFFFFF with XLF_CAN_BE_LOADED_ABOVE_4G,
//     initrd_addr_max, or 0x37FFFFFF) capped below the top of low RAM minus
//     QEMU's 0x28000 bytes of ACPI data. Low RAM is min(memSize,
//     0xB0000000) when memSize < 0xB0000000, else 0x80000000, so the
//     address and hence RTMR1 depend on the memory size below 2.75 GiB.
//
// A command line with "vga=" (QEMU then also writes vid_mode) is refused
// with ErrUnsupportedBoot, as is a kernel without the "HdrS" boot header.
func PatchKernel(kernel []byte, initrdSize int, memSize uint64, cmdline string) ([]byte, error) {
	le := binary.LittleEndian
	if len(kernel) < 0x1000 {
		return nil, fmt.Errorf("%w: kernel of %d bytes is too short for a Linux setup header", ErrUnsupportedBoot, len(kernel))
	}
	if string(kernel[hdrMagic:hdrMagic+4]) != "HdrS" {
		return nil, fmt.Errorf("%w: kernel has no Linux boot protocol header (\"HdrS\" at 0x202)", ErrUnsupportedBoot)
	}
	if strings.Contains(cmdline, "vga=") {
		return nil, fmt.Errorf("%w: command line has \"vga=\": QEMU then also patches vid_mode, which is not modelled", ErrUnsupportedBoot)
	}
	k := append([]byte(nil), kernel...)
	protocol := le.Uint16(k[hdrVersion:])
	realAddr, cmdlineAddr := uint32(0x10000), uint32(0x20000)
	if protocol < 0x200 || k[hdrLoadflags]&loadedHigh == 0 {
		realAddr, cmdlineAddr = 0x90000, 0x9a000
	}
	if protocol >= 0x200 {
		k[hdrTypeOfLoader] = loaderQEMU
	}
	if protocol >= 0x201 {
		k[hdrLoadflags] |= canUseHeap
		le.PutUint16(k[hdrHeapEndPtr:], uint16(cmdlineAddr-realAddr-0x200))
	}
	if protocol >= 0x202 {
		le.PutUint32(k[hdrCmdLinePtr:], cmdlineAddr)
	} else {
		le.PutUint16(k[hdrOldCmdMagic:], 0xa33f)
		le.PutUint16(k[hdrOldCmdOffset:], uint16(cmdlineAddr-realAddr))
	}
	if initrdSize == 0 {
		return k, nil
	}
	if protocol < 0x200 {
		return nil, fmt.Errorf("%w: kernel boot protocol %#x is too old for an initrd", ErrUnsupportedBoot, protocol)
	}
	if memSize == 0 {
		return nil, fmt.Errorf("%w: the memory size is needed: QEMU places the initrd below the top of low RAM", ErrUnsupportedBoot)
	}
	initrdMax := uint64(defaultInitrdMx)
	switch {
	case protocol >= 0x20c && le.Uint16(k[hdrXLoadflags:])&xlfInitrdAbove4 != 0:
		initrdMax = 0xffffffff
	case protocol >= 0x203:
		if m := le.Uint32(k[hdrInitrdAddrMax:]); m != 0 {
			initrdMax = uint64(m)
		}
	}
	lowmem := uint64(q35LowmemLimit)
	if memSize >= q35LowmemLimit {
		lowmem = q35LowmemSplit
	}
	below4G := min(memSize, lowmem)
	if below4G <= acpiDataSize {
		return nil, fmt.Errorf("%w: memory size %d leaves no room below QEMU's ACPI data", ErrUnsupportedBoot, memSize)
	}
	if initrdMax >= below4G-acpiDataSize {
		initrdMax = below4G - acpiDataSize - 1
	}
	size := uint64(initrdSize)
	if size >= initrdMax {
		return nil, fmt.Errorf("%w: initrd of %d bytes does not fit below 0x%x", ErrUnsupportedBoot, size, initrdMax)
	}
	le.PutUint32(k[hdrRamdiskImage:], uint32((initrdMax-size)&^4095))
	le.PutUint32(k[hdrRamdiskSize:], uint32(size))
	return k, nil
}

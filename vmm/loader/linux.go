package loader

import (
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/greatjail/cvm/vmm/plan"
)

// Offsets of loader-written fields in struct boot_params (the zero page)
// and in the PVH structures (xen/include/public/arch-x86/hvm/start_info.h).
const (
	e820EntriesOff = 0x1e8
	e820TableOff   = 0x2d0
	e820EntrySize  = 20

	startInfoMagic   = 0x336ec578
	startInfoVersion = 1
	modlistEntrySize = 32
	memmapEntrySize  = 24
)

// BootOptions describe a direct Linux boot.
type BootOptions struct {
	Kernel     []byte // bzImage or ELF vmlinux with a PVH note
	Initrd     []byte // optional
	Cmdline    string // at most CmdlineMax-1 bytes (and the bzImage's cmdline_size)
	MemorySize uint64 // bytes of guest RAM
	VCPUs      int
	// Extra blobs (ACPI tables, for instance) are placed at their own
	// addresses, after the boot structures and before the kernel in
	// launch order. The e820 map reserves [EBDAStart, KernelStart), where
	// an RSDP at 0xe0000 is found by the kernel's legacy scan.
	Extra []plan.Blob
}

// Linux lays out a direct boot of a bzImage (64-bit boot protocol) or an
// ELF vmlinux (PVH) as a validated launch plan.
//
// The layout is Firecracker's (see the constants): kernel at KernelStart
// (ELF segments at their physical addresses), initrd page-aligned as high
// as possible below min(initrd_addr_max+1, low memory end) and above the
// kernel's footprint (for a bzImage, init_size bytes from its aligned
// run-time address, max(KernelStart, pref_address) rounded up to
// kernel_alignment). Guest memory beyond MMIOGapStart is mapped at 4 GiB,
// so the e820 map is RAM [0, EBDAStart), reserved [EBDAStart, KernelStart),
// RAM [KernelStart, min(MemorySize, MMIOGapStart)) and, for larger guests,
// RAM [4 GiB, 4 GiB + MemorySize - MMIOGapStart). No MP table is written:
// other CPUs and the IOAPIC must be described by ACPI tables in Extra.
//
// Launch order: GDT/IDT, zero page (or PVH start_info and memory map),
// stack, page tables, command line, Extra, kernel, initrd. Errors wrap
// the errors of [Parse], [ErrTooSmall], [ErrCmdline], [ErrInitrdTooLarge]
// or [plan.ErrInvalid].
func Linux(o BootOptions) (*plan.Plan, error) {
	k, err := Parse(o.Kernel)
	if err != nil {
		return nil, err
	}
	if err := checkCmdline(o.Cmdline, k); err != nil {
		return nil, err
	}
	lowEnd := min(o.MemorySize, MMIOGapStart)
	kernelEnd := footprint(k)
	if lowEnd <= KernelStart || kernelEnd > lowEnd {
		return nil, fmt.Errorf("loader: kernel needs memory up to %#x, guest has %#x bytes below %#x: %w",
			kernelEnd, lowEnd, uint64(MMIOGapStart), ErrTooSmall)
	}
	initrdAddr, err := placeInitrd(k, uint64(len(o.Initrd)), alignUp(kernelEnd), lowEnd)
	if err != nil {
		return nil, err
	}

	e820 := []plan.E820Entry{
		{Addr: 0, Size: EBDAStart, Type: plan.E820RAM},
		{Addr: EBDAStart, Size: KernelStart - EBDAStart, Type: plan.E820Reserved},
		{Addr: KernelStart, Size: lowEnd - KernelStart, Type: plan.E820RAM},
	}
	if o.MemorySize > MMIOGapStart {
		e820 = append(e820, plan.E820Entry{Addr: MMIOGapEnd, Size: o.MemorySize - MMIOGapStart, Type: plan.E820RAM})
	}

	p := &plan.Plan{MemorySize: o.MemorySize, VCPUs: o.VCPUs, E820: e820}
	cmdline := append([]byte(o.Cmdline), 0)
	switch k.Format {
	case BzImage:
		gdt := gdtTable(codeLong64)
		p.Blobs = append(p.Blobs,
			plan.Blob{Name: "gdt", GPA: GDTAddr, Data: gdtBytes(gdt), Size: IDTAddr + 8 - GDTAddr, Type: plan.Normal},
			plan.Blob{Name: "zero-page", GPA: ZeroPageAddr, Data: zeroPage(k.SetupHeader, initrdAddr, uint64(len(o.Initrd)), e820), Size: plan.PageSize, Type: plan.Normal},
			plan.Blob{Name: "stack", GPA: StackPage, Size: plan.PageSize, Type: plan.Zero},
			plan.Blob{Name: "page-tables", GPA: PML4Addr, Data: pageTables(), Size: 3 * plan.PageSize, Type: plan.Normal},
		)
		p.BSP = long64State(k.Entry64, gdt)
	case ELFPVH:
		gdt := gdtTable(codeProt32)
		info, memmap := startInfo(initrdAddr, uint64(len(o.Initrd)), e820)
		p.Blobs = append(p.Blobs,
			plan.Blob{Name: "gdt", GPA: GDTAddr, Data: gdtBytes(gdt), Size: IDTAddr + 8 - GDTAddr, Type: plan.Normal},
			plan.Blob{Name: "start-info", GPA: StartInfoAddr, Data: info, Size: uint64(len(info)), Type: plan.Normal},
			plan.Blob{Name: "memmap", GPA: MemmapAddr, Data: memmap, Size: uint64(len(memmap)), Type: plan.Normal},
		)
		p.BSP = protected32State(k.PVHEntry, gdt)
	}
	p.Blobs = append(p.Blobs, plan.Blob{Name: "cmdline", GPA: CmdlineAddr, Data: cmdline, Size: uint64(len(cmdline)), Type: plan.Normal})
	p.Blobs = append(p.Blobs, o.Extra...)
	for i, s := range k.Segments {
		name := "kernel"
		if len(k.Segments) > 1 {
			name = fmt.Sprintf("kernel-%d", i)
		}
		p.Blobs = append(p.Blobs, plan.Blob{Name: name, GPA: s.GPA, Data: s.Data, Size: s.MemSize, Type: plan.Normal})
	}
	if len(o.Initrd) > 0 {
		p.Blobs = append(p.Blobs, plan.Blob{Name: "initrd", GPA: initrdAddr, Data: o.Initrd, Size: uint64(len(o.Initrd)), Type: plan.Normal})
	}
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("loader: %w", err)
	}
	return p, nil
}

func checkCmdline(c string, k *Kernel) error {
	if strings.IndexByte(c, 0) >= 0 {
		return fmt.Errorf("loader: command line contains a NUL byte: %w", ErrCmdline)
	}
	limit := CmdlineMax - 1
	if k.SetupHeader != nil {
		limit = min(limit, int(k.SetupHeader.CmdlineSize))
	}
	if len(c) > limit {
		return fmt.Errorf("loader: command line of %d bytes exceeds %d: %w", len(c), limit, ErrCmdline)
	}
	return nil
}

// footprint returns the end of the memory the kernel needs: its loaded
// bytes and, for a bzImage, the init_size bytes it decompresses into from
// its run-time address.
func footprint(k *Kernel) uint64 {
	var end uint64
	for _, s := range k.Segments {
		end = max(end, s.GPA+s.MemSize) // Parse bounds both
	}
	if h := k.SetupHeader; h != nil {
		a := uint64(h.KernelAlignment) // Parse: a power of two <= 1 GiB
		run := (max(KernelStart, h.PrefAddress) + a - 1) &^ (a - 1)
		end = max(end, run+uint64(h.InitSize))
	}
	return end
}

// placeInitrd returns the page-aligned address of an initrd of n bytes,
// as high as possible below the initrd limit and at or above floor.
func placeInitrd(k *Kernel, n, floor, lowEnd uint64) (uint64, error) {
	if n == 0 {
		return 0, nil
	}
	limit, byAddrMax := lowEnd, false
	if h := k.SetupHeader; h != nil && uint64(h.InitrdAddrMax)+1 < limit {
		limit, byAddrMax = uint64(h.InitrdAddrMax)+1, true
	}
	if limit >= floor && n <= limit-floor {
		return (limit - n) &^ (plan.PageSize - 1), nil
	}
	if byAddrMax && floor <= lowEnd && n <= lowEnd-floor {
		return 0, fmt.Errorf("loader: initrd of %d bytes does not fit between the kernel end %#x and initrd_addr_max %#x: %w",
			n, floor, k.SetupHeader.InitrdAddrMax, ErrInitrdTooLarge)
	}
	return 0, fmt.Errorf("loader: kernel (up to %#x) and initrd of %d bytes do not fit in %#x bytes of low memory: %w",
		floor, n, lowEnd, ErrTooSmall)
}

func alignUp(x uint64) uint64 { return (x + plan.PageSize - 1) &^ (plan.PageSize - 1) }

// gdtEntry encodes a segment descriptor the way Firecracker's gdt.rs
// does: flags hold the access byte (bits 0-7) and the flags nibble (bits
// 12-15).
func gdtEntry(flags uint16, base, limit uint32) uint64 {
	return uint64(base&0xff000000)<<32 | uint64(base&0x00ffffff)<<16 |
		uint64(limit&0x0000ffff) | uint64(limit&0x000f0000)<<32 |
		uint64(flags&0xf0ff)<<40
}

func gdtTable(code uint16) [gdtEntries]uint64 {
	return [gdtEntries]uint64{0, gdtEntry(code, 0, flatLimit), gdtEntry(dataFlat, 0, flatLimit), gdtEntry(tssBusy, 0, flatLimit)}
}

func gdtBytes(gdt [gdtEntries]uint64) []byte {
	b := make([]byte, 0, 8*gdtEntries)
	for _, e := range gdt {
		b = binary.LittleEndian.AppendUint64(b, e)
	}
	return b
}

// segment unpacks the descriptor at index sel>>3 of gdt into the form
// KVM's kvm_segment takes (byte-granular limit).
func segment(gdt [gdtEntries]uint64, sel uint16) plan.Segment {
	e := gdt[sel>>3]
	bit := func(n uint) bool { return e>>n&1 == 1 }
	limit := uint32(e&0xffff | (e>>48&0xf)<<16)
	if bit(55) {
		limit = limit<<12 | 0xfff
	}
	return plan.Segment{
		Base:     e>>16&0xffffff | (e>>56&0xff)<<24,
		Limit:    limit,
		Selector: sel,
		Type:     uint8(e >> 40 & 0xf),
		S:        bit(44),
		DPL:      uint8(e >> 45 & 3),
		Present:  bit(47),
		AVL:      bit(52),
		L:        bit(53),
		DB:       bit(54),
		G:        bit(55),
	}
}

func baseState(gdt [gdtEntries]uint64) plan.VCPUState {
	data := segment(gdt, dataSel)
	return plan.VCPUState{
		RFLAGS: rflagsFixed,
		CS:     segment(gdt, codeSel),
		DS:     data, ES: data, FS: data, GS: data, SS: data,
		TR:  segment(gdt, tssSel),
		GDT: plan.DescriptorTable{Base: GDTAddr, Limit: 8*gdtEntries - 1},
		IDT: plan.DescriptorTable{Base: IDTAddr, Limit: 7},
	}
}

func long64State(entry uint64, gdt [gdtEntries]uint64) plan.VCPUState {
	s := baseState(gdt)
	s.Mode = plan.Long64
	s.RIP, s.RSI, s.RSP, s.RBP = entry, ZeroPageAddr, StackTop, StackTop
	s.CR0, s.CR3, s.CR4, s.EFER = cr0PE|cr0ET|cr0PG, PML4Addr, cr4PAE, eferLME|eferLMA
	return s
}

func protected32State(entry uint32, gdt [gdtEntries]uint64) plan.VCPUState {
	s := baseState(gdt)
	s.Mode = plan.Protected32
	s.RIP, s.RBX = uint64(entry), StartInfoAddr
	s.CR0 = cr0PE | cr0ET
	return s
}

// pageTables returns PML4, PDPT and PD identity-mapping the first GiB
// with 2 MiB pages.
func pageTables() []byte {
	b := make([]byte, 3*plan.PageSize)
	le := binary.LittleEndian
	le.PutUint64(b[0:], PDPTAddr|pteFlags)
	le.PutUint64(b[plan.PageSize:], PDAddr|pteFlags)
	for i := range uint64(identityMapped >> 21) {
		le.PutUint64(b[2*plan.PageSize+8*i:], i<<21|pdeHuge)
	}
	return b
}

// zeroPage builds struct boot_params: the kernel's setup header, the
// loader's fields and the e820 map.
func zeroPage(h *SetupHeader, initrd, initrdSize uint64, e820 []plan.E820Entry) []byte {
	b := make([]byte, plan.PageSize)
	le := binary.LittleEndian
	copy(b[hdrStart:], h.Raw)
	b[typeOfLoaderOff] = 0xff // undefined loader
	le.PutUint32(b[cmdLinePtrOff:], CmdlineAddr)
	le.PutUint32(b[ramdiskImageOff:], uint32(initrd)) // below MMIOGapStart
	le.PutUint32(b[ramdiskSizeOff:], uint32(initrdSize))
	b[e820EntriesOff] = uint8(len(e820)) // at most 4 of the 128 slots
	for i, e := range e820 {
		o := e820TableOff + i*e820EntrySize
		le.PutUint64(b[o:], e.Addr)
		le.PutUint64(b[o+8:], e.Size)
		le.PutUint32(b[o+16:], e.Type)
	}
	return b
}

// startInfo builds the PVH hvm_start_info (version 1) with its module
// list, and the memory map it points to.
func startInfo(initrd, initrdSize uint64, e820 []plan.E820Entry) (info, memmap []byte) {
	le := binary.LittleEndian
	info = make([]byte, ModlistAddr-StartInfoAddr+modlistEntrySize)
	le.PutUint32(info[0:], startInfoMagic)
	le.PutUint32(info[4:], startInfoVersion)
	if initrdSize > 0 {
		le.PutUint32(info[12:], 1) // nr_modules
		le.PutUint64(info[16:], ModlistAddr)
		m := info[ModlistAddr-StartInfoAddr:]
		le.PutUint64(m[0:], initrd)
		le.PutUint64(m[8:], initrdSize)
	}
	le.PutUint64(info[24:], CmdlineAddr)
	le.PutUint64(info[40:], MemmapAddr)
	le.PutUint32(info[48:], uint32(len(e820)))
	memmap = make([]byte, 0, len(e820)*memmapEntrySize)
	for _, e := range e820 {
		memmap = le.AppendUint64(memmap, e.Addr)
		memmap = le.AppendUint64(memmap, e.Size)
		memmap = le.AppendUint32(memmap, e.Type)
		memmap = le.AppendUint32(memmap, 0)
	}
	return info, memmap
}

package loader

// Guest-physical layout of a direct Linux boot, Firecracker's
// (src/vmm/src/arch/x86_64/layout.rs). Everything the boot writes lies below
// MMIOGapStart.
const (
	GDTAddr        = 0x500   // null, code, data, TSS descriptors
	IDTAddr        = 0x520   // one empty (zero) descriptor
	StartInfoAddr  = 0x6000  // PVH struct hvm_start_info
	ModlistAddr    = 0x6040  // PVH module list (the initrd)
	ZeroPageAddr   = 0x7000  // struct boot_params for the 64-bit protocol
	MemmapAddr     = 0x7000  // PVH memory map (PVH has no zero page)
	StackPage      = 0x8000  // page holding the boot stack
	StackTop       = 0x8ff0  // initial RSP and RBP
	PML4Addr       = 0x9000  // identity map of the first GiB:
	PDPTAddr       = 0xa000  // PML4 -> PDPT -> PD of 512 2 MiB pages
	PDAddr         = 0xb000  //
	CmdlineAddr    = 0x20000 // NUL-terminated kernel command line
	CmdlineMax     = 2048    // bytes, including the NUL
	EBDAStart      = 0x9fc00 // end of low RAM; [EBDAStart, KernelStart) is reserved (EBDA, ACPI, BIOS area)
	KernelStart    = 0x100000
	MMIOGapStart   = 0xc0000000 // RAM above this moves to 4 GiB
	MMIOGapEnd     = 1 << 32
	identityMapped = 1 << 30
)

// GDT descriptors as (flags, base, limit), encoded by gdtEntry.
const (
	codeLong64  = 0xa09b // present, ring 0, code exec/read accessed, L, G
	codeProt32  = 0xc09b // present, ring 0, code exec/read accessed, D/B, G
	dataFlat    = 0xc093 // present, ring 0, data read/write accessed, D/B, G
	tssBusy     = 0x808b // present, ring 0, 32/64-bit busy TSS, G
	codeSel     = 1 << 3
	dataSel     = 2 << 3
	tssSel      = 3 << 3
	gdtEntries  = 4
	flatLimit   = 0xfffff
	pteFlags    = 0x03 // present, writable
	pdeHuge     = 0x83 // present, writable, 2 MiB page
	cr0PE       = 1 << 0
	cr0ET       = 1 << 4
	cr0PG       = 1 << 31
	cr4PAE      = 1 << 5
	eferLME     = 1 << 8
	eferLMA     = 1 << 10
	rflagsFixed = 1 << 1
)

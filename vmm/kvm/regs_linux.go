package kvm

// Regs are the general-purpose registers of an x86-64 vCPU.
type Regs struct {
	RAX, RBX, RCX, RDX, RSI, RDI, RSP, RBP uint64
	R8, R9, R10, R11, R12, R13, R14, R15   uint64
	RIP, RFLAGS                            uint64
}

// Segment is a segment register in its hidden (descriptor cache) form.
type Segment struct {
	Base     uint64
	Limit    uint32
	Selector uint16
	Type     uint8 // descriptor type field, 4 bits
	Present  bool
	DPL      uint8
	DB       bool // default operand size (must be false when L is set)
	S        bool // code/data (true) or system (false) segment
	L        bool // 64-bit code segment
	G        bool // limit granularity is 4 KiB
	AVL      bool
	Unusable bool
}

// DTable is a descriptor table register (GDTR or IDTR).
type DTable struct {
	Base  uint64
	Limit uint16
}

// Sregs are the special registers of an x86-64 vCPU.
type Sregs struct {
	CS, DS, ES, FS, GS, SS, TR, LDT Segment
	GDT, IDT                        DTable
	CR0, CR2, CR3, CR4, CR8         uint64
	EFER                            uint64
	APICBase                        uint64
	// InterruptBitmap holds pending external interrupts (one bit per
	// vector) when there is no in-kernel irqchip.
	InterruptBitmap [4]uint64
}

// Control register and EFER bits used to set up protected and long mode.
const (
	CR0PE = 1 << 0  // protection enable
	CR0ET = 1 << 4  // extension type
	CR0PG = 1 << 31 // paging

	CR4PAE = 1 << 5 // physical address extension

	EFERLME = 1 << 8  // long mode enable
	EFERLMA = 1 << 10 // long mode active
)

// MSR is one model-specific register value.
type MSR struct {
	Index uint32
	Data  uint64
}

// FPU is the x87/SSE state of a vCPU (KVM_GET_FPU/KVM_SET_FPU).
type FPU struct {
	FPR        [8][16]byte
	FCW, FSW   uint16
	FTWX       uint8
	LastOpcode uint16
	LastIP     uint64
	LastDP     uint64
	XMM        [16][16]byte
	MXCSR      uint32
}

// CPUIDFlagSignificantIndex marks a CPUID entry whose Index (ECX input)
// selects among several sub-leaves (KVM_CPUID_FLAG_SIGNIFCANT_INDEX).
const CPUIDFlagSignificantIndex = 1

// CPUIDEntry is one CPUID leaf as KVM reports or accepts it.
type CPUIDEntry struct {
	Function, Index, Flags uint32
	EAX, EBX, ECX, EDX     uint32
}

// CPUID is a set of CPUID leaves for [VCPU.SetCPUID].
type CPUID struct {
	Entries []CPUIDEntry
}

// Find returns the entry for function and, where the entry's index is
// significant, index; or nil.
func (c *CPUID) Find(function, index uint32) *CPUIDEntry {
	for i := range c.Entries {
		e := &c.Entries[i]
		if e.Function == function && (e.Flags&CPUIDFlagSignificantIndex == 0 || e.Index == index) {
			return e
		}
	}
	return nil
}

func cpuidFromRaw(raw []kvmCPUIDEntry2) *CPUID {
	c := &CPUID{Entries: make([]CPUIDEntry, len(raw))}
	for i, r := range raw {
		c.Entries[i] = CPUIDEntry{
			Function: r.function, Index: r.index, Flags: r.flags,
			EAX: r.eax, EBX: r.ebx, ECX: r.ecx, EDX: r.edx,
		}
	}
	return c
}

func cpuidToRaw(c *CPUID, raw []kvmCPUIDEntry2) {
	for i, e := range c.Entries {
		raw[i] = kvmCPUIDEntry2{
			function: e.Function, index: e.Index, flags: e.Flags,
			eax: e.EAX, ebx: e.EBX, ecx: e.ECX, edx: e.EDX,
		}
	}
}

func b2u(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

func segmentToRaw(s Segment) kvmSegment {
	return kvmSegment{
		base: s.Base, limit: s.Limit, selector: s.Selector, typ: s.Type,
		present: b2u(s.Present), dpl: s.DPL, db: b2u(s.DB), s: b2u(s.S), l: b2u(s.L),
		g: b2u(s.G), avl: b2u(s.AVL), unusable: b2u(s.Unusable),
	}
}

func segmentFromRaw(r kvmSegment) Segment {
	return Segment{
		Base: r.base, Limit: r.limit, Selector: r.selector, Type: r.typ,
		Present: r.present != 0, DPL: r.dpl, DB: r.db != 0, S: r.s != 0, L: r.l != 0,
		G: r.g != 0, AVL: r.avl != 0, Unusable: r.unusable != 0,
	}
}

func sregsToRaw(s Sregs) kvmSregs {
	return kvmSregs{
		cs: segmentToRaw(s.CS), ds: segmentToRaw(s.DS), es: segmentToRaw(s.ES), fs: segmentToRaw(s.FS),
		gs: segmentToRaw(s.GS), ss: segmentToRaw(s.SS), tr: segmentToRaw(s.TR), ldt: segmentToRaw(s.LDT),
		gdt: kvmDtable{base: s.GDT.Base, limit: s.GDT.Limit},
		idt: kvmDtable{base: s.IDT.Base, limit: s.IDT.Limit},
		cr0: s.CR0, cr2: s.CR2, cr3: s.CR3, cr4: s.CR4, cr8: s.CR8,
		efer: s.EFER, apicBase: s.APICBase, interruptBitmap: s.InterruptBitmap,
	}
}

func sregsFromRaw(r kvmSregs) Sregs {
	return Sregs{
		CS: segmentFromRaw(r.cs), DS: segmentFromRaw(r.ds), ES: segmentFromRaw(r.es), FS: segmentFromRaw(r.fs),
		GS: segmentFromRaw(r.gs), SS: segmentFromRaw(r.ss), TR: segmentFromRaw(r.tr), LDT: segmentFromRaw(r.ldt),
		GDT: DTable{Base: r.gdt.base, Limit: r.gdt.limit},
		IDT: DTable{Base: r.idt.base, Limit: r.idt.limit},
		CR0: r.cr0, CR2: r.cr2, CR3: r.cr3, CR4: r.cr4, CR8: r.cr8,
		EFER: r.efer, APICBase: r.apicBase, InterruptBitmap: r.interruptBitmap,
	}
}

func fpuToRaw(f FPU) kvmFPU {
	return kvmFPU{
		fpr: f.FPR, fcw: f.FCW, fsw: f.FSW, ftwx: f.FTWX, lastOpcode: f.LastOpcode,
		lastIP: f.LastIP, lastDP: f.LastDP, xmm: f.XMM, mxcsr: f.MXCSR,
	}
}

func fpuFromRaw(r kvmFPU) FPU {
	return FPU{
		FPR: r.fpr, FCW: r.fcw, FSW: r.fsw, FTWX: r.ftwx, LastOpcode: r.lastOpcode,
		LastIP: r.lastIP, LastDP: r.lastDP, XMM: r.xmm, MXCSR: r.mxcsr,
	}
}

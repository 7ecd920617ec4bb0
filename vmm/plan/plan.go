// Package plan describes a VM launch as data: the guest memory size, every
// blob placed at its guest-physical address with its SEV-SNP page type, the
// boot vCPU's initial register state and the e820 memory map.
//
// One plan has two uses. A VMM backend executes it (plain KVM copies the
// blobs into guest memory and sets the registers; SEV-SNP issues
// SNP_LAUNCH_UPDATE page by page; TDX issues TDX_INIT_MEM_REGION), and the
// measurement code computes the launch digest from the same plan through
// [Plan.Pages], so the measured launch and the executed launch cannot drift.
//
// A Plan is plain data with no internal state; it is not safe to mutate
// while another goroutine reads it, and safe to read concurrently.
package plan

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
)

// PageSize is the granularity of guest memory in a plan: SNP_LAUNCH_UPDATE,
// guest_memfd and the digest all work on 4 KiB pages.
const PageSize = 4096

// ErrInvalid is wrapped by every error [Plan.Validate] returns.
var ErrInvalid = errors.New("invalid launch plan")

// PageType is the SEV-SNP PAGE_TYPE of a launch page. The values are the
// firmware's, which KVM's KVM_SEV_SNP_PAGE_TYPE_* constants repeat.
type PageType uint8

// The SEV-SNP page types.
const (
	Normal     PageType = 1 // measured contents
	VMSA       PageType = 2 // vCPU save area; KVM adds these itself at LAUNCH_FINISH
	Zero       PageType = 3 // all-zero page; contents not transferred
	Unmeasured PageType = 4 // contents transferred but not measured
	Secrets    PageType = 5 // filled by the firmware with the guest's secrets
	CPUID      PageType = 6 // CPUID table checked by the firmware
)

// String returns the name of the page type.
func (t PageType) String() string {
	switch t {
	case Normal:
		return "normal"
	case VMSA:
		return "vmsa"
	case Zero:
		return "zero"
	case Unmeasured:
		return "unmeasured"
	case Secrets:
		return "secrets"
	case CPUID:
		return "cpuid"
	}
	return "PageType(" + strconv.Itoa(int(t)) + ")"
}

// Blob is one piece of initial guest memory: Data placed at GPA, followed by
// zeros up to Size bytes. A blob need not be page-aligned, but it owns every
// 4 KiB page it touches: no other blob may touch those pages.
type Blob struct {
	Name string // unique within the plan; used in errors
	GPA  uint64
	Data []byte
	Size uint64 // >= len(Data); bytes past Data are zero
	Type PageType
}

// end returns the first byte after the blob. Validate checks it does not
// overflow.
func (b *Blob) end() uint64 { return b.GPA + b.Size }

// firstPage and endPage bound the pages the blob touches.
func (b *Blob) firstPage() uint64 { return b.GPA &^ (PageSize - 1) }
func (b *Blob) endPage() uint64   { return (b.end() + PageSize - 1) &^ (PageSize - 1) }

// Mode is the CPU mode the boot vCPU starts in.
type Mode uint8

// The boot vCPU modes.
const (
	// Long64 is 64-bit long mode with paging, for the Linux 64-bit boot
	// protocol.
	Long64 Mode = 1
	// Protected32 is 32-bit protected mode without paging, for PVH boot.
	Protected32 Mode = 2
)

// String returns the name of the mode.
func (m Mode) String() string {
	switch m {
	case Long64:
		return "long64"
	case Protected32:
		return "protected32"
	}
	return "Mode(" + strconv.Itoa(int(m)) + ")"
}

// Segment is a segment register as KVM's struct kvm_segment holds it: the
// descriptor fields unpacked, with Limit in bytes (already scaled by G).
// A segment that is not Present is unusable.
type Segment struct {
	Base     uint64
	Limit    uint32
	Selector uint16
	Type     uint8 // 4-bit descriptor type
	Present  bool
	DPL      uint8
	DB       bool // default operation size (32-bit)
	S        bool // code or data (not system) segment
	L        bool // 64-bit code segment
	G        bool // 4 KiB granularity
	AVL      bool
}

// DescriptorTable is a GDTR or IDTR value.
type DescriptorTable struct {
	Base  uint64
	Limit uint16
}

// VCPUState is the boot vCPU's initial state. Registers not named here
// start at their architectural reset values (zero for the general-purpose
// registers).
type VCPUState struct {
	Mode                    Mode
	RIP, RSP, RBP, RSI, RBX uint64
	RFLAGS                  uint64
	CR0, CR3, CR4, EFER     uint64
	CS, DS, ES, FS, GS, SS  Segment
	TR, LDT                 Segment
	GDT, IDT                DescriptorTable
}

// E820 memory types.
const (
	E820RAM      uint32 = 1
	E820Reserved uint32 = 2
	E820ACPI     uint32 = 3
)

// E820Entry is one range of the guest's physical memory map.
type E820Entry struct {
	Addr, Size uint64
	Type       uint32
}

// Plan is a launch plan.
type Plan struct {
	MemorySize uint64 // bytes of guest RAM, a multiple of PageSize
	VCPUs      int
	Blobs      []Blob // in launch (and measurement) order
	BSP        VCPUState
	E820       []E820Entry
}

// Validate checks that the plan can be executed and measured: the memory
// size is a positive multiple of PageSize, there is at least one vCPU, the
// boot vCPU mode is set, and every blob has a unique non-empty name, a
// page type that SNP_LAUNCH_UPDATE accepts, Size >= len(Data) > 0 bytes in
// [0, MemorySize), and touches no page another blob touches. Zero blobs
// carry no data; Secrets and CPUID blobs are exactly one aligned page.
// Errors wrap [ErrInvalid] and name the blob.
func (p *Plan) Validate() error {
	if p.MemorySize == 0 || p.MemorySize%PageSize != 0 {
		return fmt.Errorf("plan: memory size %#x is not a positive multiple of %#x: %w", p.MemorySize, PageSize, ErrInvalid)
	}
	if p.VCPUs < 1 {
		return fmt.Errorf("plan: %d vcpus: %w", p.VCPUs, ErrInvalid)
	}
	if p.BSP.Mode != Long64 && p.BSP.Mode != Protected32 {
		return fmt.Errorf("plan: boot vcpu mode %v: %w", p.BSP.Mode, ErrInvalid)
	}
	names := make(map[string]bool, len(p.Blobs))
	order := make([]int, 0, len(p.Blobs))
	for i := range p.Blobs {
		b := &p.Blobs[i]
		if err := p.checkBlob(b); err != nil {
			return err
		}
		if names[b.Name] {
			return fmt.Errorf("plan: blob %q: name used twice: %w", b.Name, ErrInvalid)
		}
		names[b.Name] = true
		order = append(order, i)
	}
	slices.SortFunc(order, func(i, j int) int {
		a, b := p.Blobs[i].firstPage(), p.Blobs[j].firstPage()
		switch {
		case a < b:
			return -1
		case a > b:
			return 1
		}
		return 0
	})
	for k := 1; k < len(order); k++ {
		prev, cur := &p.Blobs[order[k-1]], &p.Blobs[order[k]]
		if cur.firstPage() < prev.endPage() {
			return fmt.Errorf("plan: blob %q [%#x, %#x) and blob %q [%#x, %#x) share a page: %w",
				prev.Name, prev.GPA, prev.end(), cur.Name, cur.GPA, cur.end(), ErrInvalid)
		}
	}
	for _, e := range p.E820 {
		if e.Size == 0 || e.Addr+e.Size < e.Addr {
			return fmt.Errorf("plan: e820 entry [%#x, +%#x): %w", e.Addr, e.Size, ErrInvalid)
		}
	}
	return nil
}

func (p *Plan) checkBlob(b *Blob) error {
	if b.Name == "" {
		return fmt.Errorf("plan: blob at %#x has no name: %w", b.GPA, ErrInvalid)
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("plan: blob %q: %s: %w", b.Name, fmt.Sprintf(format, args...), ErrInvalid)
	}
	switch b.Type {
	case Normal, Zero, Unmeasured, Secrets, CPUID:
	case VMSA:
		return fail("page type vmsa: KVM adds VMSA pages itself at launch finish")
	default:
		return fail("page type %v", b.Type)
	}
	if b.Size == 0 {
		return fail("empty")
	}
	if uint64(len(b.Data)) > b.Size {
		return fail("%d bytes of data exceed size %#x", len(b.Data), b.Size)
	}
	if b.GPA >= p.MemorySize || b.Size > p.MemorySize-b.GPA {
		return fail("[%#x, +%#x) outside memory [0, %#x)", b.GPA, b.Size, p.MemorySize)
	}
	if b.Type == Zero && len(b.Data) > 0 {
		return fail("zero pages carry no data")
	}
	if (b.Type == Secrets || b.Type == CPUID) && (b.GPA%PageSize != 0 || b.Size != PageSize) {
		return fail("%v blob must be one aligned page, is [%#x, +%#x)", b.Type, b.GPA, b.Size)
	}
	return nil
}

// Pages validates the plan and then calls fn for every 4 KiB page a blob
// touches, in launch order: blobs in plan order, pages in ascending address
// within a blob. page holds the page's contents (the blob's bytes, zeros
// elsewhere); it is nil for Zero pages. page is reused between calls and
// valid only during a call. This is the sequence SNP_LAUNCH_UPDATE and the
// SNP launch digest consume. Pages stops at the first error fn returns and
// returns it.
func (p *Plan) Pages(fn func(gpa uint64, t PageType, page []byte) error) error {
	if err := p.Validate(); err != nil {
		return err
	}
	buf := make([]byte, PageSize)
	for i := range p.Blobs {
		b := &p.Blobs[i]
		for gpa := b.firstPage(); gpa < b.endPage(); gpa += PageSize {
			var page []byte
			if b.Type != Zero {
				page = buf
				clear(page)
				// Copy the part of Data that falls in [gpa, gpa+PageSize).
				lo := max(gpa, b.GPA)
				hi := min(gpa+PageSize, b.GPA+uint64(len(b.Data)))
				if lo < hi {
					copy(page[lo-gpa:hi-gpa], b.Data[lo-b.GPA:hi-b.GPA])
				}
			}
			if err := fn(gpa, b.Type, page); err != nil {
				return err
			}
		}
	}
	return nil
}

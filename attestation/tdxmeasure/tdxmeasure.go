// Package tdxmeasure computes the expected Intel TDX launch measurement
// (MRTD) of a TDVF firmware image, such as OVMF.fd, from the image alone,
// and the RTMR1 and RTMR2 of a direct kernel boot from the kernel, initrd
// and command line.
//
// # MRTD
//
// The TDX module keeps MRTD as one running SHA-384 over the records of the
// SEAMCALLs that build the TD, finalized by TDH.MR.FINALIZE:
//
//   - TDH.MEM.PAGE.ADD of a 4 KiB page appends a 128-byte record: the ASCII
//     string "MEM.PAGE.ADD" at bytes 0..11, the page's guest physical address
//     (GPA) as a little-endian uint64 at bytes 16..23, zeros elsewhere.
//   - TDH.MR.EXTEND of a 256-byte chunk appends a 128-byte record ("MR.EXTEND"
//     at 0..8, the chunk's GPA at 16..23, zeros elsewhere) followed by the 256
//     bytes of the chunk.
//
// The VMM (QEMU, through KVM_TDX_INIT_MEM_REGION) walks the sections of the
// firmware's TDVF metadata in metadata order, and for every page of a section
// issues one PAGE.ADD and, when the section has the MR.EXTEND attribute, the
// 16 MR.EXTENDs of that page right after it. Sections with the PAGE.AUG
// attribute are accepted into the TD later and are not part of MRTD; the
// td-shim TD_INFO section is never loaded. TD_HOB and TempMem pages are added
// but never extended, so their contents (the memory map, hence the memory
// size) do not reach MRTD. MRTD therefore depends only on the firmware file:
// not on the vCPU count, memory size, kernel, initrd or command line.
//
// The metadata is found through the OVMF footer GUID table (the entry
// e47a6535-984a-4798-865e-4685a7bf8ec2 holds the descriptor's offset from
// the end of the file) or, for td-shim images without that table, through the
// uint32 file offset at 0x20 bytes before the end of the image, which must
// point at a "TDVF" descriptor preceded by the TDVF metadata GUID
// e9eaf9f3-168e-44d5-a8eb-7f4d8738f6ae. The section offsets describe the
// file that the VMM maps (QEMU -bios): for OVMF that is the unified OVMF.fd.
// A code-only OVMF_CODE.fd carries the same metadata, whose offsets then point
// past the end of the file; such images are rejected with ErrInvalidMetadata.
//
// # RTMRs
//
// Each RTMR starts at 48 zero bytes and is extended as SHA-384(RTMR ‖
// digest) per event (Extend, Replay). For a direct boot (QEMU -kernel,
// -initrd, -append with TDVF), RTMR1 and RTMR2 computes two of them:
//
//   - RTMR0 (firmware configuration) is not computed: TDVF extends the
//     TD_HOB (memory map, so memory size), the CFV (variable store), the
//     Secure Boot variables, the VMM's ACPI tables (which depend on the VMM
//     version, machine type, devices and vCPU count) and the boot
//     variables. It can be predicted only for one fixed VMM configuration
//     whose ACPI tables and HOB have been captured or are built by our own
//     VMM.
//   - RTMR1 (loader and kernel): the kernel's Authenticode SHA-384 (OVMF up
//     to edk2-stable202502 hashes the image as patched by QEMU's
//     setup-header edits, PatchKernel; later versions the raw file),
//     followed by four fixed EFI events.
//   - RTMR2 (OS): what the kernel's EFI stub logs, if its stub measures
//     through the CC measurement protocol: the load options (the command
//     line with " initrd=initrd" appended by OVMF, UTF-16LE with NUL) and
//     the initrd's SHA-384.
//   - RTMR3 is zero at launch; it belongs to the OS and runtime.
//
// The event lists follow dstack-mr (Dstack-TEE/dstack, a fork of
// virtee/tdx-measure), EDK2 and Linux's EFI stub as read; see
// docs/measure.md for what is cross-checked and what is not.
//
// Other TDREPORT fields (ATTRIBUTES, XFAM, MRCONFIGID, MROWNER,
// MROWNERCONFIG, SERVTD_HASH, TEE_TCB_SVN) are not measurements of the
// image and must be pinned separately.
//
// # Sources
//
//   - Intel TDX Module specification, TDH.MEM.PAGE.ADD and TDH.MR.EXTEND.
//   - Intel TDVF Design Guide, TDVF metadata; confidential-containers/td-shim
//     doc/tdshim_spec.md (section types 4..7, PAGE.AUG).
//   - QEMU hw/i386/tdvf.c (metadata checks) and target/i386/kvm/tdx.c
//     (section walk and measure flag).
//   - Cross-checked against google/gce-tcb-verifier (tdx package) and
//     td-shim's td_shim_tee_info_hash.py through the vectors in
//     testdata/measure/tdx-*.json; the code here is an independent
//     implementation.
package tdxmeasure

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
)

// Sentinel errors; every error returned by this package wraps exactly one.
var (
	// ErrNoMetadata: the image carries no TDVF metadata (not a TDX firmware).
	ErrNoMetadata = errors.New("tdxmeasure: no TDVF metadata")
	// ErrInvalidMetadata: the image has TDVF metadata, but it is malformed or
	// does not describe this image.
	ErrInvalidMetadata = errors.New("tdxmeasure: invalid TDVF metadata")
)

// Section is one TDVF_SECTION entry of the TDVF metadata, in file layout.
type Section struct {
	DataOffset     uint32 // offset of the raw data in the image file
	RawDataSize    uint32 // bytes of raw data in the image file
	MemoryAddress  uint64 // GPA the section is loaded at
	MemoryDataSize uint64 // bytes of guest memory the section occupies
	Type           uint32 // TypeBFV, ...
	Attributes     uint32 // AttrMRExtend, AttrPageAug
}

// Section types (TDVF design guide; 4..7 from the td-shim specification).
const (
	TypeBFV          = 0 // boot firmware volume: code, measured into MRTD
	TypeCFV          = 1 // configuration firmware volume: variables
	TypeTDHOB        = 2 // TD hand-off block, filled in by the VMM
	TypeTempMem      = 3 // temporary memory
	TypePermMem      = 4 // permanent memory, accepted with PAGE.AUG
	TypePayload      = 5 // td-shim payload
	TypePayloadParam = 6 // td-shim payload parameters
	TypeTDInfo       = 7 // td-shim TD_INFO, never loaded
)

// Section attributes.
const (
	AttrMRExtend = 1 << 0 // every page is also MR.EXTENDed into MRTD
	AttrPageAug  = 1 << 1 // added after launch with PAGE.AUG; not in MRTD
)

// TypeName returns the TDVF name of a section type, e.g. "BFV".
func TypeName(t uint32) string {
	switch t {
	case TypeBFV:
		return "BFV"
	case TypeCFV:
		return "CFV"
	case TypeTDHOB:
		return "TD_HOB"
	case TypeTempMem:
		return "TempMem"
	case TypePermMem:
		return "PermMem"
	case TypePayload:
		return "Payload"
	case TypePayloadParam:
		return "PayloadParam"
	case TypeTDInfo:
		return "TD_INFO"
	}
	return fmt.Sprintf("type %d", t)
}

const (
	pageSize      = 4096
	extendChunk   = 256
	guidSize      = 16
	descHdrSize   = 16 // Signature, Length, Version, NumberOfSectionEntries
	sectionSize   = 32
	resetVecArea  = 32 // the last bytes of an OVMF image, below the footer table
	tableEntryHdr = 2 + guidSize
	tdshimPtrOff  = 0x20 // td-shim: uint32 descriptor offset, 0x20 bytes before the end
	tdvfVersion   = 1
)

var (
	tdvfSignature = []byte("TDVF")
	// GUIDs in EFI_GUID byte order (first three fields little-endian).
	footerGUID = []byte{0xde, 0x82, 0xb5, 0x96, 0xb2, 0x1f, 0xf7, 0x45, 0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d}
	tdxOffGUID = []byte{0x35, 0x65, 0x7a, 0xe4, 0x4a, 0x98, 0x98, 0x47, 0x86, 0x5e, 0x46, 0x85, 0xa7, 0xbf, 0x8e, 0xc2}
	tdvfGUID   = []byte{0xf3, 0xf9, 0xea, 0xe9, 0x8e, 0x16, 0xd5, 0x44, 0xa8, 0xeb, 0x7f, 0x4d, 0x87, 0x38, 0xf6, 0xae}
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidMetadata}, args...)...)
}

// ParseMetadata finds and validates the TDVF metadata of the firmware image
// fw and returns its sections in metadata order. It returns an error wrapping
// ErrNoMetadata when fw has no TDVF metadata, and one wrapping
// ErrInvalidMetadata when the metadata is malformed or does not describe fw
// (for instance a section's raw data lies beyond the end of the file).
func ParseMetadata(fw []byte) ([]Section, error) {
	off, err := locate(fw)
	if err != nil {
		return nil, err
	}
	secs, err := readSections(fw, off)
	if err != nil {
		return nil, err
	}
	pages := uint64(0)
	for i, s := range secs {
		if err := checkSection(s, len(fw)); err != nil {
			return nil, invalid("section %d (%s): %v", i, TypeName(s.Type), err)
		}
		if added(s) {
			pages += s.MemoryDataSize / pageSize
		}
	}
	if pages > MaxPages {
		return nil, invalid("sections add %d pages at launch, more than the limit of %d", pages, MaxPages)
	}
	if err := checkOverlap(secs); err != nil {
		return nil, err
	}
	return secs, nil
}

// MaxPages bounds the pages the sections of one image may add at launch
// (1 GiB). OVMF adds a few hundred; the bound keeps a hostile image from
// making MRTD hash for hours.
const MaxPages = 1 << 18

// maxGPA is the end of the largest guest physical address space (52 bits).
const maxGPA = 1 << 52

// added reports whether the VMM adds the pages of s with PAGE.ADD at launch.
func added(s Section) bool {
	return s.Type != TypeTDInfo && s.Attributes&AttrPageAug == 0
}

// checkOverlap rejects sections whose memory ranges overlap: the TDX
// module refuses to add a page twice.
func checkOverlap(secs []Section) error {
	idx := make([]int, 0, len(secs))
	for i, s := range secs {
		if s.Type != TypeTDInfo && s.MemoryDataSize != 0 {
			idx = append(idx, i)
		}
	}
	sort.Slice(idx, func(a, b int) bool { return secs[idx[a]].MemoryAddress < secs[idx[b]].MemoryAddress })
	for k := 1; k < len(idx); k++ {
		p, q := secs[idx[k-1]], secs[idx[k]]
		if p.MemoryAddress+p.MemoryDataSize > q.MemoryAddress {
			return invalid("sections %d and %d overlap in guest memory at 0x%x", idx[k-1], idx[k], q.MemoryAddress)
		}
	}
	return nil
}

// locate returns the file offset of the TDVF descriptor (its "TDVF"
// signature).
func locate(fw []byte) (int, error) {
	if entry, found, err := footerEntry(fw, tdxOffGUID); err != nil {
		return 0, err
	} else if found {
		if len(entry) < 4 {
			return 0, invalid("TDX metadata offset entry has %d data bytes, want 4", len(entry))
		}
		fromEnd := uint64(binary.LittleEndian.Uint32(entry))
		if fromEnd > uint64(len(fw)) || fromEnd < descHdrSize {
			return 0, invalid("TDX metadata offset 0x%x from the end lies outside the 0x%x-byte image", fromEnd, len(fw))
		}
		return len(fw) - int(fromEnd), nil
	}
	// td-shim layout: a file offset just below the reset vector. Without the
	// OVMF table this is only trusted when GUID and signature both match.
	if len(fw) >= tdshimPtrOff {
		off := uint64(binary.LittleEndian.Uint32(fw[len(fw)-tdshimPtrOff:]))
		if off >= guidSize && off+descHdrSize <= uint64(len(fw)) &&
			bytes.Equal(fw[off-guidSize:off], tdvfGUID) && bytes.Equal(fw[off:off+4], tdvfSignature) {
			return int(off), nil
		}
	}
	return 0, fmt.Errorf("%w: neither an OVMF GUID table entry e47a6535-984a-4798-865e-4685a7bf8ec2 nor a td-shim descriptor pointer (is this a TDX firmware image?)", ErrNoMetadata)
}

// footerEntry looks up guid in the OVMF footer GUID table at the end of fw.
// It reports found=false without error when fw has no such table or the
// table has no such entry, and an error when the table is malformed.
func footerEntry(fw []byte, guid []byte) (data []byte, found bool, err error) {
	end := len(fw) - resetVecArea // the table ends here
	if end < tableEntryHdr || !bytes.Equal(fw[end-guidSize:end], footerGUID) {
		return nil, false, nil
	}
	size := int(binary.LittleEndian.Uint16(fw[end-tableEntryHdr:]))
	if size < tableEntryHdr || size > end {
		return nil, false, invalid("OVMF GUID table size 0x%x does not fit the 0x%x-byte image", size, len(fw))
	}
	start := end - size
	for p := end - tableEntryHdr; p > start; {
		if p-start < tableEntryHdr {
			return nil, false, invalid("OVMF GUID table: truncated entry at offset 0x%x", p)
		}
		g := fw[p-guidSize : p]
		n := int(binary.LittleEndian.Uint16(fw[p-tableEntryHdr:]))
		if n < tableEntryHdr || n > p-start {
			return nil, false, invalid("OVMF GUID table: entry at offset 0x%x has bad size 0x%x", p-tableEntryHdr, n)
		}
		if bytes.Equal(g, guid) {
			return fw[p-n : p-tableEntryHdr], true, nil
		}
		p -= n
	}
	return nil, false, nil
}

// readSections parses the descriptor at fw[off:] without checking the
// sections against the image.
func readSections(fw []byte, off int) ([]Section, error) {
	if off < 0 || off+descHdrSize > len(fw) {
		return nil, invalid("descriptor at offset 0x%x does not fit the 0x%x-byte image", off, len(fw))
	}
	d := fw[off:]
	if !bytes.Equal(d[:4], tdvfSignature) {
		return nil, invalid("no \"TDVF\" signature at offset 0x%x (found %q)", off, d[:4])
	}
	length := binary.LittleEndian.Uint32(d[4:])
	version := binary.LittleEndian.Uint32(d[8:])
	count := binary.LittleEndian.Uint32(d[12:])
	if version != tdvfVersion {
		return nil, invalid("descriptor version %d, only version %d is defined", version, tdvfVersion)
	}
	if count == 0 {
		return nil, invalid("descriptor lists no sections")
	}
	if uint64(length) != descHdrSize+sectionSize*uint64(count) {
		return nil, invalid("descriptor length 0x%x does not match %d sections (want 0x%x)", length, count, descHdrSize+sectionSize*uint64(count))
	}
	if uint64(off)+uint64(length) > uint64(len(fw)) {
		return nil, invalid("descriptor of 0x%x bytes at offset 0x%x runs past the end of the 0x%x-byte image", length, off, len(fw))
	}
	secs := make([]Section, count)
	for i := range secs {
		b := d[descHdrSize+i*sectionSize:]
		secs[i] = Section{
			DataOffset:     binary.LittleEndian.Uint32(b[0:]),
			RawDataSize:    binary.LittleEndian.Uint32(b[4:]),
			MemoryAddress:  binary.LittleEndian.Uint64(b[8:]),
			MemoryDataSize: binary.LittleEndian.Uint64(b[16:]),
			Type:           binary.LittleEndian.Uint32(b[24:]),
			Attributes:     binary.LittleEndian.Uint32(b[28:]),
		}
	}
	return secs, nil
}

// checkSection validates one section against an image of fwLen bytes.
func checkSection(s Section, fwLen int) error {
	if s.Type > TypeTDInfo {
		return fmt.Errorf("unknown section type %d", s.Type)
	}
	if s.Attributes&^(AttrMRExtend|AttrPageAug) != 0 {
		return fmt.Errorf("unknown attribute bits 0x%x", s.Attributes)
	}
	if s.Attributes == AttrMRExtend|AttrPageAug {
		return errors.New("both MR.EXTEND and PAGE.AUG set")
	}
	if end := uint64(s.DataOffset) + uint64(s.RawDataSize); end > uint64(fwLen) {
		return fmt.Errorf("raw data at file offset 0x%x, size 0x%x, ends at 0x%x, past the end of the 0x%x-byte firmware image: the metadata describes a larger image (TDX needs the unified OVMF.fd, not a code-only OVMF_CODE.fd)",
			s.DataOffset, s.RawDataSize, end, fwLen)
	}
	if s.Type == TypeTDInfo {
		if s.MemoryAddress != 0 || s.MemoryDataSize != 0 || s.Attributes != 0 {
			return errors.New("TD_INFO section has a memory range or attributes")
		}
		return nil
	}
	if s.MemoryAddress%pageSize != 0 {
		return fmt.Errorf("memory address 0x%x is not 4 KiB aligned", s.MemoryAddress)
	}
	if s.MemoryDataSize%pageSize != 0 {
		return fmt.Errorf("memory size 0x%x is not a multiple of 4 KiB", s.MemoryDataSize)
	}
	if s.MemoryAddress >= maxGPA || s.MemoryDataSize > maxGPA-s.MemoryAddress {
		return fmt.Errorf("memory range 0x%x+0x%x extends beyond the 52-bit guest physical address space", s.MemoryAddress, s.MemoryDataSize)
	}
	if uint64(s.RawDataSize) > s.MemoryDataSize {
		return fmt.Errorf("raw data size 0x%x exceeds memory size 0x%x", s.RawDataSize, s.MemoryDataSize)
	}
	switch s.Type {
	case TypeBFV, TypeCFV:
		if s.RawDataSize == 0 {
			return errors.New("firmware volume without raw data")
		}
	case TypeTDHOB, TypeTempMem, TypePermMem:
		if s.RawDataSize != 0 {
			return fmt.Errorf("raw data size 0x%x, want 0 for this type", s.RawDataSize)
		}
	}
	// The VMM measures MemoryDataSize bytes read from the image at
	// DataOffset; only a section fully backed by raw data is unambiguous.
	if s.Attributes&AttrMRExtend != 0 && uint64(s.RawDataSize) != s.MemoryDataSize {
		return fmt.Errorf("MR.EXTEND section with raw data size 0x%x != memory size 0x%x", s.RawDataSize, s.MemoryDataSize)
	}
	return nil
}

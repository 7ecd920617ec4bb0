package loader

import (
	"encoding/binary"
	"fmt"
)

// ELF64 constants (the System V gABI and its x86-64 supplement).
const (
	elfMagic    = "\x7fELF"
	elfClass64  = 2
	elfData2LSB = 1
	elfVersion  = 1
	elfExec     = 2  // ET_EXEC
	elfX8664    = 62 // EM_X86_64
	ehdrSize    = 64
	phdrSize    = 56
	maxPhdrs    = 64
	ptLoad      = 1
	ptNote      = 4
	maxGPA      = 1 << 46
	pvhNoteName = "Xen"
	pvhNoteType = 18 // XEN_ELFNOTE_PHYS32_ENTRY
	noteHdrSize = 12
	maxELFLoads = 16
)

func parseELF(b []byte) (*Kernel, error) {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("loader: elf: %s: %w", fmt.Sprintf(format, args...), ErrFormat)
	}
	if len(b) < ehdrSize {
		return nil, fail("truncated: %d bytes, header needs %d", len(b), ehdrSize)
	}
	if b[4] != elfClass64 || b[5] != elfData2LSB || b[6] != elfVersion {
		return nil, fmt.Errorf("loader: elf: class %d, data %d, version %d; want 64-bit little-endian version 1: %w", b[4], b[5], b[6], ErrUnsupported)
	}
	le := binary.LittleEndian
	if typ, mach := le.Uint16(b[16:]), le.Uint16(b[18:]); typ != elfExec || mach != elfX8664 {
		return nil, fmt.Errorf("loader: elf: type %d machine %d, want an x86-64 executable: %w", typ, mach, ErrUnsupported)
	}
	phoff := le.Uint64(b[0x20:])
	phentsize := le.Uint16(b[0x36:])
	phnum := int(le.Uint16(b[0x38:]))
	if phentsize != phdrSize {
		return nil, fail("program header size %d, want %d", phentsize, phdrSize)
	}
	if phnum == 0 || phnum > maxPhdrs {
		return nil, fail("%d program headers, want 1 to %d", phnum, maxPhdrs)
	}
	if phoff > uint64(len(b)) || uint64(phnum)*phdrSize > uint64(len(b))-phoff {
		return nil, fail("program headers [%#x, +%d*%d) outside the file of %d bytes", phoff, phnum, phdrSize, len(b))
	}
	k := &Kernel{Format: ELFPVH}
	var lo, hi uint64 = maxGPA, 0
	havePVH := false
	for i := range phnum {
		ph := b[phoff+uint64(i)*phdrSize:][:phdrSize]
		typ := le.Uint32(ph[0:])
		off, paddr := le.Uint64(ph[8:]), le.Uint64(ph[24:])
		filesz, memsz, align := le.Uint64(ph[32:]), le.Uint64(ph[40:]), le.Uint64(ph[48:])
		if typ != ptLoad && typ != ptNote {
			continue
		}
		if off > uint64(len(b)) || filesz > uint64(len(b))-off {
			return nil, fail("segment %d: file range [%#x, +%#x) outside the file of %d bytes", i, off, filesz, len(b))
		}
		data := b[off : off+filesz : off+filesz]
		if typ == ptNote {
			entry, ok, err := findPVHEntry(data, align)
			if err != nil {
				return nil, fail("segment %d: %v", i, err)
			}
			if ok {
				k.PVHEntry, havePVH = entry, true
			}
			continue
		}
		if memsz == 0 {
			continue
		}
		if filesz > memsz {
			return nil, fail("segment %d: file size %#x exceeds memory size %#x", i, filesz, memsz)
		}
		if paddr >= maxGPA || memsz > maxGPA-paddr {
			return nil, fail("segment %d: [%#x, +%#x) beyond the %#x physical address limit", i, paddr, memsz, uint64(maxGPA))
		}
		if len(k.Segments) == maxELFLoads {
			return nil, fail("more than %d loadable segments", maxELFLoads)
		}
		lo, hi = min(lo, paddr), max(hi, paddr+memsz)
		k.Segments = append(k.Segments, Segment{GPA: paddr, Data: data, MemSize: memsz})
	}
	if len(k.Segments) == 0 {
		return nil, fail("no loadable segments")
	}
	if hi-lo > MaxKernelSize {
		return nil, fail("segments span %#x bytes, more than %#x", hi-lo, MaxKernelSize)
	}
	if !havePVH {
		return nil, fmt.Errorf("loader: elf: %w", ErrNoPVH)
	}
	return k, nil
}

// findPVHEntry scans ELF notes for XEN_ELFNOTE_PHYS32_ENTRY. Note fields
// are padded to 4 bytes, or 8 when the segment is 8-aligned.
func findPVHEntry(notes []byte, align uint64) (entry uint32, found bool, err error) {
	pad := uint64(4)
	if align == 8 {
		pad = 8
	}
	roundUp := func(n uint64) uint64 { return (n + pad - 1) &^ (pad - 1) }
	le := binary.LittleEndian
	for rest := notes; len(rest) > 0; {
		if len(rest) < noteHdrSize {
			return 0, false, fmt.Errorf("truncated note header")
		}
		namesz, descsz, typ := uint64(le.Uint32(rest)), uint64(le.Uint32(rest[4:])), le.Uint32(rest[8:])
		body := rest[noteHdrSize:]
		nameLen, descLen := roundUp(namesz), roundUp(descsz)
		if nameLen > uint64(len(body)) || descsz > uint64(len(body))-nameLen {
			return 0, false, fmt.Errorf("note of name size %d and descriptor size %d overruns the segment", namesz, descsz)
		}
		name, desc := body[:namesz], body[nameLen:nameLen+descsz]
		if string(name) == pvhNoteName+"\x00" && typ == pvhNoteType {
			switch len(desc) {
			case 4:
				entry = le.Uint32(desc)
			case 8:
				e := le.Uint64(desc)
				if e > 1<<32-1 {
					return 0, false, fmt.Errorf("pvh entry %#x above 4 GiB", e)
				}
				entry = uint32(e)
			default:
				return 0, false, fmt.Errorf("pvh entry note of %d bytes", len(desc))
			}
			found = true
		}
		if descLen > uint64(len(body))-nameLen {
			break // the last note's padding may be missing
		}
		rest = body[nameLen+descLen:]
	}
	return entry, found, nil
}

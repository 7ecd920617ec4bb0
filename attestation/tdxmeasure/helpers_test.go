package tdxmeasure_test

import (
	"encoding/binary"

	"github.com/greatjail/cvm/attestation/tdxmeasure"
)

// GUIDs in EFI byte order, written out independently of the package.
var (
	guidFooter = [16]byte{0xde, 0x82, 0xb5, 0x96, 0xb2, 0x1f, 0xf7, 0x45, 0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d} // 96b582de-1fb2-45f7-baea-a366c55a082d
	guidTDXOff = [16]byte{0x35, 0x65, 0x7a, 0xe4, 0x4a, 0x98, 0x98, 0x47, 0x86, 0x5e, 0x46, 0x85, 0xa7, 0xbf, 0x8e, 0xc2} // e47a6535-984a-4798-865e-4685a7bf8ec2
	guidTDVF   = [16]byte{0xf3, 0xf9, 0xea, 0xe9, 0x8e, 0x16, 0xd5, 0x44, 0xa8, 0xeb, 0x7f, 0x4d, 0x87, 0x38, 0xf6, 0xae} // e9eaf9f3-168e-44d5-a8eb-7f4d8738f6ae
)

// synthImage describes a small synthetic TDVF firmware image.
type synthImage struct {
	size    int // file size
	metaOff int // file offset of the "TDVF" descriptor
	secs    []tdxmeasure.Section
	tdshim  bool // td-shim pointer at size-0x20 instead of the OVMF footer table
	// mutate, if set, edits the finished image (for negative tests).
	mutate func(fw []byte)
}

// synthSections is the default section list: a 4-page image mapped to end
// at 4 GiB, CFV in page 0, BFV (measured) in pages 1-3 (it also holds the
// metadata and the footer, as in OVMF), a TD_HOB, TempMem and a PAGE.AUG
// PermMem section that MRTD skips.
func synthSections() []tdxmeasure.Section {
	return []tdxmeasure.Section{
		{DataOffset: 0x1000, RawDataSize: 0x3000, MemoryAddress: 0xFFFFD000, MemoryDataSize: 0x3000, Type: 0, Attributes: 1},
		{DataOffset: 0, RawDataSize: 0x1000, MemoryAddress: 0xFFFFC000, MemoryDataSize: 0x1000, Type: 1},
		{MemoryAddress: 0x809000, MemoryDataSize: 0x1000, Type: 2},
		{MemoryAddress: 0x800000, MemoryDataSize: 0x2000, Type: 3},
		{MemoryAddress: 0x1000000, MemoryDataSize: 0x1000, Type: 4, Attributes: 2},
	}
}

func defaultSynth() synthImage {
	return synthImage{size: 0x4000, metaOff: 0x3800, secs: synthSections()}
}

func (s synthImage) build() []byte {
	le := binary.LittleEndian
	fw := make([]byte, s.size)
	for i := range fw {
		fw[i] = byte(i*7 + i>>8) // recognisable, non-periodic per page
	}
	copy(fw[s.metaOff-16:], guidTDVF[:])
	d := fw[s.metaOff:]
	copy(d, "TDVF")
	le.PutUint32(d[4:], uint32(16+32*len(s.secs)))
	le.PutUint32(d[8:], 1)
	le.PutUint32(d[12:], uint32(len(s.secs)))
	for i, sec := range s.secs {
		b := d[16+32*i:]
		le.PutUint32(b[0:], sec.DataOffset)
		le.PutUint32(b[4:], sec.RawDataSize)
		le.PutUint64(b[8:], sec.MemoryAddress)
		le.PutUint64(b[16:], sec.MemoryDataSize)
		le.PutUint32(b[24:], sec.Type)
		le.PutUint32(b[28:], sec.Attributes)
	}
	if s.tdshim {
		le.PutUint32(fw[s.size-0x20:], uint32(s.metaOff))
	} else {
		// Footer table ending 32 bytes before the end:
		// [u32 offset-from-end | u16 22 | TDX GUID][u16 40 | footer GUID].
		end := s.size - 32
		copy(fw[end-16:], guidFooter[:])
		le.PutUint16(fw[end-18:], 40)
		copy(fw[end-34:], guidTDXOff[:])
		le.PutUint16(fw[end-36:], 22)
		le.PutUint32(fw[end-40:], uint32(s.size-s.metaOff))
	}
	if s.mutate != nil {
		s.mutate(fw)
	}
	return fw
}

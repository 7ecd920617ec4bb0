package tdxmeasure

import (
	"crypto/sha512"
	"encoding/binary"
	"hash"
)

const recordSize = 128 // PAGE.ADD record, and the header of an MR.EXTEND record

// MRTD returns the MRTD of a TD launched with the firmware image fw mapped as
// its TDVF metadata says (QEMU -bios). It returns the errors of ParseMetadata.
func MRTD(fw []byte) ([48]byte, error) {
	secs, err := ParseMetadata(fw)
	if err != nil {
		return [48]byte{}, err
	}
	m := newMeasurer()
	m.sections(fw, secs)
	return m.sum(), nil
}

// measurer accumulates MRTD. Records are assembled in buf, one page's worth
// (a PAGE.ADD and up to 16 MR.EXTENDs) at a time, and written at once.
type measurer struct {
	h                 hash.Hash
	buf               []byte
	pageAdds, extends int // records written, for tests
}

func newMeasurer() *measurer {
	return &measurer{
		h:   sha512.New384(),
		buf: make([]byte, 0, recordSize+pageSize/extendChunk*(recordSize+extendChunk)),
	}
}

// sections measures secs, which ParseMetadata has validated against fw.
func (m *measurer) sections(fw []byte, secs []Section) {
	for _, s := range secs {
		if s.Type == TypeTDInfo || s.Attributes&AttrPageAug != 0 {
			continue
		}
		for p := uint64(0); p < s.MemoryDataSize/pageSize; p++ {
			gpa := s.MemoryAddress + p*pageSize
			m.buf = appendPageAdd(m.buf[:0], gpa)
			m.pageAdds++
			if s.Attributes&AttrMRExtend != 0 {
				page := fw[uint64(s.DataOffset)+p*pageSize:][:pageSize]
				for c := uint64(0); c < pageSize/extendChunk; c++ {
					m.buf = appendMRExtend(m.buf, gpa+c*extendChunk, page[c*extendChunk:][:extendChunk])
					m.extends++
				}
			}
			m.h.Write(m.buf)
		}
	}
}

func (m *measurer) sum() [48]byte {
	var d [48]byte
	m.h.Sum(d[:0])
	return d
}

// appendPageAdd appends the TDH.MEM.PAGE.ADD record for the page at gpa.
func appendPageAdd(b []byte, gpa uint64) []byte {
	return appendHeader(b, "MEM.PAGE.ADD", gpa)
}

// appendMRExtend appends the TDH.MR.EXTEND record for the 256-byte chunk at
// gpa: a 128-byte header and the chunk.
func appendMRExtend(b []byte, gpa uint64, chunk []byte) []byte {
	return append(appendHeader(b, "MR.EXTEND", gpa), chunk...)
}

func appendHeader(b []byte, op string, gpa uint64) []byte {
	n := len(b)
	b = append(b, make([]byte, recordSize)...)
	copy(b[n:], op)
	binary.LittleEndian.PutUint64(b[n+16:], gpa)
	return b
}

package tdxmeasure

import (
	"cmp"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
)

// ErrNotPE: the kernel is not a PE/COFF image (an x86 bzImage with an EFI
// stub is one), or one whose headers do not describe the file. The message
// carries no package prefix so that callers can prefix the file name:
// "kernel vmlinuz: not a PE/COFF image: ...".
var ErrNotPE = errors.New("not a PE/COFF image")

// MaxSections bounds the PE section table (the PE specification's loader
// limit is 96; a Linux bzImage has 3 to 5).
const MaxSections = 96

// PE/COFF layout (Microsoft PE format specification).
const (
	offLfanew      = 0x3c // DOS header: file offset of the "PE\0\0" signature
	coffHeaderSize = 20
	peSectionSize  = 40
	dirSecurity    = 4 // data directory index of the certificate table
	magicPE32      = 0x10b
	magicPE32Plus  = 0x20b
)

// Authenticode returns the Authenticode SHA-384 digest of the PE/COFF image
// img: what firmware measures for an EFI application it loads
// (EV_EFI_BOOT_SERVICES_APPLICATION) and what a signature over the image
// covers. Errors wrap ErrNotPE.
func Authenticode(img []byte) ([48]byte, error) {
	var d [48]byte
	h := sha512.New384()
	if err := authenticode(img, h); err != nil {
		return d, err
	}
	h.Sum(d[:0])
	return d, nil
}

// peRange is a half-open byte range [off, end) of the image.
type peRange struct{ off, end uint64 }

// authenticode writes to w the bytes the Authenticode digest covers, in
// order (PE specification, "Calculating the PE Image Hash"; EDK2
// SecurityPkg DxeTpm2MeasureBootLib / Tcg2Dxe MeasurePeImage):
//
//  1. the headers up to SizeOfHeaders, minus the optional header's CheckSum
//     and the certificate-table data directory entry (when the directory
//     has one);
//  2. every section's raw data (SizeOfRawData > 0), sorted by
//     PointerToRawData;
//  3. the data after the last hashed byte, minus the certificate table's
//     size (the table itself is the file's tail).
//
// No padding to 8 bytes is added: EDK2 adds none. (Signing tools pad the
// file itself; dstack-mr pads its digest; both agree on files whose size
// is a multiple of 8, as every Linux bzImage is.)
func authenticode(img []byte, w io.Writer) error {
	le := binary.LittleEndian
	n := uint64(len(img))
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrNotPE}, args...)...)
	}
	if n < offLfanew+4 || img[0] != 'M' || img[1] != 'Z' {
		return bad("no MZ DOS header")
	}
	pe := uint64(le.Uint32(img[offLfanew:]))
	coff := pe + 4
	opt := coff + coffHeaderSize
	if opt+2 > n || string(img[pe:coff]) != "PE\x00\x00" {
		return bad("no PE signature at the DOS header's offset 0x%x", pe)
	}
	nsec := uint64(le.Uint16(img[coff+2:]))
	optSize := uint64(le.Uint16(img[coff+16:]))
	var dirs uint64 // offset of the data directories in the optional header
	switch m := le.Uint16(img[opt:]); m {
	case magicPE32:
		dirs = 96
	case magicPE32Plus:
		dirs = 112
	default:
		return bad("optional header magic 0x%x, want 0x10b (PE32) or 0x20b (PE32+)", m)
	}
	if optSize < dirs {
		return bad("optional header of %d bytes is shorter than its %d fixed bytes", optSize, dirs)
	}
	if opt+optSize > n {
		return bad("optional header (0x%x+0x%x) extends past the end of the %d-byte file", opt, optSize, n)
	}
	ndirs := uint64(le.Uint32(img[opt+dirs-4:])) // NumberOfRvaAndSizes
	if ndirs > (optSize-dirs)/8 {
		return bad("%d data directories do not fit the %d-byte optional header", ndirs, optSize)
	}
	checksum := opt + 64
	sizeOfHeaders := uint64(le.Uint32(img[opt+60:]))
	if sizeOfHeaders > n {
		return bad("SizeOfHeaders 0x%x is past the end of the %d-byte file", sizeOfHeaders, n)
	}
	if nsec > MaxSections {
		return bad("%d sections, more than %d", nsec, MaxSections)
	}
	secTable := opt + optSize
	if secTable+nsec*peSectionSize > sizeOfHeaders {
		return bad("section table (0x%x, %d entries) extends past SizeOfHeaders 0x%x", secTable, nsec, sizeOfHeaders)
	}

	// 1. Headers. With a certificate-table entry, skip it too.
	var certSize uint64
	if ndirs > dirSecurity {
		cert := opt + dirs + dirSecurity*8
		certSize = uint64(le.Uint32(img[cert+4:]))
		w.Write(img[:checksum])
		w.Write(img[checksum+4 : cert])
		w.Write(img[cert+8 : sizeOfHeaders])
	} else {
		w.Write(img[:checksum])
		w.Write(img[checksum+4 : sizeOfHeaders])
	}

	// 2. Sections, sorted by file offset.
	secs := make([]peRange, 0, nsec)
	for i := range nsec {
		s := img[secTable+i*peSectionSize:]
		size := uint64(le.Uint32(s[16:]))
		off := uint64(le.Uint32(s[20:]))
		if size == 0 {
			continue
		}
		if off+size > n {
			return bad("section %d raw data 0x%x+0x%x extends past the end of the %d-byte file", i, off, size, n)
		}
		secs = append(secs, peRange{off, off + size})
	}
	slices.SortStableFunc(secs, func(a, b peRange) int { return cmp.Compare(a.off, b.off) })
	hashed := sizeOfHeaders
	for _, s := range secs {
		w.Write(img[s.off:s.end])
		hashed += s.end - s.off
	}

	// 3. Trailing data, minus the certificate table.
	if n > hashed {
		if n < hashed+certSize {
			return bad("certificate table of %d bytes is larger than the %d bytes after the sections", certSize, n-hashed)
		}
		w.Write(img[hashed : n-certSize])
	}
	return nil
}

package snpmeasure

import (
	"crypto/sha512"
	"encoding/binary"
	"hash"
	"strconv"
)

// PageSize is the size of the pages the launch digest is computed over.
const PageSize = 4096

// VMSAGPA is the guest physical address recorded in the PAGE_INFO of every
// VMSA page: -1 page-aligned, with the bits above 51 cleared as in
// sev-snp-measure.
const VMSAGPA = 0xFFFFFFFFF000

// PageType is the PAGE_TYPE of a SNP_LAUNCH_UPDATE page.
type PageType uint8

// Page types of the SEV-SNP firmware ABI.
const (
	PageNormal     PageType = 1
	PageVMSA       PageType = 2
	PageZero       PageType = 3
	PageUnmeasured PageType = 4
	PageSecrets    PageType = 5
	PageCPUID      PageType = 6
)

// String returns the firmware ABI name of t.
func (t PageType) String() string {
	switch t {
	case PageNormal:
		return "NORMAL"
	case PageVMSA:
		return "VMSA"
	case PageZero:
		return "ZERO"
	case PageUnmeasured:
		return "UNMEASURED"
	case PageSecrets:
		return "SECRETS"
	case PageCPUID:
		return "CPUID"
	}
	return "PageType(" + strconv.Itoa(int(t)) + ")"
}

// pageInfoSize is the length of the PAGE_INFO record (LENGTH field).
const pageInfoSize = 0x70

// Digest is a running SEV-SNP launch digest. The zero value is not usable;
// call NewDigest. A Digest is not safe for concurrent use.
type Digest struct {
	ld   [48]byte
	h    hash.Hash // reused SHA-384 state
	info [pageInfoSize]byte
}

// NewDigest returns a launch digest at its initial value, 48 zero bytes.
func NewDigest() *Digest {
	return &Digest{h: sha512.New384()}
}

// Update chains one page into the digest. For PageNormal and PageVMSA the
// CONTENTS field is SHA-384 of contents, which callers pass as one 4 KiB
// page; for every other type CONTENTS is 48 zero bytes and contents is
// ignored (pass nil).
func (d *Digest) Update(t PageType, gpa uint64, contents []byte) {
	var c [48]byte
	if t == PageNormal || t == PageVMSA {
		d.h.Reset()
		d.h.Write(contents)
		d.h.Sum(c[:0])
	}
	d.updateHashed(t, gpa, &c)
}

// updateHashed chains a PAGE_INFO whose CONTENTS digest is already known.
func (d *Digest) updateHashed(t PageType, gpa uint64, contents *[48]byte) {
	p := &d.info
	copy(p[0x00:0x30], d.ld[:])
	copy(p[0x30:0x60], contents[:])
	binary.LittleEndian.PutUint16(p[0x60:], pageInfoSize)
	p[0x62] = byte(t)
	clear(p[0x63:0x68]) // IMI_PAGE, VMPL3/2/1 permissions, reserved
	binary.LittleEndian.PutUint64(p[0x68:], gpa)
	d.h.Reset()
	d.h.Write(p[:])
	d.h.Sum(d.ld[:0])
}

// Sum returns the current launch digest.
func (d *Digest) Sum() [48]byte { return d.ld }

// updatePages chains data as consecutive NORMAL pages starting at gpa.
// len(data) must be a multiple of PageSize.
func (d *Digest) updatePages(t PageType, gpa uint64, data []byte) {
	for off := 0; off < len(data); off += PageSize {
		d.Update(t, gpa+uint64(off), data[off:off+PageSize])
	}
}

// updateEmptyPages chains size/PageSize pages of type t (whose contents
// do not enter the digest) starting at gpa.
func (d *Digest) updateEmptyPages(t PageType, gpa, size uint64) {
	for off := uint64(0); off < size; off += PageSize {
		d.Update(t, gpa+off, nil)
	}
}

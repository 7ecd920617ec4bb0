package snpmeasure

import (
	"bytes"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDigestPageInfo checks one PAGE_INFO record built byte by byte, and
// digests computed independently with Python's hashlib.
func TestDigestPageInfo(t *testing.T) {
	page := bytes.Repeat([]byte{0xAA}, PageSize)
	pageSum := sha512.Sum384(page)
	// LD_0 (48 zero bytes) | SHA-384(page) | LENGTH 0x0070 | NORMAL | IMI, VMPL perms, reserved | GPA 0x1000
	rec := append(make([]byte, 48), pageSum[:]...)
	rec = append(rec, 0x70, 0x00, 0x01, 0, 0, 0, 0, 0)
	rec = append(rec, 0x00, 0x10, 0, 0, 0, 0, 0, 0)
	if len(rec) != 0x70 {
		t.Fatalf("record is %d bytes", len(rec))
	}
	tests := []struct {
		name     string
		typ      PageType
		gpa      uint64
		contents []byte
		want     []byte
	}{
		{"normal", PageNormal, 0x1000, page, mustHex(t, "83f2b12dec4ffc7a903475c06f60c3a229e45e61ad87e4f775f0cc95cea53ade2911f84e1205ddfa14df9bf20bf3f0c3")},
		// ZERO pages chain 48 zero CONTENTS bytes, not SHA-384 of a zero page.
		{"zero", PageZero, 0x800000, nil, mustHex(t, "4472405c6dbc65e5629805f2be1b3df74eb119841eff12466c24f43e67083c23df5e645b2742b6d9aa0f943e095cebaa")},
		{"zero ignores contents", PageZero, 0x800000, page, mustHex(t, "4472405c6dbc65e5629805f2be1b3df74eb119841eff12466c24f43e67083c23df5e645b2742b6d9aa0f943e095cebaa")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := NewDigest()
			d.Update(tt.typ, tt.gpa, tt.contents)
			if got := d.Sum(); !bytes.Equal(got[:], tt.want) {
				t.Errorf("Update(%v, %#x) = %x, want %x", tt.typ, tt.gpa, got, tt.want)
			}
		})
	}
	d := NewDigest()
	d.Update(PageNormal, 0x1000, page)
	if got, want := d.Sum(), sha512.Sum384(rec); got != want {
		t.Errorf("NORMAL page digest = %x, want SHA-384 of the hand-built record %x", got, want)
	}
	if got := NewDigest().Sum(); got != [48]byte{} {
		t.Errorf("initial digest = %x, want zeros", got)
	}
}

// TestHashesTableEmpty checks the table for an empty kernel, no initrd and
// no cmdline against bytes written out by hand.
func TestHashesTableEmpty(t *testing.T) {
	const (
		sha256Empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
		sha256NUL   = "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
	)
	want := mustHex(t, ""+
		"06d63894224fc94cb479a793d411fd21"+"a800"+ // table GUID, length 168
		"d82dd09720bd944caa78e7714d36ab2a"+"3200"+sha256NUL+ // cmdline: SHA-256 of one NUL
		"31f7ba442f3ad74b9af141e29169781d"+"3200"+sha256Empty+ // initrd: none
		"3794e74dd2ab7f42b835d5b172d2045b"+"3200"+sha256Empty+ // kernel: empty file
		"0000000000000000") // padding to 176
	got := HashesTable(nil, nil, "")
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("HashesTable(nil, nil, \"\") mismatch (-want +got):\n%s", diff)
	}
}

func TestVMSA(t *testing.T) {
	le := binary.LittleEndian
	qemu, err := VMSA(VMMQEMU, 0x800F12, 0x1, true, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Hand-checked fields of the QEMU boot processor.
	checks := []struct {
		name string
		off  int
		size int
		want uint64
	}{
		{"es.attrib", 0x002, 2, 0x93},
		{"es.limit", 0x004, 4, 0xFFFF},
		{"cs.selector", 0x010, 2, 0xF000},
		{"cs.attrib", 0x012, 2, 0x9B},
		{"cs.base", 0x018, 8, 0xFFFF0000},
		{"ldtr.attrib", 0x072, 2, 0x82},
		{"tr.attrib", 0x092, 2, 0x8B},
		{"efer", 0x0D0, 8, 0x1000},
		{"cr4", 0x148, 8, 0x40},
		{"cr0", 0x158, 8, 0x10},
		{"dr6", 0x168, 8, 0xFFFF0FF0},
		{"rip", 0x178, 8, 0xFFF0},
		{"g_pat", 0x268, 8, 0x0007040600070406},
		{"rdx", 0x310, 8, 0x800F12},
		{"sev_features", 0x3B0, 8, 0x1},
		{"xcr0", 0x3E8, 8, 0x1},
		{"mxcsr", 0x408, 4, 0x1F80},
		{"x87_fcw", 0x410, 2, 0x37F},
	}
	for _, c := range checks {
		var got uint64
		switch c.size {
		case 2:
			got = uint64(le.Uint16(qemu[c.off:]))
		case 4:
			got = uint64(le.Uint32(qemu[c.off:]))
		case 8:
			got = le.Uint64(qemu[c.off:])
		}
		if got != c.want {
			t.Errorf("QEMU BSP VMSA %s@%#x = %#x, want %#x", c.name, c.off, got, c.want)
		}
	}
	// The whole page against sev-snp-measure's vmsa0.bin (vector intermediate).
	if got, want := sha512.Sum384(qemu[:]), mustHex(t, "77920c4c629ff47e90c0e174fc1ad0eb6fa664f88cd4739488058a8c6cb1a77b3856f55378e9518d0da99452d51c553a"); !bytes.Equal(got[:], want) {
		t.Errorf("QEMU BSP VMSA SHA-384 = %x, want %x", got, want)
	}

	ap, err := VMSA(VMMQEMU, 0x800F12, 0x1, false, 0x0080B004)
	if err != nil {
		t.Fatal(err)
	}
	if got := le.Uint64(ap[0x018:]); got != 0x00800000 {
		t.Errorf("AP cs.base = %#x, want 0x800000", got)
	}
	if got := le.Uint64(ap[0x178:]); got != 0xB004 {
		t.Errorf("AP rip = %#x, want 0xb004", got)
	}
	if _, err := VMSA(VMMQEMU, 0x800F12, 0x1, false, 0); !errors.Is(err, ErrInvalidFirmware) {
		t.Errorf("AP VMSA without reset EIP: err = %v, want ErrInvalidFirmware", err)
	}
	if _, err := VMSA(VMMType(9), 0, 0, true, 0); err == nil {
		t.Error("VMSA with unknown VMM type succeeded")
	}

	// EC2 differs from QEMU only in these fields.
	ec2, err := VMSA(VMMEC2, 0x800F12, 0x1, true, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := qemu
	le.PutUint16(want[0x012:], 0x9A) // cs.attrib (BSP)
	le.PutUint16(want[0x022:], 0x92) // ss.attrib
	le.PutUint16(want[0x092:], 0x83) // tr.attrib
	le.PutUint64(want[0x310:], 0x600)
	le.PutUint32(want[0x408:], 0)
	le.PutUint16(want[0x410:], 0)
	if ec2 != want {
		t.Error("EC2 BSP VMSA differs from QEMU's in unexpected fields")
	}
	ec2AP, err := VMSA(VMMEC2, 0x800F12, 0x1, false, 0x0080B004)
	if err != nil {
		t.Fatal(err)
	}
	if got := le.Uint16(ec2AP[0x012:]); got != 0x9B {
		t.Errorf("EC2 AP cs.attrib = %#x, want 0x9b", got)
	}
}

func TestVCPUSig(t *testing.T) {
	tests := []struct {
		name string
		want uint32
	}{
		{"EPYC", 0x800F12},
		{"epyc-v4", 0x800F12},
		{"EPYC-V1", 0x800F12},
		{"EPYC-IBPB", 0x800F12},
		{"EPYC-Rome", 0x830F10},
		{"epyc-rome-v3", 0x830F10},
		{"EPYC-Milan", 0xA00F11},
		{"EPYC-Milan-v2", 0xA00F11},
		{"EPYC-Genoa", 0xA10F10},
		{"epyc-genoa-v1", 0xA10F10},
		{"EPYC-Turin", 0xB00F00},
	}
	for _, tt := range tests {
		got, err := VCPUSig(tt.name)
		if err != nil || got != tt.want {
			t.Errorf("VCPUSig(%q) = %#x, %v, want %#x", tt.name, got, err, tt.want)
		}
	}
	_, err := VCPUSig("Skylake")
	if err == nil || !strings.Contains(err.Error(), "epyc-milan") {
		t.Errorf("VCPUSig(Skylake) error = %v, want one listing the known names", err)
	}
}

func TestParseVMMType(t *testing.T) {
	tests := []struct {
		in   string
		want VMMType
		ok   bool
	}{
		{"qemu", VMMQEMU, true},
		{"QEMU", VMMQEMU, true},
		{"Ec2", VMMEC2, true},
		{"gce", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseVMMType(tt.in)
		if got != tt.want || (err == nil) != tt.ok {
			t.Errorf("ParseVMMType(%q) = %v, %v, want %v (ok %v)", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestGUID(t *testing.T) {
	const s = "96b582de-1fb2-45f7-baea-a366c55a082d"
	g, err := ParseGUID(s)
	if err != nil {
		t.Fatal(err)
	}
	if want := mustHex(t, "de82b596b21ff745baeaa366c55a082d"); !bytes.Equal(g[:], want) {
		t.Errorf("ParseGUID(%s) bytes = %x, want %x (EFI layout)", s, g[:], want)
	}
	if g.String() != s {
		t.Errorf("String() = %s, want %s", g, s)
	}
	for _, bad := range []string{"", "96b582de-1fb2-45f7-baea-a366c55a082", "96b582de+1fb2-45f7-baea-a366c55a082d", "96b582de-1fb2-45f7-baea-a366c55a08zz"} {
		if _, err := ParseGUID(bad); err == nil {
			t.Errorf("ParseGUID(%q) succeeded", bad)
		}
	}
}

// footerEntry is one entry of a synthetic OVMF footer table.
type footerEntry struct {
	g    GUID
	data []byte
}

// synthImage builds a 4 KiB image whose footer table holds entries (the first
// farthest from the footer) and whose bytes at 0x100 are md.
func synthImage(md []byte, entries ...footerEntry) []byte {
	img := make([]byte, PageSize)
	copy(img[0x100:], md)
	var table []byte
	for _, e := range entries {
		table = append(table, e.data...)
		table = binary.LittleEndian.AppendUint16(table, uint16(len(e.data)+footerEntrySize))
		table = append(table, e.g[:]...)
	}
	table = binary.LittleEndian.AppendUint16(table, uint16(len(table)+footerEntrySize))
	table = append(table, GUIDFooterTable[:]...)
	copy(img[PageSize-resetVectorSize-len(table):], table)
	return img
}

// sevMetadata builds an "ASEV" table.
func sevMetadata(version uint32, secs ...MetadataSection) []byte {
	b := []byte("ASEV")
	b = binary.LittleEndian.AppendUint32(b, uint32(metadataHdrSize+metadataDescSize*len(secs)))
	b = binary.LittleEndian.AppendUint32(b, version)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(secs)))
	for _, s := range secs {
		b = binary.LittleEndian.AppendUint32(b, s.GPA)
		b = binary.LittleEndian.AppendUint32(b, s.Size)
		b = binary.LittleEndian.AppendUint32(b, s.Type)
	}
	return b
}

func u32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

var mdEntry = footerEntry{GUIDSEVMetadata, u32(PageSize - 0x100)}

func TestParseSEVMetadataSynthetic(t *testing.T) {
	secs := []MetadataSection{{0x800000, 0x9000, SectionSNPSecMem}, {0x809000, 0x1000, SectionSNPSecrets}}
	got, err := ParseSEVMetadata(synthImage(sevMetadata(1, secs...), mdEntry))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(secs, got); diff != "" {
		t.Errorf("ParseSEVMetadata mismatch (-want +got):\n%s", diff)
	}
}

func fixture(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile("../../testdata/measure/inputs/ovmf_AmdSev_suffix.bin")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestLaunchDigestErrors checks that malformed firmware fails with the right
// sentinel and never panics.
func TestLaunchDigestErrors(t *testing.T) {
	fx := fixture(t)
	corrupt := func(off int, b ...byte) []byte {
		c := bytes.Clone(fx)
		if off < 0 {
			off += len(c)
		}
		copy(c[off:], b)
		return c
	}
	entries, err := ParseFooterTable(fx)
	if err != nil {
		t.Fatal(err)
	}
	mdOff := len(fx) - int(binary.LittleEndian.Uint32(entries[GUIDSEVMetadata]))
	base := Options{VCPUs: 1, VCPUSig: 0x800F12, GuestFeatures: 1, VMM: VMMQEMU}
	tests := []struct {
		name string
		fw   []byte
		want error
	}{
		{"empty", nil, ErrInvalidFirmware},
		{"not page multiple", fx[1:], ErrInvalidFirmware},
		{"zeros", make([]byte, PageSize), ErrInvalidFirmware},
		{"garbage", bytes.Repeat([]byte{0xFF}, PageSize), ErrInvalidFirmware},
		{"footer size too large", corrupt(-resetVectorSize-footerEntrySize, 0xFF, 0xFF), ErrInvalidFirmware},
		{"footer size too small", corrupt(-resetVectorSize-footerEntrySize, 0x01, 0x00), ErrInvalidFirmware},
		{"bad ASEV signature", corrupt(mdOff, 'X'), ErrInvalidFirmware},
		{"metadata version 2", corrupt(mdOff+8, 2), ErrInvalidFirmware},
		{"metadata count huge", corrupt(mdOff+12, 0xFF, 0xFF, 0xFF, 0xFF), ErrInvalidFirmware},
		{"no footer entries", synthImage(nil), ErrNoSEVMetadata},
		{"metadata offset beyond image", synthImage(nil, footerEntry{GUIDSEVMetadata, u32(0x10000)}), ErrInvalidFirmware},
		{"metadata entry short", synthImage(nil, footerEntry{GUIDSEVMetadata, []byte{1}}), ErrInvalidFirmware},
		{"unknown section type", synthImage(sevMetadata(1, MetadataSection{0x800000, 0x1000, 7}), mdEntry), ErrInvalidFirmware},
		{"unaligned section", synthImage(sevMetadata(1, MetadataSection{0x800010, 0x1000, SectionSNPSecMem}), mdEntry), ErrInvalidFirmware},
		{"section past 4 GiB", synthImage(sevMetadata(1, MetadataSection{0xFFFFF000, 0x2000, SectionSNPSecMem}), mdEntry), ErrInvalidFirmware},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := base
			o.Firmware = tt.fw
			if _, err := LaunchDigest(o); !errors.Is(err, tt.want) {
				t.Errorf("LaunchDigest err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestLaunchDigestOptionErrors(t *testing.T) {
	fx := fixture(t)
	tests := []struct {
		name string
		o    Options
		want error // nil: any error
	}{
		{"no vCPUs", Options{Firmware: fx, VMM: VMMQEMU}, nil},
		{"no VMM", Options{Firmware: fx, VCPUs: 1}, nil},
		{"firmware above end", Options{Firmware: fx, VCPUs: 1, VMM: VMMQEMU, FirmwareEnd: 0x800}, ErrInvalidFirmware},
		{"APs without reset block", Options{Firmware: synthImage(sevMetadata(1), mdEntry), VCPUs: 2, VMM: VMMQEMU}, ErrInvalidFirmware},
		{"kernel, no hashes section", Options{Firmware: synthImage(sevMetadata(1), mdEntry), VCPUs: 1, VMM: VMMQEMU, HasKernel: true}, ErrNoHashesTable},
		{"kernel, zero table address", Options{Firmware: synthImage(sevMetadata(1, MetadataSection{0x810000, 0x1000, SectionSNPKernelHashes}), mdEntry), VCPUs: 1, VMM: VMMQEMU, HasKernel: true}, ErrNoHashesTable},
		{"kernel, table outside section", Options{Firmware: synthImage(sevMetadata(1, MetadataSection{0x810000, 0x1000, SectionSNPKernelHashes}), mdEntry,
			footerEntry{GUIDSEVHashTable, append(u32(0x820000), u32(0x400)...)}), VCPUs: 1, VMM: VMMQEMU, HasKernel: true}, ErrInvalidFirmware},
		{"kernel, table crosses page", Options{Firmware: synthImage(sevMetadata(1, MetadataSection{0x810000, 0x1000, SectionSNPKernelHashes}), mdEntry,
			footerEntry{GUIDSEVHashTable, append(u32(0x810F80), u32(0x400)...)}), VCPUs: 1, VMM: VMMQEMU, HasKernel: true}, ErrInvalidFirmware},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LaunchDigest(tt.o)
			if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Errorf("LaunchDigest err = %v, want %v", err, tt.want)
			}
		})
	}
}

// TestLaunchDigestOrder rebuilds the fixture's digest page by page, to pin
// the section order: kernel-hashes page, EC2's CPUID page last, APs.
func TestLaunchDigestOrder(t *testing.T) {
	fx := fixture(t)
	secs, err := ParseSEVMetadata(fx)
	if err != nil {
		t.Fatal(err)
	}
	for _, vmm := range []VMMType{VMMQEMU, VMMEC2} {
		for _, kernel := range []bool{false, true} {
			o := Options{Firmware: fx, VCPUs: 3, VCPUSig: 0xA00F11, GuestFeatures: 0x21, VMM: vmm, HasKernel: kernel, Kernel: []byte("k"), Cmdline: "c"}
			if !kernel {
				o.Kernel, o.Cmdline = nil, ""
			}
			d := NewDigest()
			d.Update(PageNormal, 0xFFFFF000, fx)
			var cpuid uint64
			for _, s := range secs {
				switch s.Type {
				case SectionSNPSecMem, SectionSVSMCAA:
					for off := uint32(0); off < s.Size; off += PageSize {
						d.Update(PageZero, uint64(s.GPA+off), nil)
					}
				case SectionSNPSecrets:
					d.Update(PageSecrets, uint64(s.GPA), nil)
				case SectionCPUID:
					cpuid = uint64(s.GPA)
					if vmm == VMMQEMU {
						d.Update(PageCPUID, cpuid, nil)
					}
				case SectionSNPKernelHashes:
					if kernel {
						page := make([]byte, PageSize)
						copy(page[0xC00:], HashesTable([]byte("k"), nil, "c"))
						d.Update(PageNormal, uint64(s.GPA), page)
					} else {
						d.Update(PageZero, uint64(s.GPA), nil)
					}
				}
			}
			if vmm == VMMEC2 {
				d.Update(PageCPUID, cpuid, nil)
			}
			for i := range 3 {
				v, err := VMSA(vmm, 0xA00F11, 0x21, i == 0, 0x0080B004)
				if err != nil {
					t.Fatal(err)
				}
				d.Update(PageVMSA, VMSAGPA, v[:])
			}
			got, err := LaunchDigest(o)
			if err != nil {
				t.Fatal(err)
			}
			if want := d.Sum(); got != want {
				t.Errorf("%v kernel=%v: LaunchDigest = %x, want %x", vmm, kernel, got, want)
			}
		}
	}
}

func TestPageTypeString(t *testing.T) {
	for typ, want := range map[PageType]string{PageNormal: "NORMAL", PageVMSA: "VMSA", PageZero: "ZERO", PageUnmeasured: "UNMEASURED", PageSecrets: "SECRETS", PageCPUID: "CPUID", 9: "PageType(9)"} {
		if got := typ.String(); got != want {
			t.Errorf("PageType(%d).String() = %q, want %q", uint8(typ), got, want)
		}
	}
}

package snpmeasure

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
)

// Sentinel errors. LaunchDigest and the parsers wrap them with detail;
// branch on them with errors.Is.
var (
	// ErrInvalidFirmware means the firmware image or one of its OVMF tables
	// is malformed or truncated.
	ErrInvalidFirmware = errors.New("invalid firmware image")
	// ErrNoSEVMetadata means the firmware has an OVMF footer table but no
	// SEV metadata, so it cannot launch an SEV-SNP guest.
	ErrNoSEVMetadata = errors.New("firmware has no SEV metadata")
	// ErrNoHashesTable means a kernel was given but the firmware reserves no
	// SEV hashes table (it is not an OVMF AmdSevX64 build), so the launch
	// digest could not cover the kernel, initrd and command line.
	ErrNoHashesTable = errors.New("firmware has no SEV hashes table")
)

// GUID is an EFI GUID in its in-memory (mixed-endian) byte order: the first
// three fields little-endian, the last eight bytes as written.
type GUID [16]byte

// String returns the canonical textual form, e.g.
// "96b582de-1fb2-45f7-baea-a366c55a082d".
func (g GUID) String() string {
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x",
		binary.LittleEndian.Uint32(g[0:4]),
		binary.LittleEndian.Uint16(g[4:6]),
		binary.LittleEndian.Uint16(g[6:8]),
		g[8:10], g[10:16])
}

// ParseGUID parses the canonical textual form of a GUID.
func ParseGUID(s string) (GUID, error) {
	var g GUID
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return g, fmt.Errorf("snpmeasure: malformed GUID %q", s)
	}
	b, err := hex.DecodeString(s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:36])
	if err != nil {
		return g, fmt.Errorf("snpmeasure: malformed GUID %q: %w", s, err)
	}
	binary.LittleEndian.PutUint32(g[0:4], binary.BigEndian.Uint32(b[0:4]))
	binary.LittleEndian.PutUint16(g[4:6], binary.BigEndian.Uint16(b[4:6]))
	binary.LittleEndian.PutUint16(g[6:8], binary.BigEndian.Uint16(b[6:8]))
	copy(g[8:], b[8:])
	return g, nil
}

func mustGUID(s string) GUID {
	g, err := ParseGUID(s)
	if err != nil {
		panic(err)
	}
	return g
}

// GUIDs of the OVMF footer table entries this package reads.
var (
	GUIDFooterTable     = mustGUID("96b582de-1fb2-45f7-baea-a366c55a082d")
	GUIDSEVESResetBlock = mustGUID("00f771de-1a7e-4fcb-890e-68c77e2fb44e")
	GUIDSEVMetadata     = mustGUID("dc886566-984a-4798-a75e-5585a7bf67cc")
	GUIDSEVHashTable    = mustGUID("7255371f-3a3b-4b04-927b-1da6efa8d454")
)

const (
	resetVectorSize  = 32 // bytes at the end of the image after the footer table
	footerEntrySize  = 2 + 16
	metadataHdrSize  = 16 // "ASEV", size, version, count
	metadataDescSize = 12 // gpa, size, type
)

// ParseFooterTable parses the OVMF footer GUID table that sits just before
// the 32-byte reset vector at the end of fw, and returns each entry's data
// by GUID. If a GUID appears twice, the entry nearest the table start wins.
func ParseFooterTable(fw []byte) (map[GUID][]byte, error) {
	if len(fw) < resetVectorSize+footerEntrySize {
		return nil, fmt.Errorf("snpmeasure: %d-byte image is too small for an OVMF footer table: %w", len(fw), ErrInvalidFirmware)
	}
	end := len(fw) - resetVectorSize // end of the footer entry
	start := end - footerEntrySize
	if GUID(fw[start+2:end]) != GUIDFooterTable {
		return nil, fmt.Errorf("snpmeasure: no OVMF footer table GUID %v before the reset vector (not an OVMF image?): %w", GUIDFooterTable, ErrInvalidFirmware)
	}
	total := int(binary.LittleEndian.Uint16(fw[start:]))
	if total < footerEntrySize || total-footerEntrySize > start {
		return nil, fmt.Errorf("snpmeasure: OVMF footer table size %d out of range: %w", total, ErrInvalidFirmware)
	}
	table := fw[start-(total-footerEntrySize) : start]
	entries := make(map[GUID][]byte)
	for len(table) > 0 {
		if len(table) < footerEntrySize {
			return nil, fmt.Errorf("snpmeasure: %d trailing bytes in OVMF footer table: %w", len(table), ErrInvalidFirmware)
		}
		h := len(table) - footerEntrySize
		g := GUID(table[h+2:])
		n := int(binary.LittleEndian.Uint16(table[h:]))
		if n < footerEntrySize || n > len(table) {
			return nil, fmt.Errorf("snpmeasure: OVMF footer entry %v has size %d, %d bytes left: %w", g, n, len(table), ErrInvalidFirmware)
		}
		entries[g] = table[len(table)-n : h : h]
		table = table[:len(table)-n]
	}
	return entries, nil
}

// SEV metadata section types (edk2 OvmfSevMetadata.asm).
const (
	SectionSNPSecMem       uint32 = 1
	SectionSNPSecrets      uint32 = 2
	SectionCPUID           uint32 = 3
	SectionSVSMCAA         uint32 = 4
	SectionSNPKernelHashes uint32 = 0x10
)

// MetadataSection is one entry of the OVMF SEV metadata.
type MetadataSection struct {
	GPA, Size uint32
	Type      uint32
}

// ParseSEVMetadata returns the sections of the OVMF SEV metadata of fw, in
// table order. It fails with ErrNoSEVMetadata when the footer table has no
// SEV metadata entry and with ErrInvalidFirmware when a table is malformed.
// Section types are not checked here; LaunchDigest rejects unknown ones.
func ParseSEVMetadata(fw []byte) ([]MetadataSection, error) {
	entries, err := ParseFooterTable(fw)
	if err != nil {
		return nil, err
	}
	return parseSEVMetadata(fw, entries)
}

func parseSEVMetadata(fw []byte, entries map[GUID][]byte) ([]MetadataSection, error) {
	e, ok := entries[GUIDSEVMetadata]
	if !ok {
		return nil, fmt.Errorf("snpmeasure: OVMF footer table has no SEV metadata entry %v (firmware not built for SEV): %w", GUIDSEVMetadata, ErrNoSEVMetadata)
	}
	if len(e) < 4 {
		return nil, fmt.Errorf("snpmeasure: SEV metadata entry is %d bytes, want 4: %w", len(e), ErrInvalidFirmware)
	}
	back := uint64(binary.LittleEndian.Uint32(e))
	if back < metadataHdrSize || back > uint64(len(fw)) {
		return nil, fmt.Errorf("snpmeasure: SEV metadata offset %#x from the end of a %#x-byte image: %w", back, len(fw), ErrInvalidFirmware)
	}
	md := fw[uint64(len(fw))-back:]
	if string(md[0:4]) != "ASEV" {
		return nil, fmt.Errorf("snpmeasure: SEV metadata signature %q, want \"ASEV\": %w", md[0:4], ErrInvalidFirmware)
	}
	size := uint64(binary.LittleEndian.Uint32(md[4:]))
	version := binary.LittleEndian.Uint32(md[8:])
	count := uint64(binary.LittleEndian.Uint32(md[12:]))
	if version != 1 {
		return nil, fmt.Errorf("snpmeasure: SEV metadata version %d, want 1: %w", version, ErrInvalidFirmware)
	}
	need := metadataHdrSize + metadataDescSize*count
	if size < need || size > uint64(len(md)) {
		return nil, fmt.Errorf("snpmeasure: SEV metadata size %#x for %d sections (%#x bytes left in image): %w", size, count, len(md), ErrInvalidFirmware)
	}
	secs := make([]MetadataSection, count)
	for i := range secs {
		d := md[metadataHdrSize+metadataDescSize*i:]
		secs[i] = MetadataSection{
			GPA:  binary.LittleEndian.Uint32(d[0:]),
			Size: binary.LittleEndian.Uint32(d[4:]),
			Type: binary.LittleEndian.Uint32(d[8:]),
		}
	}
	return secs, nil
}

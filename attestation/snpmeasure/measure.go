package snpmeasure

import (
	"encoding/binary"
	"fmt"
)

// DefaultFirmwareEnd is the guest physical address the firmware image ends
// at: QEMU maps -bios images just below 4 GiB.
const DefaultFirmwareEnd = 0x1_0000_0000

// Options describe one SEV-SNP launch.
type Options struct {
	// Firmware is the whole firmware image the VMM maps (for QEMU SNP, the
	// unified OVMF.fd given with -bios).
	Firmware []byte
	// FirmwareEnd is the GPA just past the image; 0 means
	// DefaultFirmwareEnd.
	FirmwareEnd uint64
	// VCPUs is the number of vCPUs, at least 1.
	VCPUs int
	// VCPUSig is the guest's CPUID(1).EAX (see VCPUSig).
	VCPUSig uint32
	// GuestFeatures is SEV_FEATURES exactly as passed to KVM (0x1 is
	// SNPActive only).
	GuestFeatures uint64
	// VMM is the VMM that launches the guest.
	VMM VMMType
	// Kernel and Initrd are the direct-boot files, measured through the SEV
	// hashes table; only OVMF AmdSevX64 builds support this. Initrd may be
	// empty.
	Kernel, Initrd []byte
	// Cmdline is the kernel command line, without the NUL terminator.
	Cmdline string
	// HasKernel is true when a kernel is given, even an empty one with an
	// empty command line. A non-empty Kernel implies it.
	HasKernel bool
}

// LaunchDigest returns the SEV-SNP launch digest (report MEASUREMENT) that
// the launch described by o produces.
func LaunchDigest(o Options) ([48]byte, error) {
	var zero [48]byte
	fw := o.Firmware
	end := o.FirmwareEnd
	if end == 0 {
		end = DefaultFirmwareEnd
	}
	switch {
	case len(fw) == 0 || len(fw)%PageSize != 0:
		return zero, fmt.Errorf("snpmeasure: firmware size %#x is not a positive multiple of 4 KiB: %w", len(fw), ErrInvalidFirmware)
	case end%PageSize != 0 || uint64(len(fw)) > end:
		return zero, fmt.Errorf("snpmeasure: firmware of %#x bytes cannot end at GPA %#x: %w", len(fw), end, ErrInvalidFirmware)
	case o.VCPUs < 1:
		return zero, fmt.Errorf("snpmeasure: %d vCPUs, need at least 1", o.VCPUs)
	case o.VMM != VMMQEMU && o.VMM != VMMEC2:
		return zero, fmt.Errorf("snpmeasure: unknown VMM type %v", o.VMM)
	}
	entries, err := ParseFooterTable(fw)
	if err != nil {
		return zero, err
	}
	secs, err := parseSEVMetadata(fw, entries)
	if err != nil {
		return zero, err
	}
	if err := checkSections(secs); err != nil {
		return zero, err
	}
	var apEIP uint32
	if o.VCPUs > 1 {
		e := entries[GUIDSEVESResetBlock]
		if len(e) < 4 || binary.LittleEndian.Uint32(e) == 0 {
			return zero, fmt.Errorf("snpmeasure: %d vCPUs, but the firmware has no SEV-ES reset block giving the AP start address: %w", o.VCPUs, ErrInvalidFirmware)
		}
		apEIP = binary.LittleEndian.Uint32(e)
	}
	var hashesPage []byte
	if o.HasKernel || len(o.Kernel) > 0 {
		hashesPage, err = kernelHashesPage(entries, secs, o)
		if err != nil {
			return zero, err
		}
	}

	d := NewDigest()
	d.updatePages(PageNormal, end-uint64(len(fw)), fw)
	for _, s := range secs {
		gpa, size := uint64(s.GPA), uint64(s.Size)
		switch s.Type {
		case SectionSNPSecMem, SectionSVSMCAA:
			d.updateEmptyPages(PageZero, gpa, size)
		case SectionSNPSecrets:
			d.Update(PageSecrets, gpa, nil)
		case SectionCPUID:
			if o.VMM != VMMEC2 {
				d.Update(PageCPUID, gpa, nil)
			}
		case SectionSNPKernelHashes:
			if hashesPage != nil {
				d.Update(PageNormal, gpa, hashesPage)
			} else {
				d.updateEmptyPages(PageZero, gpa, size)
			}
		}
	}
	if o.VMM == VMMEC2 {
		for _, s := range secs {
			if s.Type == SectionCPUID {
				d.Update(PageCPUID, uint64(s.GPA), nil)
			}
		}
	}
	for i := range o.VCPUs {
		v, err := VMSA(o.VMM, o.VCPUSig, o.GuestFeatures, i == 0, apEIP)
		if err != nil {
			return zero, err
		}
		d.Update(PageVMSA, VMSAGPA, v[:])
	}
	return d.Sum(), nil
}

// checkSections rejects unknown section types and sections that are not
// whole pages. Secrets and CPUID sections are measured as a single page, as
// QEMU and sev-snp-measure do.
func checkSections(secs []MetadataSection) error {
	for i, s := range secs {
		switch s.Type {
		case SectionSNPSecMem, SectionSNPSecrets, SectionCPUID, SectionSVSMCAA, SectionSNPKernelHashes:
		default:
			return fmt.Errorf("snpmeasure: SEV metadata section %d has unknown type %#x: %w", i, s.Type, ErrInvalidFirmware)
		}
		if s.GPA%PageSize != 0 || s.Size%PageSize != 0 || s.Size == 0 {
			return fmt.Errorf("snpmeasure: SEV metadata section %d (type %#x) at GPA %#x, size %#x is not page-aligned: %w", i, s.Type, s.GPA, s.Size, ErrInvalidFirmware)
		}
		if uint64(s.GPA)+uint64(s.Size) > DefaultFirmwareEnd {
			return fmt.Errorf("snpmeasure: SEV metadata section %d at GPA %#x, size %#x crosses 4 GiB: %w", i, s.GPA, s.Size, ErrInvalidFirmware)
		}
	}
	return nil
}

// kernelHashesPage builds the 4 KiB SNP_KERNEL_HASHES page holding the SEV
// hashes table, after checking that the firmware reserves one.
func kernelHashesPage(entries map[GUID][]byte, secs []MetadataSection, o Options) ([]byte, error) {
	var sec *MetadataSection
	for i := range secs {
		if secs[i].Type == SectionSNPKernelHashes {
			sec = &secs[i]
			break
		}
	}
	rv := entries[GUIDSEVHashTable]
	var base, size uint32
	if len(rv) >= 8 {
		base, size = binary.LittleEndian.Uint32(rv), binary.LittleEndian.Uint32(rv[4:])
	}
	switch {
	case sec == nil && base == 0:
		return nil, fmt.Errorf("snpmeasure: a kernel was given, but the firmware's SEV metadata has no SNP_KERNEL_HASHES section and its SEV hashes table address is zero, so the launch measurement could not cover the kernel, initrd and command line; use an OVMF AmdSevX64 build or boot without a kernel: %w", ErrNoHashesTable)
	case sec == nil:
		return nil, fmt.Errorf("snpmeasure: a kernel was given, but the firmware's SEV metadata has no SNP_KERNEL_HASHES section, so the launch measurement could not cover the kernel; use an OVMF AmdSevX64 build or boot without a kernel: %w", ErrNoHashesTable)
	case base == 0:
		return nil, fmt.Errorf("snpmeasure: a kernel was given, but the firmware has no SEV hashes table address (footer GUID %v missing or zero); use an OVMF AmdSevX64 build or boot without a kernel: %w", GUIDSEVHashTable, ErrNoHashesTable)
	}
	off := base % PageSize
	switch {
	case sec.Size != PageSize:
		return nil, fmt.Errorf("snpmeasure: SNP_KERNEL_HASHES section is %#x bytes, want one page: %w", sec.Size, ErrInvalidFirmware)
	case base-off != sec.GPA:
		return nil, fmt.Errorf("snpmeasure: SEV hashes table at %#x lies outside the SNP_KERNEL_HASHES page %#x: %w", base, sec.GPA, ErrInvalidFirmware)
	case size < HashesTableSize || off+HashesTableSize > PageSize:
		return nil, fmt.Errorf("snpmeasure: SEV hashes table area at %#x, size %#x cannot hold %d bytes within its page: %w", base, size, HashesTableSize, ErrInvalidFirmware)
	}
	page := make([]byte, PageSize)
	copy(page[off:], HashesTable(o.Kernel, o.Initrd, o.Cmdline))
	return page, nil
}

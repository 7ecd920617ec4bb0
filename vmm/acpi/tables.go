package acpi

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
)

// ErrInvalidConfig is wrapped by every error [Build] returns for a Config it
// cannot describe.
var ErrInvalidConfig = errors.New("acpi: invalid config")

// Addresses and values of the platform the tables describe.
const (
	// RSDPAddr is where [Build] places the RSDP: in the BIOS area the
	// kernel scans, and the value for boot_params.acpi_rsdp_addr.
	RSDPAddr = 0x000e0000
	// DefaultIOAPICAddr and DefaultLAPICAddr are the x86 defaults, used
	// when the Config fields are zero.
	DefaultIOAPICAddr = 0xfec00000
	DefaultLAPICAddr  = 0xfee00000
	// DefaultSleepPort is the I/O port used for the sleep control, sleep
	// status and reset registers when the Config fields are zero (Cloud
	// Hypervisor's ACPI shutdown device used 0x3c0 for all three before
	// moving to 0x600). One port serves all three because the values
	// written to it differ.
	DefaultSleepPort = 0x3c0
	// IOAPICPins is the number of GSIs (0..23) the IOAPIC described in
	// the MADT serves, matching KVM's in-kernel IOAPIC.
	IOAPICPins = 24
	// MaxVCPUs is the largest vCPU count: xAPIC IDs are 8 bits and 0xff
	// is the broadcast ID.
	MaxVCPUs = 255

	// SleepTypeS5 is the SLP_TYP value of the \_S5 (soft-off) object.
	SleepTypeS5 = 5
	// PowerOffValue is the byte the guest writes to the sleep control
	// register to power off: SLP_EN (bit 5) | SLP_TYP (bits 4:2) = 5.
	PowerOffValue = 1<<5 | SleepTypeS5<<2 // 0x34
	// ResetValue is the byte the guest writes to the reset register.
	ResetValue = 0x01
)

// Default identifiers written into every table header.
const (
	DefaultOEMID      = "CVM   "
	DefaultOEMTableID = "CVMVMM  "
	creatorID         = "CVMM"
	creatorRevision   = 1
	oemRevision       = 1
	// hypervisorVendorID goes into the FADT's "Hypervisor Vendor
	// Identity" field.
	hypervisorVendorID = "CVMKVM  "
)

// Config describes the machine the tables announce. Zero values of the
// address, port and identifier fields select the defaults above.
type Config struct {
	// VCPUs is the number of vCPUs, 1..MaxVCPUs; vCPU i has APIC ID i.
	VCPUs int
	// IOAPICAddr and LAPICAddr are the MMIO bases of the IOAPIC and the
	// local APICs.
	IOAPICAddr, LAPICAddr uint32
	// Devices are the virtio-mmio devices, in the order the guest should
	// enumerate them (the first block device becomes /dev/vda).
	Devices []Device
	// Serials are 16550 UARTs to announce as PNP0501 devices, as
	// Firecracker does for COM1, so the guest finds them through ACPI
	// even when legacy probing is off (8250.nr_uarts=0).
	Serials []Serial
	// SleepControlPort and SleepStatusPort are the I/O ports of the FADT
	// sleep control and status registers (one byte each). Writing
	// PowerOffValue to the control port powers off.
	SleepControlPort, SleepStatusPort uint16
	// ResetPort is the I/O port of the FADT reset register; writing
	// ResetValue to it resets the machine.
	ResetPort uint16
	// OEMID (at most 6 characters) and OEMTableID (at most 8) are
	// printable ASCII, padded with spaces.
	OEMID, OEMTableID string
}

// Device is one virtio-mmio device, described in the DSDT as
// \_SB.<Name> with _HID "LNRO0005".
type Device struct {
	// Name is the 4-character AML name, such as "V000": A-Z first, then
	// A-Z, 0-9 or '_'. Names are unique. (A leading '_' is reserved for
	// names the ACPI specification defines.)
	Name string
	// Base and Size are the MMIO window; it lies below 4 GiB and does not
	// overlap another device or the APICs.
	Base, Size uint64
	// IRQ is the GSI, below IOAPICPins and unique. The interrupt is
	// edge-triggered and active-high, as in Firecracker.
	IRQ uint32
}

// Serial is one 16550-compatible UART in I/O port space, described in the
// DSDT as \_SB.<Name> with _HID EisaId("PNP0501").
type Serial struct {
	// Name follows the rules of Device.Name, such as "COM1"; it is unique
	// across Devices and Serials.
	Name string
	// Port is the first of the UART's 8 I/O ports, such as 0x3f8.
	Port uint16
	// IRQ is the GSI, such as 4, below IOAPICPins and unique across
	// Devices and Serials; edge-triggered, active-high.
	IRQ uint32
}

// Tables are the encoded tables and where each goes in guest memory.
type Tables struct {
	RSDP, XSDT, FADT, MADT, DSDT []byte
	// RSDPAddr is the guest-physical address of the RSDP.
	RSDPAddr uint64
	// XSDTAddr, FADTAddr, MADTAddr and DSDTAddr are the guest-physical
	// addresses of the other tables.
	XSDTAddr, FADTAddr, MADTAddr, DSDTAddr uint64
}

// Blob is one table and its guest-physical address.
type Blob struct {
	Name string // table signature, such as "DSDT"
	GPA  uint64
	Data []byte
}

// Blobs returns every table with its address, RSDP first, then in ascending
// address order. The Data slices alias t's.
func (t *Tables) Blobs() []Blob {
	return []Blob{
		{"RSDP", t.RSDPAddr, t.RSDP},
		{"XSDT", t.XSDTAddr, t.XSDT},
		{"FADT", t.FADTAddr, t.FADT},
		{"MADT", t.MADTAddr, t.MADT},
		{"DSDT", t.DSDTAddr, t.DSDT},
	}
}

// Table header and layout constants.
const (
	headerLen     = 36
	rsdpLen       = 36
	fadtLen       = 276 // ACPI 6.x, with the hypervisor vendor identity
	tableAlign    = 8
	apicWindow    = 0x1000
	serialPorts   = 8
	madtLAPICType = 0
	madtLAPICLen  = 8
	madtIOAPICTyp = 1
	madtIOAPICLen = 12
)

// FADT flags and boot architecture flags (ACPI 6.5 tables 5.10 and 5.11).
const (
	fadtPwrButton    = 1 << 4  // power button is a control method (or absent)
	fadtSlpButton    = 1 << 5  // sleep button likewise
	fadtResetRegSup  = 1 << 10 // RESET_REG is valid
	fadtHWReduced    = 1 << 20 // HW_REDUCED_ACPI
	iapcVGANotPresnt = 1 << 2
	iapcMSINotPresnt = 1 << 3
	iapcPCIeASPM     = 1 << 4
	gasSystemIO      = 1
	gasAccessByte    = 1
	madtPCATCompat   = 1 << 0 // dual 8259s present (KVM's in-kernel PIC)
)

// Build encodes the tables for cfg. The RSDP goes at RSDPAddr; the XSDT,
// FADT, MADT and DSDT follow each other from base, each 8-byte aligned, and
// must not overlap the RSDP. Build does not know the guest's RAM or other
// MMIO ranges: placing the tables in RAM that the e820 map reserves is the
// caller's job. Every error wraps ErrInvalidConfig.
func Build(cfg Config, base uint64) (*Tables, error) {
	cfg, err := normalize(cfg)
	if err != nil {
		return nil, err
	}
	dsdtBody, err := dsdtAML(cfg.Devices, cfg.Serials)
	if err != nil {
		return nil, fmt.Errorf("%w: dsdt: %w", ErrInvalidConfig, err)
	}

	xsdtLen := headerLen + 2*8
	madtLen := headerLen + 8 + madtIOAPICLen + cfg.VCPUs*madtLAPICLen
	dsdtLen := headerLen + len(dsdtBody)

	// Lay the tables out as offsets from the aligned base first, so the
	// overflow check is a single comparison.
	start := alignUp(base)
	fadtOff := alignUp(uint64(xsdtLen))
	madtOff := alignUp(fadtOff + fadtLen)
	dsdtOff := alignUp(madtOff + uint64(madtLen))
	size := dsdtOff + uint64(dsdtLen)
	if start < base || start > math.MaxUint64-size {
		return nil, fmt.Errorf("%w: tables at %#x wrap the address space", ErrInvalidConfig, base)
	}
	end := start + size
	t := &Tables{
		RSDPAddr: RSDPAddr,
		XSDTAddr: start,
		FADTAddr: start + fadtOff,
		MADTAddr: start + madtOff,
		DSDTAddr: start + dsdtOff,
	}
	if t.XSDTAddr < RSDPAddr+rsdpLen && RSDPAddr < end {
		return nil, fmt.Errorf("%w: tables [%#x, %#x) overlap the RSDP at %#x", ErrInvalidConfig, t.XSDTAddr, end, RSDPAddr)
	}

	t.DSDT = sdt("DSDT", 2, cfg, dsdtBody)
	t.MADT = sdt("APIC", 5, cfg, madtBody(cfg))
	t.FADT = sdt("FACP", 6, cfg, fadtBody(cfg, t.DSDTAddr))
	var x []byte
	x = binary.LittleEndian.AppendUint64(x, t.FADTAddr)
	x = binary.LittleEndian.AppendUint64(x, t.MADTAddr)
	t.XSDT = sdt("XSDT", 1, cfg, x)
	t.RSDP = rsdp(cfg.OEMID, t.XSDTAddr)
	return t, nil
}

// normalize applies defaults and validates cfg.
func normalize(cfg Config) (Config, error) {
	if cfg.VCPUs < 1 || cfg.VCPUs > MaxVCPUs {
		return cfg, fmt.Errorf("%w: %d vCPUs, want 1..%d", ErrInvalidConfig, cfg.VCPUs, MaxVCPUs)
	}
	cfg.IOAPICAddr = or(cfg.IOAPICAddr, DefaultIOAPICAddr)
	cfg.LAPICAddr = or(cfg.LAPICAddr, DefaultLAPICAddr)
	cfg.SleepControlPort = or(cfg.SleepControlPort, DefaultSleepPort)
	cfg.SleepStatusPort = or(cfg.SleepStatusPort, DefaultSleepPort)
	cfg.ResetPort = or(cfg.ResetPort, DefaultSleepPort)
	var err error
	if cfg.OEMID, err = padID("OEM ID", or(cfg.OEMID, DefaultOEMID), 6); err != nil {
		return cfg, err
	}
	if cfg.OEMTableID, err = padID("OEM table ID", or(cfg.OEMTableID, DefaultOEMTableID), 8); err != nil {
		return cfg, err
	}
	if overlaps(uint64(cfg.IOAPICAddr), apicWindow, uint64(cfg.LAPICAddr), apicWindow) {
		return cfg, fmt.Errorf("%w: IOAPIC %#x overlaps local APIC %#x", ErrInvalidConfig, cfg.IOAPICAddr, cfg.LAPICAddr)
	}
	names := map[string]bool{}
	irqs := map[uint32]string{}
	for i, d := range cfg.Devices {
		switch {
		case !validNameSeg(d.Name) || d.Name[0] == '_': // names starting with '_' belong to the spec
			return cfg, fmt.Errorf("%w: device %d: name %q is not 4 characters [A-Z][A-Z0-9_]{3}", ErrInvalidConfig, i, d.Name)
		case names[d.Name]:
			return cfg, fmt.Errorf("%w: device %s: duplicate name", ErrInvalidConfig, d.Name)
		case d.Size == 0 || d.Base+d.Size < d.Base || d.Base+d.Size > 1<<32:
			return cfg, fmt.Errorf("%w: device %s: window [%#x, +%#x) is empty or not below 4 GiB", ErrInvalidConfig, d.Name, d.Base, d.Size)
		case d.IRQ >= IOAPICPins:
			return cfg, fmt.Errorf("%w: device %s: IRQ %d, want < %d", ErrInvalidConfig, d.Name, d.IRQ, IOAPICPins)
		case irqs[d.IRQ] != "":
			return cfg, fmt.Errorf("%w: device %s: IRQ %d already used by %s", ErrInvalidConfig, d.Name, d.IRQ, irqs[d.IRQ])
		case overlaps(d.Base, d.Size, uint64(cfg.IOAPICAddr), apicWindow), overlaps(d.Base, d.Size, uint64(cfg.LAPICAddr), apicWindow):
			return cfg, fmt.Errorf("%w: device %s: window [%#x, +%#x) overlaps an APIC", ErrInvalidConfig, d.Name, d.Base, d.Size)
		}
		for _, e := range cfg.Devices[:i] {
			if overlaps(d.Base, d.Size, e.Base, e.Size) {
				return cfg, fmt.Errorf("%w: device %s: window [%#x, +%#x) overlaps device %s", ErrInvalidConfig, d.Name, d.Base, d.Size, e.Name)
			}
		}
		names[d.Name] = true
		irqs[d.IRQ] = d.Name
	}
	for i, u := range cfg.Serials {
		switch {
		case !validNameSeg(u.Name) || u.Name[0] == '_':
			return cfg, fmt.Errorf("%w: serial %d: name %q is not 4 characters [A-Z][A-Z0-9_]{3}", ErrInvalidConfig, i, u.Name)
		case names[u.Name]:
			return cfg, fmt.Errorf("%w: serial %s: duplicate name", ErrInvalidConfig, u.Name)
		case u.Port > 0x10000-serialPorts:
			return cfg, fmt.Errorf("%w: serial %s: ports [%#x, +%d) beyond 0xffff", ErrInvalidConfig, u.Name, u.Port, serialPorts)
		case u.IRQ >= IOAPICPins:
			return cfg, fmt.Errorf("%w: serial %s: IRQ %d, want < %d", ErrInvalidConfig, u.Name, u.IRQ, IOAPICPins)
		case irqs[u.IRQ] != "":
			return cfg, fmt.Errorf("%w: serial %s: IRQ %d already used by %s", ErrInvalidConfig, u.Name, u.IRQ, irqs[u.IRQ])
		}
		for _, p := range []uint16{cfg.SleepControlPort, cfg.SleepStatusPort, cfg.ResetPort} {
			if overlaps(uint64(u.Port), serialPorts, uint64(p), 1) {
				return cfg, fmt.Errorf("%w: serial %s: ports [%#x, +%d) hold sleep or reset register %#x", ErrInvalidConfig, u.Name, u.Port, serialPorts, p)
			}
		}
		for _, e := range cfg.Serials[:i] {
			if overlaps(uint64(u.Port), serialPorts, uint64(e.Port), serialPorts) {
				return cfg, fmt.Errorf("%w: serial %s: ports [%#x, +%d) overlap serial %s", ErrInvalidConfig, u.Name, u.Port, serialPorts, e.Name)
			}
		}
		names[u.Name] = true
		irqs[u.IRQ] = u.Name
	}
	return cfg, nil
}

// or returns v, or def if v is the zero value.
func or[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// padID checks that s is printable ASCII of at most n bytes and pads it with
// spaces to n.
func padID(what, s string, n int) (string, error) {
	if len(s) > n {
		return "", fmt.Errorf("%w: %s %q longer than %d bytes", ErrInvalidConfig, what, s, n)
	}
	for i := range len(s) {
		if s[i] < 0x20 || s[i] > 0x7e {
			return "", fmt.Errorf("%w: %s %q is not printable ASCII", ErrInvalidConfig, what, s)
		}
	}
	for len(s) < n {
		s += " "
	}
	return s, nil
}

// overlaps reports whether [a, a+an) and [b, b+bn) intersect; the ranges
// must not wrap.
func overlaps(a, an, b, bn uint64) bool {
	return a < b+bn && b < a+an
}

func alignUp(v uint64) uint64 {
	return (v + tableAlign - 1) &^ (tableAlign - 1)
}

// sdt returns a table: the standard header (signature, length, revision,
// checksum, OEM fields, creator) followed by body, with the checksum set.
func sdt(sig string, rev byte, cfg Config, body []byte) []byte {
	b := make([]byte, headerLen, headerLen+len(body))
	copy(b[0:4], sig)
	binary.LittleEndian.PutUint32(b[4:], uint32(headerLen+len(body)))
	b[8] = rev
	copy(b[10:16], cfg.OEMID)
	copy(b[16:24], cfg.OEMTableID)
	binary.LittleEndian.PutUint32(b[24:], oemRevision)
	copy(b[28:32], creatorID)
	binary.LittleEndian.PutUint32(b[32:], creatorRevision)
	b = append(b, body...)
	b[9] = -sum8(b)
	return b
}

// rsdp returns the revision 2 RSDP pointing at the XSDT (ACPI 6.5 5.2.5.3).
func rsdp(oemID string, xsdt uint64) []byte {
	b := make([]byte, rsdpLen)
	copy(b[0:8], "RSD PTR ")
	copy(b[9:15], oemID)
	b[15] = 2 // revision: ACPI 2.0+
	// RsdtAddress (offset 16) stays 0: there is no RSDT.
	binary.LittleEndian.PutUint32(b[20:], rsdpLen)
	binary.LittleEndian.PutUint64(b[24:], xsdt)
	b[8] = -sum8(b[:20])
	b[32] = -sum8(b)
	return b
}

// gas encodes a Generic Address Structure for a one-byte I/O port register.
func gas(b []byte, port uint16) {
	b[0] = gasSystemIO
	b[1] = 8 // bit width
	b[2] = 0 // bit offset
	b[3] = gasAccessByte
	binary.LittleEndian.PutUint64(b[4:], uint64(port))
}

// fadtBody returns the FADT after the header (ACPI 6.5 5.2.9). Every legacy
// fixed-hardware field stays zero, as hardware-reduced ACPI requires; only
// the flags, the reset register, X_DSDT, the sleep registers and the
// hypervisor vendor identity are set. The offsets below are the table's,
// so the body index is offset-headerLen.
func fadtBody(cfg Config, dsdt uint64) []byte {
	b := make([]byte, fadtLen)
	// As Firecracker: no VGA, no MSI, no PCIe ASPM control. Revisit the
	// MSI bit when virtio-pci with MSI-X arrives; Linux disables MSI
	// globally when it is set.
	binary.LittleEndian.PutUint16(b[109:], iapcVGANotPresnt|iapcMSINotPresnt|iapcPCIeASPM)
	binary.LittleEndian.PutUint32(b[112:], fadtPwrButton|fadtSlpButton|fadtResetRegSup|fadtHWReduced)
	gas(b[116:128], cfg.ResetPort)
	b[128] = ResetValue
	b[131] = 5 // FADT minor version: ACPI 6.5
	binary.LittleEndian.PutUint64(b[140:], dsdt)
	gas(b[244:256], cfg.SleepControlPort)
	gas(b[256:268], cfg.SleepStatusPort)
	copy(b[268:276], hypervisorVendorID)
	return b[headerLen:]
}

// madtBody returns the MADT after the header (ACPI 6.5 5.2.12): local APIC
// address, flags, the IOAPIC (ID 0, GSI base 0), and one enabled local APIC
// per vCPU with processor UID = APIC ID = vCPU index.
func madtBody(cfg Config) []byte {
	var b []byte
	b = binary.LittleEndian.AppendUint32(b, cfg.LAPICAddr)
	b = binary.LittleEndian.AppendUint32(b, madtPCATCompat)
	b = append(b, madtIOAPICTyp, madtIOAPICLen, 0 /* IOAPIC ID */, 0)
	b = binary.LittleEndian.AppendUint32(b, cfg.IOAPICAddr)
	b = binary.LittleEndian.AppendUint32(b, 0) // GSI base
	for i := range cfg.VCPUs {
		b = append(b, madtLAPICType, madtLAPICLen, byte(i), byte(i))
		b = binary.LittleEndian.AppendUint32(b, 1) // enabled
	}
	return b
}

// dsdtAML returns the DSDT's AML:
//
//	Name(\_S5_, Package(){5, 0, 0, 0})
//	Scope(\_SB_) {
//	    Device(<name>) {                  // each virtio-mmio device
//	        Name(_HID, "LNRO0005")
//	        Name(_UID, <index>)
//	        Name(_CCA, One)
//	        Name(_CRS, ResourceTemplate() {
//	            Memory32Fixed(ReadWrite, <base>, <size>)
//	            Interrupt(ResourceConsumer, Edge, ActiveHigh, Exclusive) {<irq>}
//	        })
//	    }
//	    Device(<name>) {                  // each serial port
//	        Name(_HID, EisaId("PNP0501"))
//	        Name(_UID, <index>)
//	        Name(_CRS, ResourceTemplate() {
//	            IO(Decode16, <port>, <port>, 1, 8)
//	            Interrupt(ResourceConsumer, Edge, ActiveHigh, Exclusive) {<irq>}
//	        })
//	    }
//	}
//
// Linux offers ACPI power-off on a hardware-reduced platform only if \_S5
// evaluates and both sleep registers are present.
func dsdtAML(devs []Device, serials []Serial) ([]byte, error) {
	s5, err := amlPackageOf(amlInteger(SleepTypeS5), amlInteger(0), amlInteger(0), amlInteger(0))
	if err != nil {
		return nil, err
	}
	out := amlName(`\_S5_`, s5)
	var sb []byte
	for i, d := range devs {
		crs, err := resourceTemplate(
			memory32Fixed(uint32(d.Base), uint32(d.Size)),
			extInterrupt(intConsumer|intEdge, d.IRQ),
		)
		if err != nil {
			return nil, err
		}
		dev, err := amlDevice(d.Name, slices.Concat(
			amlName("_HID", amlString("LNRO0005")),
			amlName("_UID", amlInteger(uint64(i))),
			amlName("_CCA", amlInteger(1)),
			amlName("_CRS", crs),
		))
		if err != nil {
			return nil, err
		}
		sb = append(sb, dev...)
	}
	for i, u := range serials {
		crs, err := resourceTemplate(
			ioPorts(u.Port, serialPorts),
			extInterrupt(intConsumer|intEdge, u.IRQ),
		)
		if err != nil {
			return nil, err
		}
		dev, err := amlDevice(u.Name, slices.Concat(
			amlName("_HID", amlInteger(pnp0501)),
			amlName("_UID", amlInteger(uint64(i))),
			amlName("_CRS", crs),
		))
		if err != nil {
			return nil, err
		}
		sb = append(sb, dev...)
	}
	scope, err := amlScope(`\_SB_`, sb)
	if err != nil {
		return nil, err
	}
	return append(out, scope...), nil
}

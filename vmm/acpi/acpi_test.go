package acpi

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const testBase = 0x000e1000

// testConfig is a 4-vCPU machine with three Firecracker-style devices and
// COM1.
func testConfig() Config {
	return Config{
		VCPUs: 4,
		Devices: []Device{
			{Name: "V000", Base: 0xc0000000, Size: 0x1000, IRQ: 5},
			{Name: "V001", Base: 0xc0001000, Size: 0x1000, IRQ: 6},
			{Name: "V002", Base: 0xc0002000, Size: 0x1000, IRQ: 23},
		},
		Serials: []Serial{{Name: "COM1", Port: 0x3f8, IRQ: 4}},
	}
}

// checkTables verifies the invariants every Build result must satisfy:
// signatures, lengths, checksums, the pointer chain RSDP -> XSDT ->
// FADT/MADT, FADT -> DSDT, no overlap between tables, and vcpus local APICs.
func checkTables(tb *Tables, vcpus int) error {
	r := tb.RSDP
	switch {
	case len(r) != rsdpLen || string(r[:8]) != "RSD PTR ":
		return fmt.Errorf("rsdp: bad length %d or signature", len(r))
	case sum8(r[:20]) != 0:
		return errors.New("rsdp: checksum of the first 20 bytes is not zero")
	case sum8(r) != 0:
		return errors.New("rsdp: extended checksum is not zero")
	case r[15] != 2 || binary.LittleEndian.Uint32(r[20:]) != rsdpLen:
		return fmt.Errorf("rsdp: revision %d, length %d", r[15], binary.LittleEndian.Uint32(r[20:]))
	case binary.LittleEndian.Uint64(r[24:]) != tb.XSDTAddr:
		return fmt.Errorf("rsdp: XSDT address %#x, want %#x", binary.LittleEndian.Uint64(r[24:]), tb.XSDTAddr)
	case tb.RSDPAddr != RSDPAddr:
		return fmt.Errorf("rsdp: address %#x", tb.RSDPAddr)
	}
	for _, s := range []struct {
		sig  string
		data []byte
	}{{"XSDT", tb.XSDT}, {"FACP", tb.FADT}, {"APIC", tb.MADT}, {"DSDT", tb.DSDT}} {
		switch {
		case len(s.data) < headerLen || string(s.data[:4]) != s.sig:
			return fmt.Errorf("%s: bad signature or short table", s.sig)
		case int(binary.LittleEndian.Uint32(s.data[4:])) != len(s.data):
			return fmt.Errorf("%s: length field %d, table is %d bytes", s.sig, binary.LittleEndian.Uint32(s.data[4:]), len(s.data))
		case sum8(s.data) != 0:
			return fmt.Errorf("%s: checksum is not zero", s.sig)
		}
	}
	var xsdt []uint64
	for e := tb.XSDT[headerLen:]; len(e) >= 8; e = e[8:] {
		xsdt = append(xsdt, binary.LittleEndian.Uint64(e))
	}
	if diff := cmp.Diff([]uint64{tb.FADTAddr, tb.MADTAddr}, xsdt); diff != "" {
		return fmt.Errorf("xsdt entries (-want +got):\n%s", diff)
	}
	if len(tb.FADT) != fadtLen || binary.LittleEndian.Uint64(tb.FADT[140:]) != tb.DSDTAddr {
		return fmt.Errorf("fadt: length %d or X_DSDT does not point at %#x", len(tb.FADT), tb.DSDTAddr)
	}
	if binary.LittleEndian.Uint32(tb.FADT[112:])&fadtHWReduced == 0 {
		return errors.New("fadt: HW_REDUCED_ACPI not set")
	}
	lapics := 0
	for e := tb.MADT[headerLen+8:]; len(e) > 0; e = e[e[1]:] {
		if len(e) < 2 || e[1] < 2 || int(e[1]) > len(e) {
			return errors.New("madt: malformed entry")
		}
		if e[0] == madtLAPICType {
			lapics++
		}
	}
	if lapics != vcpus {
		return fmt.Errorf("madt: %d local APICs, want %d", lapics, vcpus)
	}
	blobs := tb.Blobs()
	for i, a := range blobs {
		for _, b := range blobs[i+1:] {
			if overlaps(a.GPA, uint64(len(a.Data)), b.GPA, uint64(len(b.Data))) {
				return fmt.Errorf("%s at %#x overlaps %s at %#x", a.Name, a.GPA, b.Name, b.GPA)
			}
		}
	}
	return nil
}

func TestBuild(t *testing.T) {
	tb, err := Build(testConfig(), testBase)
	if err != nil {
		t.Fatalf("Build() error: %v", err)
	}
	if err := checkTables(tb, 4); err != nil {
		t.Error(err)
	}
	wantAddrs := []Blob{
		{Name: "RSDP", GPA: 0xe0000},
		{Name: "XSDT", GPA: testBase},
		{Name: "FADT", GPA: testBase + 0x38},         // 52 bytes, aligned to 56
		{Name: "MADT", GPA: testBase + 0x38 + 0x118}, // 276 bytes, aligned to 280
		{Name: "DSDT", GPA: testBase + 0x150 + 0x58}, // 36+8+12+4*8 = 88
	}
	var got []Blob
	for _, b := range tb.Blobs() {
		got = append(got, Blob{Name: b.Name, GPA: b.GPA})
	}
	if diff := cmp.Diff(wantAddrs, got); diff != "" {
		t.Errorf("Blobs() addresses mismatch (-want +got):\n%s", diff)
	}
	for _, s := range []struct {
		name string
		data []byte
	}{{"XSDT", tb.XSDT}, {"FADT", tb.FADT}, {"MADT", tb.MADT}, {"DSDT", tb.DSDT}} {
		if got := string(s.data[10:16]) + "|" + string(s.data[16:24]); got != "CVM   |CVMVMM  " {
			t.Errorf("%s OEM ID|table ID = %q, want defaults", s.name, got)
		}
	}
	// Power-off and reset registers: one-byte I/O port GAS at 0x3c0.
	wantGAS := []byte{1, 8, 0, 1, 0xc0, 0x03, 0, 0, 0, 0, 0, 0}
	for _, off := range []int{116, 244, 256} {
		if diff := cmp.Diff(wantGAS, tb.FADT[off:off+12]); diff != "" {
			t.Errorf("FADT GAS at %d mismatch (-want +got):\n%s", off, diff)
		}
	}
	if tb.FADT[128] != ResetValue || PowerOffValue != 0x34 {
		t.Errorf("reset value %#x, power-off value %#x", tb.FADT[128], PowerOffValue)
	}
	// The DSDT carries each device's _CRS bytes verbatim.
	for _, d := range testConfig().Devices {
		for _, want := range [][]byte{
			memory32Fixed(uint32(d.Base), uint32(d.Size)),
			extInterrupt(intConsumer|intEdge, d.IRQ),
		} {
			if !bytes.Contains(tb.DSDT, want) {
				t.Errorf("DSDT lacks % x for %s", want, d.Name)
			}
		}
	}
	if n := bytes.Count(tb.DSDT, []byte{amlExtOpPrefix, amlDeviceOp}); n != 4 {
		t.Errorf("DSDT has %d DeviceOps, want 4", n)
	}
	if n := bytes.Count(tb.DSDT, amlString("LNRO0005")); n != 3 {
		t.Errorf("DSDT has %d LNRO0005 strings, want 3", n)
	}
	// COM1: _HID EisaId("PNP0501"), then IO(Decode16, 0x3f8, 0x3f8, 1, 8)
	// and Interrupt(){4} in the _CRS.
	for _, want := range [][]byte{
		{0x08, '_', 'H', 'I', 'D', 0x0c, 0x41, 0xd0, 0x05, 0x01},
		{0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08, 0x89, 0x06, 0x00, 0x03, 0x01, 0x04, 0x00, 0x00, 0x00, 0x79},
	} {
		if !bytes.Contains(tb.DSDT, want) {
			t.Errorf("DSDT lacks % x for COM1", want)
		}
	}
}

func TestBuildCustom(t *testing.T) {
	cfg := Config{
		VCPUs:            255,
		IOAPICAddr:       0xfec10000,
		LAPICAddr:        0xfee10000,
		SleepControlPort: 0x600,
		SleepStatusPort:  0x601,
		ResetPort:        0x602,
		OEMID:            "ABC",
		OEMTableID:       "TABLE1",
	}
	tb, err := Build(cfg, 0x100000)
	if err != nil {
		t.Fatalf("Build() error: %v", err)
	}
	if err := checkTables(tb, 255); err != nil {
		t.Error(err)
	}
	if got := binary.LittleEndian.Uint32(tb.MADT[headerLen:]); got != cfg.LAPICAddr {
		t.Errorf("MADT local APIC address = %#x, want %#x", got, cfg.LAPICAddr)
	}
	if got := binary.LittleEndian.Uint32(tb.MADT[headerLen+12:]); got != cfg.IOAPICAddr {
		t.Errorf("MADT IOAPIC address = %#x, want %#x", got, cfg.IOAPICAddr)
	}
	for off, want := range map[int]uint16{120: 0x602, 248: 0x600, 260: 0x601} {
		if got := binary.LittleEndian.Uint16(tb.FADT[off:]); got != want {
			t.Errorf("FADT port at %d = %#x, want %#x", off, got, want)
		}
	}
	if got := string(tb.RSDP[9:15]) + "|" + string(tb.DSDT[10:24]); got != "ABC   |ABC   TABLE1  " {
		t.Errorf("OEM fields = %q", got)
	}
}

func TestBuildErrors(t *testing.T) {
	dev := func(name string, base, size uint64, irq uint32) Device {
		return Device{Name: name, Base: base, Size: size, IRQ: irq}
	}
	tests := []struct {
		name    string
		cfg     Config
		base    uint64
		wantErr string
	}{
		{"zero vCPUs", Config{}, testBase, "0 vCPUs"},
		{"256 vCPUs", Config{VCPUs: 256}, testBase, "256 vCPUs"},
		{"short name", Config{VCPUs: 1, Devices: []Device{dev("V00", 0xc0000000, 0x1000, 5)}}, testBase, "not 4 characters"},
		{"long name", Config{VCPUs: 1, Devices: []Device{dev("V0000", 0xc0000000, 0x1000, 5)}}, testBase, "not 4 characters"},
		{"reserved name", Config{VCPUs: 1, Devices: []Device{dev("_SB_", 0xc0000000, 0x1000, 5)}}, testBase, "not 4 characters"},
		{"lower case", Config{VCPUs: 1, Devices: []Device{dev("v000", 0xc0000000, 0x1000, 5)}}, testBase, "not 4 characters"},
		{"duplicate name", Config{VCPUs: 1, Devices: []Device{dev("V000", 0xc0000000, 0x1000, 5), dev("V000", 0xc0001000, 0x1000, 6)}}, testBase, "duplicate name"},
		{"overlap", Config{VCPUs: 1, Devices: []Device{dev("V000", 0xc0000000, 0x1000, 5), dev("V001", 0xc0000800, 0x1000, 6)}}, testBase, "overlaps device V000"},
		{"same window", Config{VCPUs: 1, Devices: []Device{dev("V000", 0xc0000000, 0x1000, 5), dev("V001", 0xc0000000, 0x1000, 6)}}, testBase, "overlaps device V000"},
		{"zero size", Config{VCPUs: 1, Devices: []Device{dev("V000", 0xc0000000, 0, 5)}}, testBase, "empty or not below 4 GiB"},
		{"above 4 GiB", Config{VCPUs: 1, Devices: []Device{dev("V000", 0xfffff000, 0x2000, 5)}}, testBase, "empty or not below 4 GiB"},
		{"wrapping window", Config{VCPUs: 1, Devices: []Device{dev("V000", ^uint64(0), 2, 5)}}, testBase, "empty or not below 4 GiB"},
		{"IRQ 24", Config{VCPUs: 1, Devices: []Device{dev("V000", 0xc0000000, 0x1000, 24)}}, testBase, "IRQ 24"},
		{"shared IRQ", Config{VCPUs: 1, Devices: []Device{dev("V000", 0xc0000000, 0x1000, 5), dev("V001", 0xc0001000, 0x1000, 5)}}, testBase, "already used by V000"},
		{"serial name", Config{VCPUs: 1, Serials: []Serial{{Name: "COM", Port: 0x3f8, IRQ: 4}}}, testBase, "not 4 characters"},
		{"serial name clash", Config{VCPUs: 1, Devices: []Device{dev("COM1", 0xc0000000, 0x1000, 5)}, Serials: []Serial{{Name: "COM1", Port: 0x3f8, IRQ: 4}}}, testBase, "duplicate name"},
		{"serial IRQ clash", Config{VCPUs: 1, Devices: []Device{dev("V000", 0xc0000000, 0x1000, 4)}, Serials: []Serial{{Name: "COM1", Port: 0x3f8, IRQ: 4}}}, testBase, "already used by V000"},
		{"serial IRQ 24", Config{VCPUs: 1, Serials: []Serial{{Name: "COM1", Port: 0x3f8, IRQ: 24}}}, testBase, "IRQ 24"},
		{"serial ports overlap", Config{VCPUs: 1, Serials: []Serial{{Name: "COM1", Port: 0x3f8, IRQ: 4}, {Name: "COM2", Port: 0x3fc, IRQ: 3}}}, testBase, "overlap serial COM1"},
		{"serial ports past 0xffff", Config{VCPUs: 1, Serials: []Serial{{Name: "COM1", Port: 0xfff9, IRQ: 4}}}, testBase, "beyond 0xffff"},
		{"serial on sleep port", Config{VCPUs: 1, Serials: []Serial{{Name: "COM1", Port: 0x3bc, IRQ: 4}}}, testBase, "hold sleep or reset register 0x3c0"},
		{"on IOAPIC", Config{VCPUs: 1, Devices: []Device{dev("V000", 0xfec00000, 0x1000, 5)}}, testBase, "overlaps an APIC"},
		{"APICs overlap", Config{VCPUs: 1, IOAPICAddr: 0xfee00800}, testBase, "overlaps local APIC"},
		{"long OEM ID", Config{VCPUs: 1, OEMID: "1234567"}, testBase, "longer than 6"},
		{"long table ID", Config{VCPUs: 1, OEMTableID: "123456789"}, testBase, "longer than 8"},
		{"binary OEM ID", Config{VCPUs: 1, OEMID: "A\x00"}, testBase, "not printable"},
		{"tables on RSDP", Config{VCPUs: 1}, RSDPAddr - 8, "overlap the RSDP"},
		{"tables wrap", Config{VCPUs: 1}, ^uint64(0) - 100, "wrap"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb, err := Build(tt.cfg, tt.base)
			if err == nil {
				t.Fatalf("Build() = %v, want error containing %q", tb, tt.wantErr)
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("Build() error %v does not wrap ErrInvalidConfig", err)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Build() error %q, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

// TestBuildNoDevices checks that a machine without devices still gets a
// DSDT with \_S5 and an empty \_SB scope.
func TestBuildNoDevices(t *testing.T) {
	tb, err := Build(Config{VCPUs: 1}, testBase)
	if err != nil {
		t.Fatalf("Build() error: %v", err)
	}
	if err := checkTables(tb, 1); err != nil {
		t.Error(err)
	}
	want := []byte{
		0x08, '\\', '_', 'S', '5', '_', 0x12, 0x07, 0x04, 0x0a, 0x05, 0x00, 0x00, 0x00,
		0x10, 0x06, '\\', '_', 'S', 'B', '_',
	}
	if diff := cmp.Diff(want, tb.DSDT[headerLen:]); diff != "" {
		t.Errorf("DSDT AML mismatch (-want +got):\n%s", diff)
	}
}

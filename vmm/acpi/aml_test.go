package acpi

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestPkgLength(t *testing.T) {
	tests := []struct {
		n    int
		want []byte
	}{
		{0, []byte{0x00}},
		{63, []byte{0x3f}},
		{64, []byte{0x40, 0x04}},
		{4095, []byte{0x4f, 0xff}},
		{4096, []byte{0x80, 0x00, 0x01}},
		{1048575, []byte{0x8f, 0xff, 0xff}},
		{1048576, []byte{0xc0, 0x00, 0x00, 0x01}},
		{1<<28 - 1, []byte{0xcf, 0xff, 0xff, 0xff}},
	}
	for _, tt := range tests {
		got, err := pkgLength(tt.n)
		if err != nil {
			t.Errorf("pkgLength(%d) error: %v", tt.n, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("pkgLength(%d) = % x, want % x", tt.n, got, tt.want)
		}
	}
	for _, n := range []int{-1, 1 << 28} {
		if got, err := pkgLength(n); err == nil {
			t.Errorf("pkgLength(%d) = % x, want error", n, got)
		}
	}
}

// TestAMLPackageLength checks that the PkgLength counts its own bytes and
// grows when that pushes the total past a boundary.
func TestAMLPackageLength(t *testing.T) {
	tests := []struct {
		body     int
		wantHead []byte // op, then PkgLength
	}{
		{0, []byte{0x10, 0x01}},
		{62, []byte{0x10, 0x3f}},       // 62+1 = 63 fits one byte
		{63, []byte{0x10, 0x41, 0x04}}, // 63+2 = 65
		{4093, []byte{0x10, 0x4f, 0xff}},
		{4094, []byte{0x10, 0x81, 0x00, 0x01}}, // 4094+3 = 4097
		{1048572, []byte{0x10, 0x8f, 0xff, 0xff}},
		{1048573, []byte{0x10, 0xc1, 0x00, 0x00, 0x01}}, // +4 = 1048577
	}
	for _, tt := range tests {
		got, err := amlPackage([]byte{0x10}, make([]byte, tt.body))
		if err != nil {
			t.Errorf("amlPackage(body %d) error: %v", tt.body, err)
			continue
		}
		if diff := cmp.Diff(tt.wantHead, got[:len(tt.wantHead)]); diff != "" {
			t.Errorf("amlPackage(body %d) head = % x, want % x", tt.body, got[:len(tt.wantHead)], tt.wantHead)
		}
		if len(got) != len(tt.wantHead)+tt.body {
			t.Errorf("amlPackage(body %d) length = %d, want %d", tt.body, len(got), len(tt.wantHead)+tt.body)
		}
	}
	if _, err := amlPackage([]byte{0x10}, make([]byte, 1<<28-4)); err == nil {
		t.Error("amlPackage(body 2^28-4) succeeded, want error")
	}
}

func TestAMLInteger(t *testing.T) {
	tests := []struct {
		v    uint64
		want []byte
	}{
		{0, []byte{0x00}},
		{1, []byte{0x01}},
		{2, []byte{0x0a, 0x02}},
		{0xff, []byte{0x0a, 0xff}},
		{0x100, []byte{0x0b, 0x00, 0x01}},
		{0xffff, []byte{0x0b, 0xff, 0xff}},
		{0x10000, []byte{0x0c, 0x00, 0x00, 0x01, 0x00}},
		{0xffffffff, []byte{0x0c, 0xff, 0xff, 0xff, 0xff}},
		{1 << 32, []byte{0x0e, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00}},
		{0x0123456789abcdef, []byte{0x0e, 0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01}},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, amlInteger(tt.v)); diff != "" {
			t.Errorf("amlInteger(%#x) mismatch (-want +got):\n%s", tt.v, diff)
		}
	}
}

func TestAMLObjects(t *testing.T) {
	must := func(b []byte, err error) []byte {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name string
		got  []byte
		want []byte
	}{
		{"String", amlString("AB"), []byte{0x0d, 'A', 'B', 0}},
		{"Name", amlName("_UID", amlInteger(3)), []byte{0x08, '_', 'U', 'I', 'D', 0x0a, 0x03}},
		{"Buffer", must(amlBuffer([]byte{7, 8})), []byte{0x11, 0x05, 0x0a, 0x02, 7, 8}},
		{"Package", must(amlPackageOf(amlInteger(5), amlInteger(0))), []byte{0x12, 0x05, 0x02, 0x0a, 0x05, 0x00}},
		{"Scope", must(amlScope(`\_SB_`, nil)), []byte{0x10, 0x06, '\\', '_', 'S', 'B', '_'}},
		{"Device", must(amlDevice("V000", []byte{0xaa})), []byte{0x5b, 0x82, 0x06, 'V', '0', '0', '0', 0xaa}},
		{
			"Memory32Fixed",
			memory32Fixed(0xd0001000, 0x200),
			[]byte{0x86, 0x09, 0x00, 0x01, 0x00, 0x10, 0x00, 0xd0, 0x00, 0x02, 0x00, 0x00},
		},
		{"IO", ioPorts(0x2f8, 8), []byte{0x47, 0x01, 0xf8, 0x02, 0xf8, 0x02, 0x01, 0x08}},
		{
			"Interrupt",
			extInterrupt(intConsumer|intEdge, 0x17),
			[]byte{0x89, 0x06, 0x00, 0x03, 0x01, 0x17, 0x00, 0x00, 0x00},
		},
		{
			// 0x86+0x01+0x01+0x79 = 0x101; checksum 0xff makes the sum 0x200.
			"ResourceTemplate",
			must(resourceTemplate([]byte{0x86, 0x01, 0x01})),
			[]byte{0x11, 0x08, 0x0a, 0x05, 0x86, 0x01, 0x01, 0x79, 0xff},
		},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, tt.got); diff != "" {
			t.Errorf("%s mismatch (-want +got):\n%s", tt.name, diff)
		}
	}
}

func TestValidNameSeg(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"V000", true},
		{"_SB_", true},
		{"A_9Z", true},
		{"V00", false},
		{"V0000", false},
		{"0V00", false},
		{"v000", false},
		{"V-00", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := validNameSeg(tt.in); got != tt.want {
			t.Errorf("validNameSeg(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

package vmm

import (
	"bytes"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/greatjail/cvm/vmm/acpi"
)

func TestWindows(t *testing.T) {
	c := Config{Disks: []Disk{{Path: "a"}, {Path: "b", ReadOnly: true}}, RNG: true, VsockUDS: "/tmp/v.sock"}
	got := Windows(c)
	want := []Window{
		{KindBlock, 0, acpi.Device{Name: "V000", Base: 0xc0000000, Size: 0x1000, IRQ: 5}},
		{KindBlock, 1, acpi.Device{Name: "V001", Base: 0xc0001000, Size: 0x1000, IRQ: 6}},
		{KindRNG, 0, acpi.Device{Name: "V002", Base: 0xc0002000, Size: 0x1000, IRQ: 7}},
		{KindVsock, 0, acpi.Device{Name: "V003", Base: 0xc0003000, Size: 0x1000, IRQ: 8}},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("Windows (-want +got):\n%s", d)
	}
}

func TestBuildPlan(t *testing.T) {
	kernel := realKernel(t)
	c := Config{Kernel: kernel, Initrd: []byte("initrd"), Cmdline: "console=ttyS0", MemorySize: 512 << 20, VCPUs: 4,
		Disks: []Disk{{Path: "a"}}, RNG: true}
	p, ws, err := buildPlan(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Validate(); err != nil {
		t.Fatalf("plan.Validate: %v", err)
	}
	if len(ws) != 2 || ws[0].IRQ != 5 || ws[1].IRQ != 6 {
		t.Errorf("windows %+v", ws)
	}
	if p.MemorySize != 512<<20 || p.VCPUs != 4 {
		t.Errorf("plan memory %d vCPUs %d", p.MemorySize, p.VCPUs)
	}
	blobs := map[string][]byte{}
	for _, b := range p.Blobs {
		blobs[b.Name] = b.Data
	}
	rsdp, tables := blobs["acpi-rsdp"], blobs["acpi-tables"]
	if !bytes.HasPrefix(rsdp, []byte("RSD PTR ")) {
		t.Errorf("acpi-rsdp blob = %q..., want an RSDP", rsdp[:min(8, len(rsdp))])
	}
	for _, sig := range []string{"XSDT", "FACP", "APIC", "DSDT", "LNRO0005", "COM1", "V000", "V001"} {
		if !bytes.Contains(tables, []byte(sig)) {
			t.Errorf("acpi-tables blob lacks %q", sig)
		}
	}
	for _, b := range p.Blobs {
		if b.Name == "acpi-rsdp" && b.GPA != acpi.RSDPAddr {
			t.Errorf("RSDP at %#x", b.GPA)
		}
		if b.Name == "acpi-tables" && b.GPA != ACPITablesAddr {
			t.Errorf("tables at %#x", b.GPA)
		}
	}
}

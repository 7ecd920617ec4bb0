package vmm

import (
	"fmt"

	"github.com/greatjail/cvm/vmm/acpi"
	"github.com/greatjail/cvm/vmm/devices"
	"github.com/greatjail/cvm/vmm/loader"
	"github.com/greatjail/cvm/vmm/plan"
)

// Guest-physical layout of the devices and tables.
const (
	// MMIOBase is the first virtio-mmio window, at the start of the
	// 32-bit MMIO gap; each device gets MMIOWindow bytes.
	MMIOBase   = loader.MMIOGapStart
	MMIOWindow = 0x1000
	// FirstDeviceIRQ is the GSI of the first virtio device; the next
	// ones follow.
	FirstDeviceIRQ = 5
	// ACPITablesAddr is where the XSDT, FADT, MADT and DSDT go: in the
	// reserved BIOS area, the page after the RSDP.
	ACPITablesAddr = acpi.RSDPAddr + plan.PageSize
	// TSSAddr and IdentityMapAddr are the pages KVM needs on Intel
	// hosts, below the IOAPIC and outside guest RAM.
	TSSAddr         = 0xfffbd000
	IdentityMapAddr = 0xfffbc000

	maxDevices = acpi.IOAPICPins - FirstDeviceIRQ
)

// DeviceKind is the model behind a virtio-mmio window.
type DeviceKind uint8

// The virtio devices Run creates.
const (
	KindBlock DeviceKind = iota + 1
	KindRNG
	KindVsock
	KindSlot // a disk hot-plug slot (Config.Slots)
)

// Window is one virtio-mmio device's place in the guest.
type Window struct {
	Kind DeviceKind
	Disk int // index into Config.Disks for KindBlock, Config.Slots for KindSlot
	acpi.Device
}

func deviceCount(cfg Config) int {
	n := len(cfg.Disks)
	if cfg.RNG {
		n++
	}
	if cfg.VsockUDS != "" {
		n++
	}
	return n + len(cfg.Slots)
}

// Windows assigns each device of cfg its MMIO window and GSI, in the order
// the guest enumerates them: disks, then entropy, then vsock, then the disk
// hot-plug slots.
func Windows(cfg Config) []Window {
	var ws []Window
	add := func(k DeviceKind, disk int) {
		i := len(ws)
		ws = append(ws, Window{Kind: k, Disk: disk, Device: acpi.Device{
			Name: fmt.Sprintf("V%03d", i),
			Base: MMIOBase + uint64(i)*MMIOWindow,
			Size: MMIOWindow,
			IRQ:  uint32(FirstDeviceIRQ + i),
		}})
	}
	for i := range cfg.Disks {
		add(KindBlock, i)
	}
	if cfg.RNG {
		add(KindRNG, 0)
	}
	if cfg.VsockUDS != "" {
		add(KindVsock, 0)
	}
	for i := range cfg.Slots {
		add(KindSlot, i)
	}
	return ws
}

// buildPlan lays out the launch plan for cfg: the ACPI tables describing
// the vCPUs, COM1 and every device window, then the Linux boot.
func buildPlan(cfg Config) (*plan.Plan, []Window, error) {
	ws := Windows(cfg)
	if len(ws) > maxDevices {
		return nil, nil, fmt.Errorf("vmm: %d virtio devices: at most %d", len(ws), maxDevices)
	}
	ac := acpi.Config{
		VCPUs:   cfg.VCPUs,
		Serials: []acpi.Serial{{Name: "COM1", Port: devices.COM1Base, IRQ: devices.COM1IRQ}},
	}
	for _, w := range ws {
		ac.Devices = append(ac.Devices, w.Device)
	}
	t, err := acpi.Build(ac, ACPITablesAddr)
	if err != nil {
		return nil, nil, fmt.Errorf("vmm: acpi tables: %w", err)
	}
	p, err := loader.Linux(loader.BootOptions{
		Kernel:     cfg.Kernel,
		Initrd:     cfg.Initrd,
		Cmdline:    cfg.Cmdline,
		MemorySize: cfg.MemorySize,
		VCPUs:      cfg.VCPUs,
		Extra:      acpiBlobs(t),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("vmm: launch plan: %w", err)
	}
	return p, ws, nil
}

// acpiBlobs turns the tables into plan blobs: the RSDP alone in its page,
// and the other tables, which Build packs next to each other, as one blob
// (plan blobs may not share pages).
func acpiBlobs(t *acpi.Tables) []plan.Blob {
	bs := t.Blobs()
	out := []plan.Blob{{Name: "acpi-rsdp", GPA: t.RSDPAddr, Data: t.RSDP, Size: uint64(len(t.RSDP)), Type: plan.Normal}}
	var lo, hi uint64
	for _, b := range bs {
		if b.GPA == t.RSDPAddr {
			continue
		}
		if lo == 0 || b.GPA < lo {
			lo = b.GPA
		}
		hi = max(hi, b.GPA+uint64(len(b.Data)))
	}
	data := make([]byte, hi-lo)
	for _, b := range bs {
		if b.GPA != t.RSDPAddr {
			copy(data[b.GPA-lo:], b.Data)
		}
	}
	return append(out, plan.Blob{Name: "acpi-tables", GPA: lo, Data: data, Size: uint64(len(data)), Type: plan.Normal})
}

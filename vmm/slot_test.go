package vmm

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/greatjail/cvm/vmm/acpi"
	"github.com/greatjail/cvm/vmm/devices"
)

// A slot's life: refused before Run binds it, attach and detach while it
// runs, refused again (and its disk closed) once the VM stopped.
func TestDiskSlotLifecycle(t *testing.T) {
	s := NewDiskSlot()
	img, other := diskFile(t, 4096), diskFile(t, 1<<20)
	if err := s.Attach(img, "cvm-disk-1", true); !errors.Is(err, ErrSlotNotRunning) || !strings.Contains(err.Error(), "not built") {
		t.Errorf("Attach before Run = %v, want ErrSlotNotRunning (not built yet)", err)
	}
	if err := s.Detach(); !errors.Is(err, ErrSlotNotRunning) {
		t.Errorf("Detach before Run = %v, want ErrSlotNotRunning", err)
	}

	blk := devices.NewEmptyBlock()
	if err := s.bind(blk); err != nil {
		t.Fatal(err)
	}
	if err := s.Detach(); err != nil {
		t.Errorf("Detach of an empty slot = %v, want nil", err)
	}
	if err := s.Attach(img, "cvm-disk-1", true); err != nil {
		t.Fatal(err)
	}
	if got, want := blk.Capacity(), uint64(4096/512); got != want {
		t.Errorf("capacity after Attach = %d, want %d", got, want)
	}
	if got := s.Attached(); got != img {
		t.Errorf("Attached = %q, want %q", got, img)
	}
	if err := s.Attach(other, "cvm-disk-2", true); !errors.Is(err, ErrSlotBusy) || !strings.Contains(err.Error(), img) {
		t.Errorf("Attach to a full slot = %v, want ErrSlotBusy naming %s", err, img)
	}
	if err := s.Detach(); err != nil {
		t.Fatal(err)
	}
	if got := blk.Capacity(); got != 0 || s.Attached() != "" {
		t.Errorf("after Detach: capacity %d, attached %q; want 0, empty", got, s.Attached())
	}
	missing := filepath.Join(t.TempDir(), "missing.img")
	for _, tt := range []struct {
		name, path, serial, want string
	}{
		{"missing file", missing, "s", missing},
		{"too small", diskFile(t, 100), "s", "smaller than one 512-byte sector"},
		{"long serial", other, "this-serial-is-too-long", "longer than 20 bytes"},
	} {
		if err := s.Attach(tt.path, tt.serial, true); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Attach = %v, want an error containing %q", tt.name, err, tt.want)
		}
		if s.Attached() != "" || blk.Capacity() != 0 {
			t.Errorf("%s: a failed Attach filled the slot", tt.name)
		}
	}
	if err := s.Attach(other, "cvm-disk-3", false); err != nil {
		t.Fatal(err)
	}
	f := s.f
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Stat(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("the attached disk after the VM stopped: Stat = %v, want closed", err)
	}
	if err := s.Attach(img, "cvm-disk-4", true); !errors.Is(err, ErrSlotNotRunning) || !strings.Contains(err.Error(), "stopped") {
		t.Errorf("Attach after the VM stopped = %v, want ErrSlotNotRunning (stopped)", err)
	}
	if err := s.Detach(); !errors.Is(err, ErrSlotNotRunning) {
		t.Errorf("Detach after the VM stopped = %v, want ErrSlotNotRunning", err)
	}
	if err := s.bind(devices.NewEmptyBlock()); err == nil {
		t.Error("a stopped slot bound to a second VM")
	}
}

// Slot devices come after every other device, so the others keep their
// windows and IRQs.
func TestWindowsWithSlots(t *testing.T) {
	c := Config{Disks: []Disk{{Path: "a"}}, RNG: true, VsockUDS: "/tmp/v.sock", Slots: []*DiskSlot{NewDiskSlot(), NewDiskSlot()}}
	want := []Window{
		{KindBlock, 0, acpi.Device{Name: "V000", Base: 0xc0000000, Size: 0x1000, IRQ: 5}},
		{KindRNG, 0, acpi.Device{Name: "V001", Base: 0xc0001000, Size: 0x1000, IRQ: 6}},
		{KindVsock, 0, acpi.Device{Name: "V002", Base: 0xc0002000, Size: 0x1000, IRQ: 7}},
		{KindSlot, 0, acpi.Device{Name: "V003", Base: 0xc0003000, Size: 0x1000, IRQ: 8}},
		{KindSlot, 1, acpi.Device{Name: "V004", Base: 0xc0004000, Size: 0x1000, IRQ: 9}},
	}
	if d := cmp.Diff(want, Windows(c)); d != "" {
		t.Errorf("Windows (-want +got):\n%s", d)
	}
}

// A Config with no slots (nil or empty) has the plan it had before slots
// existed; slots change only the ACPI tables, which describe them.
func TestPlanWithSlots(t *testing.T) {
	kernel := realKernel(t)
	base := Config{Kernel: kernel, Initrd: []byte("initrd"), Cmdline: "console=ttyS0", MemorySize: 256 << 20, VCPUs: 2,
		Disks: []Disk{{Path: "a"}}, RNG: true, VsockUDS: "/tmp/v.sock"}
	plain, err := Plan(base)
	if err != nil {
		t.Fatal(err)
	}
	empty := base
	empty.Slots = []*DiskSlot{}
	p, err := Plan(empty)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(plain, p); d != "" {
		t.Errorf("plan with an empty Slots differs (-nil +empty):\n%s", d)
	}
	withSlots := base
	withSlots.Slots = []*DiskSlot{NewDiskSlot()}
	ps, err := Plan(withSlots)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps.Blobs) != len(plain.Blobs) {
		t.Fatalf("plan with a slot has %d blobs, without %d", len(ps.Blobs), len(plain.Blobs))
	}
	for i, b := range ps.Blobs {
		o := plain.Blobs[i]
		if b.Name == "acpi-tables" {
			if bytes.Equal(b.Data, o.Data) || !bytes.Contains(b.Data, []byte("V003")) {
				t.Errorf("acpi-tables with a slot: same as without (%t), or no V003 device", bytes.Equal(b.Data, o.Data))
			}
			continue
		}
		if !bytes.Equal(b.Data, o.Data) || b.GPA != o.GPA {
			t.Errorf("blob %s changed with a slot", b.Name)
		}
	}
}

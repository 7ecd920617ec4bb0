package loader

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/greatjail/cvm/vmm/plan"
)

const tinyInitrdPath = "../../testdata/measure/inputs/initrd-tiny.cpio"

func blob(t *testing.T, p *plan.Plan, name string) plan.Blob {
	t.Helper()
	for _, b := range p.Blobs {
		if b.Name == name {
			return b
		}
	}
	t.Fatalf("plan has no blob %q", name)
	return plan.Blob{}
}

func e820(addr, size uint64, typ uint32) plan.E820Entry {
	return plan.E820Entry{Addr: addr, Size: size, Type: typ}
}

func names(p *plan.Plan) []string {
	var n []string
	for _, b := range p.Blobs {
		n = append(n, b.Name)
	}
	return n
}

var (
	flat64Code = plan.Segment{Limit: 0xffffffff, Selector: 8, Type: 0xb, Present: true, S: true, L: true, G: true}
	flat32Code = plan.Segment{Limit: 0xffffffff, Selector: 8, Type: 0xb, Present: true, S: true, DB: true, G: true}
	flatData   = plan.Segment{Limit: 0xffffffff, Selector: 0x10, Type: 3, Present: true, S: true, DB: true, G: true}
	busyTSS    = plan.Segment{Limit: 0xffffffff, Selector: 0x18, Type: 0xb, Present: true, G: true}
)

func TestLinuxRealBzImage(t *testing.T) {
	kernel := realKernel(t)
	initrd, err := os.ReadFile(tinyInitrdPath)
	if err != nil {
		t.Fatal(err)
	}
	const cmdline = "console=ttyS0 panic=-1"
	for _, tt := range []struct {
		name       string
		mem        uint64
		initrdAddr uint64
		e820       []plan.E820Entry
	}{
		{"256 MiB", 256 << 20, (256<<20 - uint64(len(initrd))) &^ 0xfff, []plan.E820Entry{
			e820(0, 0x9fc00, 1), e820(0x9fc00, 0x60400, 2), e820(0x100000, 255<<20, 1),
		}},
		{"4 GiB: initrd below initrd_addr_max, RAM split around the MMIO gap", 4 << 30, (0x80000000 - uint64(len(initrd))) &^ 0xfff, []plan.E820Entry{
			e820(0, 0x9fc00, 1), e820(0x9fc00, 0x60400, 2), e820(0x100000, 0xc0000000-0x100000, 1), e820(1<<32, 1<<30, 1),
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Linux(BootOptions{Kernel: kernel, Initrd: initrd, Cmdline: cmdline, MemorySize: tt.mem, VCPUs: 2})
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Validate(); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]string{"gdt", "zero-page", "stack", "page-tables", "cmdline", "kernel", "initrd"}, names(p)); diff != "" {
				t.Errorf("blobs (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.e820, p.E820); diff != "" {
				t.Errorf("e820 (-want +got):\n%s", diff)
			}
			if p.MemorySize != tt.mem || p.VCPUs != 2 {
				t.Errorf("memory %#x, vcpus %d; want %#x, 2", p.MemorySize, p.VCPUs, tt.mem)
			}

			zp := blob(t, p, "zero-page").Data
			// The setup header is the kernel's, but for the loader's fields.
			wantHdr := bytes.Clone(kernel[0x1f1:0x26c])
			wantHdr[0x210-0x1f1] = 0xff
			le.PutUint32(wantHdr[0x218-0x1f1:], uint32(tt.initrdAddr))
			le.PutUint32(wantHdr[0x21c-0x1f1:], uint32(len(initrd)))
			le.PutUint32(wantHdr[0x228-0x1f1:], 0x20000)
			if !bytes.Equal(zp[0x1f1:0x26c], wantHdr) {
				t.Errorf("zero page header = %x, want %x", zp[0x1f1:0x26c], wantHdr)
			}
			got := map[string]uint64{
				"type_of_loader": uint64(zp[0x210]), "cmd_line_ptr": uint64(le.Uint32(zp[0x228:])),
				"ramdisk_image": uint64(le.Uint32(zp[0x218:])), "ramdisk_size": uint64(le.Uint32(zp[0x21c:])),
				"e820_entries": uint64(zp[0x1e8]), "boot_flag": uint64(le.Uint16(zp[0x1fe:])), "header": uint64(le.Uint32(zp[0x202:])),
			}
			want := map[string]uint64{
				"type_of_loader": 0xff, "cmd_line_ptr": 0x20000, "ramdisk_image": tt.initrdAddr, "ramdisk_size": uint64(len(initrd)),
				"e820_entries": uint64(len(tt.e820)), "boot_flag": 0xaa55, "header": 0x53726448,
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("zero page fields (-want +got):\n%s", diff)
			}
			var gotE820 []plan.E820Entry
			for i := range int(zp[0x1e8]) {
				e := zp[0x2d0+20*i:]
				gotE820 = append(gotE820, plan.E820Entry{Addr: le.Uint64(e), Size: le.Uint64(e[8:]), Type: le.Uint32(e[16:])})
			}
			if diff := cmp.Diff(tt.e820, gotE820); diff != "" {
				t.Errorf("zero page e820 table (-want +got):\n%s", diff)
			}

			if b := blob(t, p, "initrd"); b.GPA != tt.initrdAddr || !bytes.Equal(b.Data, initrd) {
				t.Errorf("initrd at %#x (%d bytes), want %#x (%d bytes)", b.GPA, len(b.Data), tt.initrdAddr, len(initrd))
			}
			if b := blob(t, p, "cmdline"); b.GPA != 0x20000 || string(b.Data) != cmdline+"\x00" {
				t.Errorf("cmdline at %#x = %q", b.GPA, b.Data)
			}
			if b := blob(t, p, "kernel"); b.GPA != 0x100000 || !bytes.Equal(b.Data, kernel[40*512:]) {
				t.Errorf("kernel at %#x (%d bytes), want the protected-mode kernel at 0x100000", b.GPA, len(b.Data))
			}

			gdt := blob(t, p, "gdt")
			wantGDT := "0000000000000000" + "ffff0000009baf00" + "ffff00000093cf00" + "ffff0000008b8f00"
			if got := hex.EncodeToString(gdt.Data); gdt.GPA != 0x500 || gdt.Size != 0x28 || got != wantGDT {
				t.Errorf("gdt at %#x size %#x = %s, want at 0x500 size 0x28 (with the IDT) = %s", gdt.GPA, gdt.Size, got, wantGDT)
			}

			pt := blob(t, p, "page-tables")
			if pt.GPA != 0x9000 || len(pt.Data) != 0x3000 {
				t.Fatalf("page tables at %#x, %d bytes", pt.GPA, len(pt.Data))
			}
			if got := le.Uint64(pt.Data); got != 0xa003 {
				t.Errorf("PML4[0] = %#x, want 0xa003", got)
			}
			if got := le.Uint64(pt.Data[0x1000:]); got != 0xb003 {
				t.Errorf("PDPT[0] = %#x, want 0xb003", got)
			}
			for i := range uint64(512) {
				if got := le.Uint64(pt.Data[0x2000+8*i:]); got != i<<21|0x83 {
					t.Fatalf("PD[%d] = %#x, want %#x", i, got, i<<21|0x83)
				}
			}
			if !bytes.Equal(pt.Data[8:0x1000], make([]byte, 0x1000-8)) || !bytes.Equal(pt.Data[0x1008:0x2000], make([]byte, 0x1000-8)) {
				t.Error("PML4 or PDPT has entries beyond the first")
			}

			wantBSP := plan.VCPUState{
				Mode: plan.Long64, RIP: 0x100200, RSI: 0x7000, RSP: 0x8ff0, RBP: 0x8ff0, RFLAGS: 2,
				CR0: 0x80000011, CR3: 0x9000, CR4: 0x20, EFER: 0x500,
				CS: flat64Code, DS: flatData, ES: flatData, FS: flatData, GS: flatData, SS: flatData, TR: busyTSS,
				GDT: plan.DescriptorTable{Base: 0x500, Limit: 31}, IDT: plan.DescriptorTable{Base: 0x520, Limit: 7},
			}
			if diff := cmp.Diff(wantBSP, p.BSP); diff != "" {
				t.Errorf("BSP (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLinuxPVH(t *testing.T) {
	elf := synthELF(elfOpts{memExtra: 0x3000})
	initrd := []byte("070701 pretend cpio")
	acpi := plan.Blob{Name: "rsdp", GPA: 0xe0000, Data: []byte("RSD PTR "), Size: 36, Type: plan.Normal}
	p, err := Linux(BootOptions{Kernel: elf, Initrd: initrd, Cmdline: "console=hvc0", MemorySize: 64 << 20, VCPUs: 1, Extra: []plan.Blob{acpi}})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"gdt", "start-info", "memmap", "cmdline", "rsdp", "kernel", "initrd"}, names(p)); diff != "" {
		t.Errorf("blobs (-want +got):\n%s", diff)
	}
	wantInitrd := (64<<20 - uint64(len(initrd))) &^ 0xfff
	if b := blob(t, p, "kernel"); b.GPA != 0x1000000 || b.Size != 0x3100 || len(b.Data) != 0x100 {
		t.Errorf("kernel at %#x size %#x with %d bytes, want the PT_LOAD at 0x1000000, 0x3100 with 0x100", b.GPA, b.Size, len(b.Data))
	}
	si := blob(t, p, "start-info")
	if si.GPA != 0x6000 || len(si.Data) != 0x60 {
		t.Fatalf("start_info at %#x, %d bytes", si.GPA, len(si.Data))
	}
	d := si.Data
	got := []uint64{
		uint64(le.Uint32(d[0:])), uint64(le.Uint32(d[4:])), uint64(le.Uint32(d[8:])), uint64(le.Uint32(d[12:])),
		le.Uint64(d[16:]), le.Uint64(d[24:]), le.Uint64(d[32:]), le.Uint64(d[40:]), uint64(le.Uint32(d[48:])),
		le.Uint64(d[0x40:]), le.Uint64(d[0x48:]), le.Uint64(d[0x50:]),
	}
	want := []uint64{
		0x336ec578, 1, 0, 1, // magic, version, flags, nr_modules
		0x6040, 0x20000, 0, 0x7000, 3, // modlist, cmdline, rsdp, memmap, memmap entries
		wantInitrd, uint64(len(initrd)), 0, // module 0: paddr, size, cmdline
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("start_info (-want +got):\n%s", diff)
	}
	mm := blob(t, p, "memmap")
	wantMM := []uint64{0, 0x9fc00, 1, 0x9fc00, 0x60400, 2, 0x100000, 63 << 20, 1}
	var gotMM []uint64
	for i := 0; i+24 <= len(mm.Data); i += 24 {
		gotMM = append(gotMM, le.Uint64(mm.Data[i:]), le.Uint64(mm.Data[i+8:]), uint64(le.Uint32(mm.Data[i+16:])))
	}
	if diff := cmp.Diff(wantMM, gotMM); mm.GPA != 0x7000 || diff != "" {
		t.Errorf("memmap at %#x (-want +got):\n%s", mm.GPA, diff)
	}
	if got := hex.EncodeToString(blob(t, p, "gdt").Data[8:16]); got != "ffff0000009bcf00" {
		t.Errorf("PVH code descriptor = %s, want ffff0000009bcf00 (0xc09b)", got)
	}
	wantBSP := plan.VCPUState{
		Mode: plan.Protected32, RIP: 0x1000123, RBX: 0x6000, RFLAGS: 2, CR0: 0x11,
		CS: flat32Code, DS: flatData, ES: flatData, FS: flatData, GS: flatData, SS: flatData, TR: busyTSS,
		GDT: plan.DescriptorTable{Base: 0x500, Limit: 31}, IDT: plan.DescriptorTable{Base: 0x520, Limit: 7},
	}
	if diff := cmp.Diff(wantBSP, p.BSP); diff != "" {
		t.Errorf("BSP (-want +got):\n%s", diff)
	}

	// Without an initrd there is no module.
	p, err = Linux(BootOptions{Kernel: elf, MemorySize: 64 << 20, VCPUs: 1})
	if err != nil {
		t.Fatal(err)
	}
	if d := blob(t, p, "start-info").Data; le.Uint32(d[12:]) != 0 || le.Uint64(d[16:]) != 0 {
		t.Errorf("start_info without initrd: nr_modules %d, modlist %#x; want 0, 0", le.Uint32(d[12:]), le.Uint64(d[16:]))
	}
}

func TestLinuxErrors(t *testing.T) {
	// The synthetic bzImage needs memory up to 0x1400000 (pref_address
	// 16 MiB + init_size 4 MiB).
	bz := synthBzImage(nil)
	lowAddrMax := synthBzImage(func(b []byte) { le.PutUint32(b[0x22c:], 0x15fffff) })
	mb := func(n int) []byte { return make([]byte, n<<20) }
	tests := []struct {
		name string
		o    BootOptions
		want error
	}{
		{"fits exactly", BootOptions{Kernel: bz, Initrd: mb(1), MemorySize: 0x1500000, VCPUs: 1}, nil},
		{"kernel does not fit", BootOptions{Kernel: bz, MemorySize: 0x13ff000, VCPUs: 1}, ErrTooSmall},
		{"real kernel in 64 MiB", BootOptions{Kernel: nil, MemorySize: 64 << 20, VCPUs: 1}, ErrTooSmall},
		{"initrd does not fit", BootOptions{Kernel: bz, Initrd: mb(2), MemorySize: 0x1500000, VCPUs: 1}, ErrTooSmall},
		{"memory below 1 MiB", BootOptions{Kernel: bz, MemorySize: 0x80000, VCPUs: 1}, ErrTooSmall},
		{"initrd above initrd_addr_max", BootOptions{Kernel: lowAddrMax, Initrd: mb(3), MemorySize: 256 << 20, VCPUs: 1}, ErrInitrdTooLarge},
		{"initrd below initrd_addr_max", BootOptions{Kernel: lowAddrMax, Initrd: mb(2), MemorySize: 256 << 20, VCPUs: 1}, nil},
		{"cmdline of 2047 bytes", BootOptions{Kernel: bz, Cmdline: string(bytes.Repeat([]byte("x"), 2047)), MemorySize: 64 << 20, VCPUs: 1}, nil},
		{"cmdline of 2048 bytes", BootOptions{Kernel: bz, Cmdline: string(bytes.Repeat([]byte("x"), 2048)), MemorySize: 64 << 20, VCPUs: 1}, ErrCmdline},
		{"cmdline above cmdline_size", BootOptions{Kernel: synthBzImage(func(b []byte) { le.PutUint32(b[0x238:], 10) }), Cmdline: "console=ttyS0", MemorySize: 64 << 20, VCPUs: 1}, ErrCmdline},
		{"cmdline with NUL", BootOptions{Kernel: bz, Cmdline: "a\x00b", MemorySize: 64 << 20, VCPUs: 1}, ErrCmdline},
		{"bad kernel", BootOptions{Kernel: []byte("nope"), MemorySize: 64 << 20, VCPUs: 1}, ErrFormat},
		{"extra over the zero page", BootOptions{Kernel: bz, MemorySize: 64 << 20, VCPUs: 1,
			Extra: []plan.Blob{{Name: "acpi", GPA: 0x7800, Size: 16, Type: plan.Normal}}}, plan.ErrInvalid},
		{"no vcpus", BootOptions{Kernel: bz, MemorySize: 64 << 20}, plan.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.o.Kernel == nil {
				tt.o.Kernel = realKernel(t)
			}
			_, err := Linux(tt.o)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Linux() = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestLinuxPages(t *testing.T) {
	p, err := Linux(BootOptions{Kernel: synthBzImage(nil), Initrd: []byte{1, 2, 3}, Cmdline: "x", MemorySize: 64 << 20, VCPUs: 1})
	if err != nil {
		t.Fatal(err)
	}
	type pg struct {
		GPA  uint64
		Type plan.PageType
	}
	var got []pg
	if err := p.Pages(func(gpa uint64, typ plan.PageType, _ []byte) error { got = append(got, pg{gpa, typ}); return nil }); err != nil {
		t.Fatal(err)
	}
	want := []pg{{0, plan.Normal}, {0x7000, plan.Normal}, {0x8000, plan.Zero}, {0x9000, plan.Normal}, {0xa000, plan.Normal}, {0xb000, plan.Normal},
		{0x20000, plan.Normal}, {0x100000, plan.Normal}, {64<<20 - 0x1000, plan.Normal}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Pages() (-want +got):\n%s", diff)
	}
}

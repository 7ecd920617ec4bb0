package loader

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

var le = binary.LittleEndian

// bytesEqual compares byte slices fast (cmp's element-wise default takes
// seconds on a kernel) and reports only whether they differ.
var bytesEqual = cmp.Comparer(bytes.Equal)

const realKernelPath = "../../.cache/inputs/vmlinuz-6.1.0-56-cloud-amd64"

// realKernel returns the Debian 12 cloud kernel, or skips the test.
func realKernel(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(realKernelPath)
	if errors.Is(err, os.ErrNotExist) {
		t.Skipf("test input %s missing: run scripts/fetch-test-inputs.sh", filepath.Base(realKernelPath))
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// synthBzImage builds a minimal bzImage: 4 setup sectors after the boot
// sector, then a 0x400-byte protected-mode kernel of 0xcc bytes.
func synthBzImage(mod func(b []byte)) []byte {
	b := make([]byte, 5*512+0x400)
	b[0x1f1] = 4
	le.PutUint16(b[0x1fe:], 0xaa55)
	b[0x200], b[0x201] = 0xeb, 0x6a // header ends at 0x26c
	copy(b[0x202:], "HdrS")
	le.PutUint16(b[0x206:], 0x020f)
	b[0x211] = 1
	le.PutUint32(b[0x22c:], 0x7fffffff)
	le.PutUint32(b[0x230:], 0x200000)
	b[0x234] = 1
	le.PutUint16(b[0x236:], 0x7f)
	le.PutUint32(b[0x238:], 2047)
	le.PutUint64(b[0x258:], 0x1000000)
	le.PutUint32(b[0x260:], 0x400000)
	for i := 5 * 512; i < len(b); i++ {
		b[i] = 0xcc
	}
	if mod != nil {
		mod(b)
	}
	return b
}

type elfOpts struct {
	noNote   bool
	desc     []byte // PVH note descriptor; default 4-byte 0x1000123
	memExtra uint64 // bss bytes after the loaded data
	mod      func(b []byte)
}

// synthELF builds a minimal x86-64 ELF executable: one PT_NOTE with a
// Xen PHYS32_ENTRY note (unless noNote) and one PT_LOAD of 0x100 bytes
// at physical address 0x1000000.
func synthELF(o elfOpts) []byte {
	desc := o.desc
	if desc == nil {
		desc = le.AppendUint32(nil, 0x1000123)
	}
	var note []byte
	note = le.AppendUint32(note, 4) // namesz "Xen\0"
	note = le.AppendUint32(note, uint32(len(desc)))
	note = le.AppendUint32(note, 18)
	note = append(note, "Xen\x00"...)
	note = append(note, desc...)
	for len(note)%4 != 0 {
		note = append(note, 0)
	}
	// Another note first, to exercise the note walk.
	other := append(le.AppendUint32(le.AppendUint32(le.AppendUint32(nil, 6), 2), 1), "Linux\x00\x00\x00\x01\x02\x00\x00"...)
	note = append(other, note...)
	if o.noNote {
		note = nil
	}
	load := make([]byte, 0x100)
	for i := range load {
		load[i] = byte(i)
	}
	const phoff = 64
	nph := 2
	if o.noNote {
		nph = 1
	}
	noteOff := uint64(phoff + nph*56)
	loadOff := noteOff + uint64(len(note))
	b := make([]byte, 64, int(loadOff)+len(load))
	copy(b, "\x7fELF\x02\x01\x01")
	le.PutUint16(b[16:], 2)  // ET_EXEC
	le.PutUint16(b[18:], 62) // EM_X86_64
	le.PutUint32(b[20:], 1)
	le.PutUint64(b[24:], 0xffffffff81000000) // e_entry (virtual; unused)
	le.PutUint64(b[0x20:], phoff)
	le.PutUint16(b[0x34:], 64)
	le.PutUint16(b[0x36:], 56)
	le.PutUint16(b[0x38:], uint16(nph))
	phdr := func(typ uint32, off, paddr, filesz, memsz, align uint64) {
		p := make([]byte, 56)
		le.PutUint32(p[0:], typ)
		le.PutUint32(p[4:], 5)
		le.PutUint64(p[8:], off)
		le.PutUint64(p[16:], paddr+0xffffffff80000000)
		le.PutUint64(p[24:], paddr)
		le.PutUint64(p[32:], filesz)
		le.PutUint64(p[40:], memsz)
		le.PutUint64(p[48:], align)
		b = append(b, p...)
	}
	phdr(1, loadOff, 0x1000000, uint64(len(load)), uint64(len(load))+o.memExtra, 0x200000)
	if !o.noNote {
		phdr(4, noteOff, 0, uint64(len(note)), 0, 4)
		b = append(b, note...)
	}
	b = append(b, load...)
	if o.mod != nil {
		o.mod(b)
	}
	return b
}

func TestParseRealBzImage(t *testing.T) {
	b := realKernel(t)
	k, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	want := &Kernel{
		Format: BzImage,
		SetupHeader: &SetupHeader{
			SetupSects: 39, Version: 0x020f, LoadFlags: 1, CmdlineSize: 2047,
			InitrdAddrMax: 0x7fffffff, KernelAlignment: 0x200000, RelocatableKernel: true,
			XLoadFlags: 0x7f, PrefAddress: 0x1000000, InitSize: 53968896,
		},
		Entry64:  0x100200,
		Segments: []Segment{{GPA: 0x100000, Data: b[40*512:], MemSize: uint64(len(b) - 40*512)}},
	}
	if diff := cmp.Diff(want, k, cmpopts.IgnoreFields(SetupHeader{}, "Raw"), bytesEqual); diff != "" {
		t.Errorf("Parse(%s) mismatch (-want +got):\n%s", filepath.Base(realKernelPath), diff)
	}
	if k.SetupHeader.XLoadFlags&xlfKernel64 == 0 {
		t.Error("XLF_KERNEL_64 clear")
	}
	if got, want := k.SetupHeader.Raw, b[0x1f1:0x26c]; !cmp.Equal(got, want) {
		t.Errorf("Raw = %d bytes, want the %d header bytes [0x1f1, 0x26c)", len(got), len(want))
	}
}

func TestParseSynthetic(t *testing.T) {
	bz := synthBzImage(nil)
	elf := synthELF(elfOpts{memExtra: 0x1000})
	elf8 := synthELF(elfOpts{desc: le.AppendUint64(nil, 0x2000000)})
	loadOff := len(elf) - 0x100
	tests := []struct {
		name string
		in   []byte
		want *Kernel
	}{
		{"bzImage", bz, &Kernel{
			Format: BzImage,
			SetupHeader: &SetupHeader{
				SetupSects: 4, Version: 0x020f, LoadFlags: 1, CmdlineSize: 2047,
				InitrdAddrMax: 0x7fffffff, KernelAlignment: 0x200000, RelocatableKernel: true,
				XLoadFlags: 0x7f, PrefAddress: 0x1000000, InitSize: 0x400000, Raw: bz[0x1f1:0x26c],
			},
			Entry64:  0x100200,
			Segments: []Segment{{GPA: 0x100000, Data: bz[5*512:], MemSize: 0x400}},
		}},
		{"bzImage setup_sects 0 means 4", synthBzImage(func(b []byte) { b[0x1f1] = 0 }), nil},
		{"elf pvh", elf, &Kernel{
			Format:   ELFPVH,
			PVHEntry: 0x1000123,
			Segments: []Segment{{GPA: 0x1000000, Data: elf[loadOff:], MemSize: 0x1100}},
		}},
		{"elf pvh 8-byte entry", elf8, &Kernel{
			Format:   ELFPVH,
			PVHEntry: 0x2000000,
			Segments: []Segment{{GPA: 0x1000000, Data: elf8[len(elf8)-0x100:], MemSize: 0x100}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if tt.want == nil {
				if got.SetupHeader.SetupSects != 0 || len(got.Segments[0].Data) != 0x400 {
					t.Errorf("Parse() = sects %d, %d kernel bytes; want the kernel after 4 setup sectors", got.SetupHeader.SetupSects, len(got.Segments[0].Data))
				}
				return
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Parse() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	bz := synthBzImage(nil)
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrFormat},
		{"garbage", []byte("this is not a kernel, just some text that is long enough to look at"), ErrFormat},
		{"bzImage header truncated", bz[:0x250], ErrFormat},
		{"bzImage without kernel", bz[:5*512], ErrFormat},
		{"bzImage truncated inside a long header", synthBzImage(func(b []byte) { b[0x201] = 0x8e })[:0x280], ErrFormat},
		{"bzImage kernel shorter than the entry", bz[:5*512+0x100], ErrFormat},
		{"bzImage bad boot flag", synthBzImage(func(b []byte) { b[0x1fe] = 0 }), ErrFormat},
		{"bzImage protocol 2.11", synthBzImage(func(b []byte) { le.PutUint16(b[0x206:], 0x020b) }), ErrUnsupported},
		{"bzImage no 64-bit entry", synthBzImage(func(b []byte) { le.PutUint16(b[0x236:], 0x7e) }), ErrUnsupported},
		{"zImage", synthBzImage(func(b []byte) { b[0x211] = 0 }), ErrUnsupported},
		{"bzImage short header", synthBzImage(func(b []byte) { b[0x201] = 0x20 }), ErrFormat},
		{"bzImage alignment not a power of two", synthBzImage(func(b []byte) { le.PutUint32(b[0x230:], 0x300000) }), ErrFormat},
		{"bzImage init_size 0", synthBzImage(func(b []byte) { le.PutUint32(b[0x260:], 0) }), ErrFormat},
		{"bzImage setup past end", synthBzImage(func(b []byte) { b[0x1f1] = 200 }), ErrFormat},
		{"elf without pvh note", synthELF(elfOpts{noNote: true}), ErrNoPVH},
		{"elf truncated header", synthELF(elfOpts{})[:40], ErrFormat},
		{"elf truncated segment", func() []byte { b := synthELF(elfOpts{}); return b[:len(b)-1] }(), ErrFormat},
		{"elf 32-bit", synthELF(elfOpts{mod: func(b []byte) { b[4] = 1 }}), ErrUnsupported},
		{"elf big-endian", synthELF(elfOpts{mod: func(b []byte) { b[5] = 2 }}), ErrUnsupported},
		{"elf not x86-64", synthELF(elfOpts{mod: func(b []byte) { le.PutUint16(b[18:], 183) }}), ErrUnsupported},
		{"elf phdrs out of bounds", synthELF(elfOpts{mod: func(b []byte) { le.PutUint64(b[0x20:], 1<<62) }}), ErrFormat},
		{"elf phoff overflow", synthELF(elfOpts{mod: func(b []byte) { le.PutUint64(b[0x20:], ^uint64(0)) }}), ErrFormat},
		{"elf no phdrs", synthELF(elfOpts{mod: func(b []byte) { le.PutUint16(b[0x38:], 0) }}), ErrFormat},
		{"elf bad phentsize", synthELF(elfOpts{mod: func(b []byte) { le.PutUint16(b[0x36:], 32) }}), ErrFormat},
		{"elf segment offset overflow", synthELF(elfOpts{mod: func(b []byte) { le.PutUint64(b[64+8:], ^uint64(0)-4) }}), ErrFormat},
		{"elf filesz > memsz", synthELF(elfOpts{mod: func(b []byte) { le.PutUint64(b[64+40:], 1) }}), ErrFormat},
		{"elf segment beyond address limit", synthELF(elfOpts{mod: func(b []byte) { le.PutUint64(b[64+24:], ^uint64(0)-0x10) }}), ErrFormat},
		{"elf huge bss", synthELF(elfOpts{memExtra: 1 << 40}), ErrFormat},
		{"elf note overruns segment", synthELF(elfOpts{mod: func(b []byte) { le.PutUint32(b[64+2*56+24+4:], 1<<31) }}), ErrFormat},
		{"elf pvh note of 2 bytes", synthELF(elfOpts{desc: []byte{1, 2}}), ErrFormat},
		{"elf pvh entry above 4 GiB", synthELF(elfOpts{desc: le.AppendUint64(nil, 1<<32)}), ErrFormat},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := Parse(tt.in)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Parse() = %+v, %v; want error %v", k, err, tt.want)
			}
		})
	}
}

func TestParseTruncatedRealKernel(t *testing.T) {
	b := realKernel(t)
	for _, n := range []int{0, 0x1f0, 0x263, 0x264, 0x1000, 40 * 512, 40*512 + 0x200} {
		if _, err := Parse(b[:n]); !errors.Is(err, ErrFormat) {
			t.Errorf("Parse(first %#x bytes) = %v, want ErrFormat", n, err)
		}
	}
}

func TestFormatString(t *testing.T) {
	got := []string{BzImage.String(), ELFPVH.String(), Format(0).String()}
	if diff := cmp.Diff([]string{"bzImage", "elf-pvh", "Format(0)"}, got); diff != "" {
		t.Error(diff)
	}
}

package tdxmeasure_test

import (
	"bufio"
	"bytes"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/greatjail/cvm/attestation/tdxmeasure"
)

func unhex48(t testing.TB, s string) [48]byte {
	t.Helper()
	var d [48]byte
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 48 {
		t.Fatalf("bad 48-byte hex %q: %v", s, err)
	}
	copy(d[:], b)
	return d
}

// Digests computed independently with Python's hashlib.
const (
	hexExtendZeroZero  = "f57bb7ed82c6ae4a29e6c9879338c592c7d42a39135583e8ccbe3940f2344b0eb6eb8503db0ffd6a39ddd00cd07d8317" // sha384(96 zero bytes)
	hexSHA384abc       = "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7"
	hexExtendZeroAbc   = "93732e3733514a841c982cfa75ea76ab55fe011acb9cd980ef4523913c65be1b0998e04d77f8c174f81a82151619ca40" // sha384(48 zeros ‖ sha384("abc"))
	hexCallingApp      = "77a0dab2312b4e1e57a84d865a21e5b2ee8d677a21012ada819d0a98988078d3d740f6346bfe0abaa938ca20439a8d71"
	hexSeparator       = "394341b7182cd227c5c6b07ef8000cdfd86136c4292b8e576573ad7ed9ae41019f5818b4b971c9effc60e1ad9f1289f0"
	hexExitBS          = "214b0bef1379756011344877743fdc2a5382bac6e70362d624ccf3f654407c1b4badf7d8f9295dd3dabdef65b27677e0"
	hexExitBSDone      = "0a2e01c85deae718a530ad8c6d20a84009babe6c8989269e950d8cf440c6e997695e64d455c4174a652cd080f6230b74"
	hexOptsConsoleInrd = "1d26f8aff8992fdfc37e88b4fdf4a1a0ebb815a2ce925ea3046b3ba1f24a933e75a163af2af579268c20ca5f476f5386" // sha384(UTF-16LE "console=ttyS0 initrd=initrd\0")
)

func TestExtend(t *testing.T) {
	zero := [48]byte{}
	abc := sha512.Sum384([]byte("abc"))
	tests := []struct {
		name        string
		reg, digest [48]byte
		want        string
	}{
		{"zero, zero", zero, zero, hexExtendZeroZero},
		{"zero, sha384(abc)", zero, abc, hexExtendZeroAbc},
	}
	for _, tc := range tests {
		if got := tdxmeasure.Extend(tc.reg, tc.digest); got != unhex48(t, tc.want) {
			t.Errorf("Extend(%s) = %x, want %s", tc.name, got, tc.want)
		}
	}
	if got := hex.EncodeToString(abc[:]); got != hexSHA384abc {
		t.Fatalf("sha384(abc) = %s", got)
	}

	var r tdxmeasure.Replay
	if r.Value() != zero {
		t.Errorf("empty Replay.Value() = %x, want zero", r.Value())
	}
	r.Measure("abc", []byte("abc"))
	r.Extend("zero", zero)
	want := tdxmeasure.Extend(unhex48(t, hexExtendZeroAbc), zero)
	if r.Value() != want {
		t.Errorf("Replay.Value() = %x, want %x", r.Value(), want)
	}
	if diff := cmp.Diff([]tdxmeasure.Event{{"abc", abc}, {"zero", zero}}, r.Events); diff != "" {
		t.Errorf("Replay.Events (-want +got):\n%s", diff)
	}
}

func TestLoadOptionsBytes(t *testing.T) {
	u16 := func(s string) []byte { // by hand: each ASCII byte then a zero byte
		var b []byte
		for _, c := range []byte(s) {
			b = append(b, c, 0)
		}
		return b
	}
	tests := []struct {
		cmdline string
		initrd  bool
		want    []byte
		wantErr bool
	}{
		{"console=ttyS0", false, []byte{'c', 0, 'o', 0, 'n', 0, 's', 0, 'o', 0, 'l', 0, 'e', 0, '=', 0, 't', 0, 't', 0, 'y', 0, 'S', 0, '0', 0, 0, 0}, false},
		{"console=ttyS0", true, append(u16("console=ttyS0 initrd=initrd"), 0, 0), false},
		{"", true, append(u16(" initrd=initrd"), 0, 0), false},
		{"", false, nil, false},
		{"a b", false, []byte{'a', 0, ' ', 0, 'b', 0, 0, 0}, false},
		{"caf\xc3\xa9", false, nil, true}, // UTF-8: OVMF would widen the bytes, refused
		{"a\x00b", false, nil, true},
	}
	for _, tc := range tests {
		got, err := tdxmeasure.LoadOptionsBytes(tc.cmdline, tc.initrd)
		if (err != nil) != tc.wantErr || (err != nil && !errors.Is(err, tdxmeasure.ErrUnsupportedBoot)) {
			t.Errorf("LoadOptionsBytes(%q, %v) error = %v, want error %v wrapping ErrUnsupportedBoot", tc.cmdline, tc.initrd, err, tc.wantErr)
			continue
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("LoadOptionsBytes(%q, %v) (-want +got):\n%s", tc.cmdline, tc.initrd, diff)
		}
	}
	got, _ := tdxmeasure.LoadOptionsBytes("console=ttyS0", true)
	if d := sha512.Sum384(got); d != unhex48(t, hexOptsConsoleInrd) {
		t.Errorf("sha384(load options) = %x, want %s", d, hexOptsConsoleInrd)
	}
}

// synthKernel is a 0x1000-byte stand-in for a bzImage's setup header:
// "HdrS", the given protocol, loadflags, xloadflags and initrd_addr_max.
func synthKernel(protocol uint16, loadflags byte, xloadflags uint16, initrdAddrMax uint32) []byte {
	k := make([]byte, 0x1000)
	for i := range k {
		k[i] = byte(i * 13)
	}
	le := binary.LittleEndian
	copy(k[0x202:], "HdrS")
	le.PutUint16(k[0x206:], protocol)
	k[0x211] = loadflags
	le.PutUint32(k[0x22c:], initrdAddrMax)
	le.PutUint16(k[0x236:], xloadflags)
	// Fields QEMU writes start out as a file has them.
	k[0x210] = 0
	le.PutUint32(k[0x218:], 0)
	le.PutUint32(k[0x21c:], 0)
	le.PutUint32(k[0x224:], 0)
	le.PutUint32(k[0x228:], 0)
	return k
}

func TestPatchKernel(t *testing.T) {
	const mib, gib = 1 << 20, 1 << 30
	type write struct {
		off int
		b   []byte
	}
	// The header writes of a loaded-high kernel, protocol >= 2.02: loader
	// 0xB0, loadflags |= 0x80, heap_end_ptr 0x20000-0x10000-0x200 = 0xFE00
	// (u16), cmd_line_ptr 0x20000.
	high := func(loadflags byte) []write {
		return []write{{0x210, []byte{0xb0}}, {0x211, []byte{loadflags | 0x80}}, {0x224, []byte{0x00, 0xfe}}, {0x228, []byte{0x00, 0x00, 0x02, 0x00}}}
	}
	ramdisk := func(addr, size uint32) write {
		b := binary.LittleEndian.AppendUint32(nil, addr)
		return write{0x218, binary.LittleEndian.AppendUint32(b, size)}
	}
	tests := []struct {
		name      string
		kernel    []byte
		initrd    int
		mem       uint64
		cmdline   string
		writes    []write
		wantError bool
	}{
		{"no initrd, memory irrelevant", synthKernel(0x20f, 0x01, 0x40, 0x7fffffff), 0, 0, "console=ttyS0", high(0x01), false},
		// 2 GiB RAM: low RAM 0x80000000; max 0x80000000-0x28000-1 = 0x7FFD7FFF;
		// (0x7FFD7FFF-0x100000) & ~0xFFF = 0x7FED7000.
		{"2G, 1M initrd, above-4G capable", synthKernel(0x20f, 0x01, 0x40, 0x7fffffff), mib, 2 * gib, "", append(high(0x01), ramdisk(0x7fed7000, mib)), false},
		// 4 GiB RAM >= 0xB0000000: low RAM split at 0x80000000, same address.
		{"4G", synthKernel(0x20f, 0x01, 0x40, 0x7fffffff), mib, 4 * gib, "", append(high(0x01), ramdisk(0x7fed7000, mib)), false},
		// 0xAFFFF000 bytes: all low; max 0xAFFFF000-0x28000-1 = 0xAFFD6FFF;
		// (0xAFFD6FFF-0x100000) & ~0xFFF = 0xAFED6000.
		{"2.75G-4K", synthKernel(0x20f, 0x01, 0x40, 0x7fffffff), mib, 0xb0000000 - 0x1000, "", append(high(0x01), ramdisk(0xafed6000, mib)), false},
		// 1 GiB: max 0x3FFD7FFF; (0x3FFD7FFF-0x100000) & ~0xFFF = 0x3FED7000.
		{"1G", synthKernel(0x20f, 0x01, 0x40, 0x7fffffff), mib, gib, "", append(high(0x01), ramdisk(0x3fed7000, mib)), false},
		// No XLF_CAN_BE_LOADED_ABOVE_4G: initrd_addr_max 0x37FFFFFF is lower
		// than low RAM; (0x37FFFFFF-0x100000) & ~0xFFF = 0x37EFF000.
		{"1G, initrd_addr_max", synthKernel(0x20f, 0x01, 0, 0x37ffffff), mib, gib, "", append(high(0x01), ramdisk(0x37eff000, mib)), false},
		// Protocol 2.02 < 2.03: initrd_addr_max is not read, 0x37FFFFFF assumed.
		{"protocol 2.02", synthKernel(0x202, 0x01, 0x40, 0xffffffff), mib, 4 * gib, "", append(high(0x01), ramdisk(0x37eff000, mib)), false},
		// Not loaded high: real mode at 0x90000, command line at 0x9A000;
		// heap_end_ptr 0x9A000-0x90000-0x200 = 0x9E00.
		{"not loaded high", synthKernel(0x20f, 0x00, 0x40, 0x7fffffff), 0, 0, "", []write{{0x210, []byte{0xb0}}, {0x211, []byte{0x80}}, {0x224, []byte{0x00, 0x9e}}, {0x228, []byte{0x00, 0xa0, 0x09, 0x00}}}, false},
		// Protocol 2.01: old command-line protocol, magic 0xA33F at 0x20 and
		// offset 0x9A000-0x90000 at 0x22 (2.01 has no LOADED_HIGH use here).
		{"protocol 2.01", synthKernel(0x201, 0x00, 0, 0), 0, 0, "", []write{{0x20, []byte{0x3f, 0xa3, 0x00, 0xa0}}, {0x210, []byte{0xb0}}, {0x211, []byte{0x80}}, {0x224, []byte{0x00, 0x9e}}}, false},
		{"vga= not modelled", synthKernel(0x20f, 0x01, 0x40, 0), 0, 0, "vga=791", nil, true},
		{"no HdrS", make([]byte, 0x1000), 0, 0, "", nil, true},
		{"too short", []byte("MZ"), 0, 0, "", nil, true},
		{"initrd without memory size", synthKernel(0x20f, 0x01, 0x40, 0), mib, 0, "", nil, true},
		{"initrd too large", synthKernel(0x20f, 0x01, 0x40, 0), gib, gib, "", nil, true},
		{"memory below ACPI data", synthKernel(0x20f, 0x01, 0x40, 0), mib, 0x28000, "", nil, true},
		{"protocol 1.x with initrd", synthKernel(0x100, 0x01, 0, 0), mib, gib, "", nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			orig := append([]byte(nil), tc.kernel...)
			got, err := tdxmeasure.PatchKernel(tc.kernel, tc.initrd, tc.mem, tc.cmdline)
			if diff := cmp.Diff(orig, tc.kernel); diff != "" {
				t.Fatalf("PatchKernel modified its input:\n%s", diff)
			}
			if tc.wantError {
				if !errors.Is(err, tdxmeasure.ErrUnsupportedBoot) {
					t.Fatalf("PatchKernel() error = %v, want ErrUnsupportedBoot", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := append([]byte(nil), orig...)
			for _, w := range tc.writes {
				copy(want[w.off:], w.b)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("PatchKernel() (-want +got):\n%s", diff)
			}
		})
	}
}

// TestPatchKernelMemoryClasses mirrors dstack-mr's test of the same name:
// the initrd address, hence RTMR1, is the same for 2 GiB and for every size
// from 0xB0000000 up, and differs just below each.
func TestPatchKernelMemoryClasses(t *testing.T) {
	k := synthKernel(0x20c, 0x01, 0x40, 0)
	addr := func(mem uint64) uint32 {
		p, err := tdxmeasure.PatchKernel(k, 0x100000, mem, "")
		if err != nil {
			t.Fatal(err)
		}
		return binary.LittleEndian.Uint32(p[0x218:])
	}
	below2G, at2G := addr(0x80000000-0x1000), addr(0x80000000)
	belowHigh, atHigh, aboveHigh := addr(0xb0000000-0x1000), addr(0xb0000000), addr(0xb0000000+0x40000000)
	if below2G == at2G || belowHigh == atHigh || at2G != atHigh || atHigh != aboveHigh {
		t.Errorf("initrd addresses: 2G-4K %#x, 2G %#x, 2.75G-4K %#x, 2.75G %#x, 3.75G %#x", below2G, at2G, belowHigh, atHigh, aboveHigh)
	}
}

func TestRTMR1Events(t *testing.T) {
	img := peImage{ndirs: 16, certSize: 0x40, tail: 0x1000}.build()
	// A PE that also carries a Linux setup header, so both modes apply.
	copy(img[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(img[0x206:], 0x20f)
	img[0x211] = 0x01
	binary.LittleEndian.PutUint16(img[0x236:], 0x40)
	b := tdxmeasure.Boot{Kernel: img, Initrd: []byte("initrd"), Cmdline: "console=ttyS0", MemorySize: 1 << 30, Stub: tdxmeasure.StubCC}

	rawHash, err := tdxmeasure.Authenticode(img)
	if err != nil {
		t.Fatal(err)
	}
	patched, err := tdxmeasure.PatchKernel(img, len(b.Initrd), b.MemorySize, b.Cmdline)
	if err != nil {
		t.Fatal(err)
	}
	patchedHash, err := tdxmeasure.Authenticode(patched)
	if err != nil {
		t.Fatal(err)
	}
	if rawHash == patchedHash {
		t.Fatal("the patched and raw kernels hash alike; the test kernel does not exercise the patch")
	}
	fixed := []tdxmeasure.Event{
		{"EV_EFI_ACTION: Calling EFI Application from Boot Option", unhex48(t, hexCallingApp)},
		{"EV_SEPARATOR", unhex48(t, hexSeparator)},
		{"EV_EFI_ACTION: Exit Boot Services Invocation", unhex48(t, hexExitBS)},
		{"EV_EFI_ACTION: Exit Boot Services Returned with Success", unhex48(t, hexExitBSDone)},
	}
	for _, tc := range []struct {
		mode tdxmeasure.KernelImage
		want tdxmeasure.Event
	}{
		{tdxmeasure.KernelPatched, tdxmeasure.Event{"EV_EFI_BOOT_SERVICES_APPLICATION: kernel Authenticode SHA-384 (as patched by QEMU)", patchedHash}},
		{tdxmeasure.KernelRaw, tdxmeasure.Event{"EV_EFI_BOOT_SERVICES_APPLICATION: kernel Authenticode SHA-384 (raw image)", rawHash}},
	} {
		b.KernelImage = tc.mode
		r, err := tdxmeasure.RTMR1(b)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(append([]tdxmeasure.Event{tc.want}, fixed...), r.Events); diff != "" {
			t.Errorf("RTMR1(mode %d) events (-want +got):\n%s", tc.mode, diff)
		}
		want := [48]byte{}
		for _, e := range r.Events {
			want = sha512.Sum384(append(want[:], e.Digest[:]...))
		}
		if r.Value() != want {
			t.Errorf("RTMR1(mode %d) = %x, want %x", tc.mode, r.Value(), want)
		}
	}

	b.KernelImage = 0
	if _, err := tdxmeasure.RTMR1(b); !errors.Is(err, tdxmeasure.ErrUnsupportedBoot) {
		t.Errorf("RTMR1(no mode) error = %v, want ErrUnsupportedBoot", err)
	}
	b.Kernel = make([]byte, 0x2000) // not PE, and no setup header either
	copy(b.Kernel[0x202:], "HdrS")
	for _, mode := range []tdxmeasure.KernelImage{tdxmeasure.KernelRaw, tdxmeasure.KernelPatched} {
		b.KernelImage = mode
		if _, err := tdxmeasure.RTMR1(b); !errors.Is(err, tdxmeasure.ErrNotPE) {
			t.Errorf("RTMR1(not PE, mode %d) error = %v, want ErrNotPE", mode, err)
		}
	}
}

func TestRTMR2Events(t *testing.T) {
	initrd := []byte("an initrd")
	optsEvent := func(s string) tdxmeasure.Event {
		var b []byte
		for _, c := range []byte(s) {
			b = append(b, c, 0)
		}
		return tdxmeasure.Event{Name: "EV_EVENT_TAG: LOADED_IMAGE::LoadOptions", Digest: sha512.Sum384(append(b, 0, 0))}
	}
	initrdEvent := tdxmeasure.Event{Name: "EV_EVENT_TAG: Linux initrd", Digest: sha512.Sum384(initrd)}
	tests := []struct {
		name    string
		cmdline string
		initrd  []byte
		stub    tdxmeasure.Stub
		want    []tdxmeasure.Event
	}{
		{"cmdline and initrd", "console=ttyS0", initrd, tdxmeasure.StubCC, []tdxmeasure.Event{{Name: "EV_EVENT_TAG: LOADED_IMAGE::LoadOptions", Digest: unhex48(t, hexOptsConsoleInrd)}, initrdEvent}},
		{"cmdline only", "console=ttyS0", nil, tdxmeasure.StubCC, []tdxmeasure.Event{optsEvent("console=ttyS0")}},
		{"initrd only", "", initrd, tdxmeasure.StubCC, []tdxmeasure.Event{optsEvent(" initrd=initrd"), initrdEvent}},
		{"neither", "", nil, tdxmeasure.StubCC, nil},
		{"stub without CC measurement", "console=ttyS0", initrd, tdxmeasure.StubNone, nil},
	}
	for _, tc := range tests {
		r, err := tdxmeasure.RTMR2(tdxmeasure.Boot{Cmdline: tc.cmdline, Initrd: tc.initrd, Stub: tc.stub})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if diff := cmp.Diff(tc.want, r.Events); diff != "" {
			t.Errorf("%s: RTMR2 events (-want +got):\n%s", tc.name, diff)
		}
	}
	if _, err := tdxmeasure.RTMR2(tdxmeasure.Boot{Cmdline: "x"}); !errors.Is(err, tdxmeasure.ErrUnsupportedBoot) {
		t.Errorf("RTMR2(no stub mode) error = %v, want ErrUnsupportedBoot", err)
	}
}

// TestFixedEventsMatchRealLog checks RTMR1's fixed events against the RTMR1
// events of a real TDX boot's CCEL log (testdata/README.md): same digests,
// and the same relative order.
func TestFixedEventsMatchRealLog(t *testing.T) {
	f, err := os.Open(filepath.Join("testdata", "ccel-cos113-tdx-rtmr1.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var logged []string // digests of the log's EV_EFI_ACTION and EV_SEPARATOR events, in order
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		if len(fields) != 5 {
			t.Fatalf("bad line %q", sc.Text())
		}
		typ, digest, data := fields[2], fields[3], fields[4]
		if typ != "0x80000007" && typ != "0x00000004" {
			continue
		}
		raw, err := hex.DecodeString(data)
		if err != nil {
			t.Fatal(err)
		}
		if d := sha512.Sum384(raw); hex.EncodeToString(d[:]) != digest {
			t.Fatalf("log event %s: digest %s is not SHA-384 of its data", fields[0], digest)
		}
		logged = append(logged, digest)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	r, err := tdxmeasure.RTMR1(tdxmeasure.Boot{Kernel: synthPE(t).build(), KernelImage: tdxmeasure.KernelRaw})
	if err != nil {
		t.Fatal(err)
	}
	var ours []string
	for _, e := range r.Events[1:] {
		ours = append(ours, hex.EncodeToString(e.Digest[:]))
	}
	if diff := cmp.Diff(logged, ours); diff != "" {
		t.Errorf("fixed RTMR1 events vs the real log (-log +ours):\n%s", diff)
	}
}

// TestPatchDebianKernel patches the real Debian kernels (boot protocol
// 2.15, loaded high, initrd above 4 GiB allowed) and checks that exactly
// the expected header bytes change, and that the patch changes RTMR1.
func TestPatchDebianKernel(t *testing.T) {
	for _, k := range debianKernels {
		img := readCached(t, k.name)
		if p := binary.LittleEndian.Uint16(img[0x206:]); p != 0x20f || img[0x211]&0x01 == 0 {
			t.Fatalf("%s: boot protocol %#x, loadflags %#x; the expectations below assume 2.15, loaded high", k.name, p, img[0x211])
		}
		p, err := tdxmeasure.PatchKernel(img, 1<<20, 4<<30, "console=ttyS0")
		if err != nil {
			t.Fatal(err)
		}
		want := map[int]byte{0x210: 0xb0, 0x211: img[0x211] | 0x80, 0x224: 0x00, 0x225: 0xfe, 0x228: 0x00, 0x229: 0x00, 0x22a: 0x02, 0x22b: 0x00,
			0x218: 0x00, 0x219: 0x70, 0x21a: 0xed, 0x21b: 0x7f, // 0x7FED7000
			0x21c: 0x00, 0x21d: 0x00, 0x21e: 0x10, 0x21f: 0x00} // 1 MiB
		for i := range img {
			w, ok := want[i]
			if !ok {
				w = img[i]
			}
			if p[i] != w {
				t.Errorf("%s: patched byte %#x = %#x, want %#x", k.name, i, p[i], w)
			}
		}
		b := tdxmeasure.Boot{Kernel: img, Initrd: make([]byte, 1<<20), MemorySize: 4 << 30, Cmdline: "console=ttyS0", Stub: tdxmeasure.StubCC}
		b.KernelImage = tdxmeasure.KernelPatched
		rp, err := tdxmeasure.RTMR1(b)
		if err != nil {
			t.Fatal(err)
		}
		b.KernelImage = tdxmeasure.KernelRaw
		rr, err := tdxmeasure.RTMR1(b)
		if err != nil {
			t.Fatal(err)
		}
		if rp.Value() == rr.Value() || len(rp.Events) != 5 || len(rr.Events) != 5 {
			t.Errorf("%s: patched RTMR1 %x, raw %x (%d, %d events)", k.name, rp.Value(), rr.Value(), len(rp.Events), len(rr.Events))
		}
	}
}

// TestDebianKernelStubProtocols records the evidence behind the docs'
// "--stub-measures cc for Debian 13's kernel, none for Debian 12's": the
// first field of EFI_CC_MEASUREMENT_PROTOCOL_GUID
// (96751a3d-72f4-41a6-a794-ed5d0e67ae6b), as the little-endian constant the
// stub's code holds, occurs only in the 6.12 image, while the
// EFI_TCG2_PROTOCOL_GUID field (607f766c-...) and the LoadOptions event tag
// 0x8F3B22ED occur in both. A 4-byte match is evidence, not proof; this is
// why the mode is an explicit option and not derived.
func TestDebianKernelStubProtocols(t *testing.T) {
	le := func(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
	for _, tc := range []struct {
		name   string
		wantCC bool
	}{
		{"vmlinuz-6.1.0-56-cloud-amd64", false},
		{"vmlinuz-6.12.117+deb13-cloud-amd64", true},
	} {
		img := readCached(t, tc.name)
		cc, tcg2, tag := bytes.Contains(img, le(0x96751a3d)), bytes.Contains(img, le(0x607f766c)), bytes.Contains(img, le(0x8f3b22ed))
		if cc != tc.wantCC || !tcg2 || !tag {
			t.Errorf("%s: CC GUID field %v (want %v), TCG2 GUID field %v, LoadOptions tag %v (want both true)", tc.name, cc, tc.wantCC, tcg2, tag)
		}
	}
}

// TestDstackTransliteration compares RTMR1 and RTMR2 of the Debian kernels
// with the values of a Python transliteration of dstack-mr
// (testdata/README.md).
func TestDstackTransliteration(t *testing.T) {
	f, err := os.Open(filepath.Join("testdata", "rtmr-dstack-transliteration.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	initrd, err := os.ReadFile("../../testdata/measure/inputs/initrd-tiny.cpio")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		if len(fields) != 4 {
			t.Fatalf("bad line %q", sc.Text())
		}
		mem, err := strconv.ParseUint(fields[1], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		b := tdxmeasure.Boot{Kernel: readCached(t, fields[0]), Initrd: initrd, Cmdline: "console=ttyS0", MemorySize: mem,
			KernelImage: tdxmeasure.KernelPatched, Stub: tdxmeasure.StubCC}
		r1, err := tdxmeasure.RTMR1(b)
		if err != nil {
			t.Fatal(err)
		}
		r2, err := tdxmeasure.RTMR2(b)
		if err != nil {
			t.Fatal(err)
		}
		v1, v2 := r1.Value(), r2.Value()
		if got := hex.EncodeToString(v1[:]); got != fields[2] {
			t.Errorf("%s, %s bytes: RTMR1 = %s, transliteration %s", fields[0], fields[1], got, fields[2])
		}
		if got := hex.EncodeToString(v2[:]); got != fields[3] {
			t.Errorf("%s, %s bytes: RTMR2 = %s, transliteration %s", fields[0], fields[1], got, fields[3])
		}
		n++
	}
	if err := sc.Err(); err != nil || n != 6 {
		t.Fatalf("read %d vectors (%v), want 6", n, err)
	}
}

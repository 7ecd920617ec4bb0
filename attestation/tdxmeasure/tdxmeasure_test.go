package tdxmeasure_test

import (
	"bytes"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/greatjail/cvm/attestation/tdxmeasure"
)

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The record layouts, written out by hand, and their SHA-384 computed
// outside Go (Python hashlib over the same bytes).
func TestPageAddRecord(t *testing.T) {
	want := mustHex(t, "4d454d2e504147452e414444"+"00000000"+"0000e2ff00000000"+strings.Repeat("00", 104))
	got := tdxmeasure.AppendPageAdd(nil, 0xFFE20000)
	if !bytes.Equal(got, want) {
		t.Fatalf("AppendPageAdd(nil, 0xffe20000) = %x, want %x", got, want)
	}
	const wantSum = "d8f262f447c1d4c10821adc791faad39e6fa86679c72eaf618e8f6f5bdeb5457c6477341ec011c5670d0f4ae8ecee888"
	if s := sha512.Sum384(got); hex.EncodeToString(s[:]) != wantSum {
		t.Errorf("SHA-384(record) = %x, want %s", s, wantSum)
	}
	// Appending keeps the prefix.
	if got := tdxmeasure.AppendPageAdd([]byte{1, 2}, 0xFFE20000); !bytes.Equal(got[:2], []byte{1, 2}) || !bytes.Equal(got[2:], want) {
		t.Errorf("AppendPageAdd(prefix) = %x", got)
	}
}

func TestMRExtendRecord(t *testing.T) {
	chunk := make([]byte, 256)
	for i := range chunk {
		chunk[i] = byte(i)
	}
	want := append(mustHex(t, "4d522e455854454e44"+"00000000000000"+"0001e2ff00000000"+strings.Repeat("00", 104)), chunk...)
	got := tdxmeasure.AppendMRExtend(nil, 0xFFE20100, chunk)
	if !bytes.Equal(got, want) {
		t.Fatalf("AppendMRExtend(nil, 0xffe20100, 0..255) = %x, want %x", got, want)
	}
	const wantSum = "5937ff93f895c3bf70d9b3460efba6036556a42d00c177a713511cbd601def343f44d67d9f91d90d45ef8bb1b2b27c38"
	if s := sha512.Sum384(got); hex.EncodeToString(s[:]) != wantSum {
		t.Errorf("SHA-384(record) = %x, want %s", s, wantSum)
	}
}

// independentMRTD recomputes MRTD from a section list without the package:
// one byte stream of all records, hashed at the end.
func independentMRTD(fw []byte, secs []tdxmeasure.Section) [48]byte {
	var stream bytes.Buffer
	rec := func(op string, gpa uint64) {
		var r [128]byte
		copy(r[:], op)
		binary.LittleEndian.PutUint64(r[16:24], gpa)
		stream.Write(r[:])
	}
	for _, s := range secs {
		if s.Attributes&2 != 0 || s.Type == 7 {
			continue
		}
		for off := uint64(0); off < s.MemoryDataSize; off += 4096 {
			rec("MEM.PAGE.ADD", s.MemoryAddress+off)
			if s.Attributes&1 == 0 {
				continue
			}
			for c := uint64(0); c < 4096; c += 256 {
				rec("MR.EXTEND", s.MemoryAddress+off+c)
				start := uint64(s.DataOffset) + off + c
				stream.Write(fw[start : start+256])
			}
		}
	}
	return sha512.Sum384(stream.Bytes())
}

func TestSynthetic(t *testing.T) {
	// Computed by a separate Python script over the same image bytes.
	const golden = "84e448e73ca8ca6ea0bc2dd5602cbfa5ae7aeb834631f2b91ad3990ca0303b7df76fc78b5026469161e6c5465ca51736"
	fw := defaultSynth().build()
	secs, err := tdxmeasure.ParseMetadata(fw)
	if err != nil {
		t.Fatalf("ParseMetadata() = %v", err)
	}
	if diff := cmp.Diff(synthSections(), secs); diff != "" {
		t.Errorf("ParseMetadata() sections (-want +got):\n%s", diff)
	}
	got, err := tdxmeasure.MRTD(fw)
	if err != nil {
		t.Fatalf("MRTD() = %v", err)
	}
	if want := independentMRTD(fw, synthSections()); got != want {
		t.Errorf("MRTD() = %x, independent computation %x", got, want)
	}
	if h := hex.EncodeToString(got[:]); h != golden {
		t.Errorf("MRTD() = %s, want %s", h, golden)
	}
	_, adds, exts := tdxmeasure.MeasureCounts(fw, secs)
	if adds != 3+1+1+2 || exts != 3*16 {
		t.Errorf("records = %d PAGE.ADD, %d MR.EXTEND; want 7, 48 (PAGE.AUG section skipped)", adds, exts)
	}

	// The MR.EXTENDed bytes are measured: flip one in the BFV (page 1).
	flipped := bytes.Clone(fw)
	flipped[0x1234] ^= 1
	if got2, err := tdxmeasure.MRTD(flipped); err != nil || got2 == got {
		t.Errorf("MRTD(BFV byte flipped) = %x, %v; want a different digest", got2, err)
	}
	// The CFV is added but not extended: its bytes do not change MRTD.
	flipped = bytes.Clone(fw)
	flipped[0x234] ^= 1
	if got2, err := tdxmeasure.MRTD(flipped); err != nil || got2 != got {
		t.Errorf("MRTD(CFV byte flipped) = %x, %v; want unchanged %x", got2, err, got)
	}
}

func TestTDShimPointer(t *testing.T) {
	img := defaultSynth()
	img.tdshim = true
	secs, err := tdxmeasure.ParseMetadata(img.build())
	if err != nil {
		t.Fatalf("ParseMetadata(td-shim layout) = %v", err)
	}
	if diff := cmp.Diff(synthSections(), secs); diff != "" {
		t.Errorf("sections (-want +got):\n%s", diff)
	}
	// Without the GUID before the descriptor the pointer is not trusted.
	img.mutate = func(fw []byte) { fw[img.metaOff-1] ^= 0xff }
	if _, err := tdxmeasure.ParseMetadata(img.build()); !errors.Is(err, tdxmeasure.ErrNoMetadata) {
		t.Errorf("ParseMetadata(td-shim layout, bad GUID) = %v, want ErrNoMetadata", err)
	}
}

func TestParseMetadataErrors(t *testing.T) {
	le := binary.LittleEndian
	const meta = 0x3800
	withSecs := func(edit func(s []tdxmeasure.Section)) synthImage {
		img := defaultSynth()
		img.secs = synthSections()
		edit(img.secs)
		return img
	}
	mut := func(f func(fw []byte)) synthImage {
		img := defaultSynth()
		img.mutate = f
		return img
	}
	tests := []struct {
		name string
		img  synthImage
		want error
		msg  string // substring of the error
	}{
		{"footer without TDX entry", mut(func(fw []byte) { fw[0x4000-32-34] ^= 1 }), tdxmeasure.ErrNoMetadata, "no TDVF metadata"},
		{"footer table size too small", mut(func(fw []byte) { le.PutUint16(fw[0x4000-32-18:], 3) }), tdxmeasure.ErrInvalidMetadata, "GUID table size"},
		{"footer table size too large", mut(func(fw []byte) { le.PutUint16(fw[0x4000-32-18:], 0xffff) }), tdxmeasure.ErrInvalidMetadata, "GUID table size"},
		{"footer entry size bad", mut(func(fw []byte) { le.PutUint16(fw[0x4000-32-36:], 0x30) }), tdxmeasure.ErrInvalidMetadata, "bad size"},
		{"footer entry size zero", mut(func(fw []byte) { le.PutUint16(fw[0x4000-32-36:], 0) }), tdxmeasure.ErrInvalidMetadata, "bad size"},
		{"TDX entry too short", mut(func(fw []byte) {
			le.PutUint16(fw[0x4000-32-36:], 20)
			le.PutUint16(fw[0x4000-32-18:], 38)
		}), tdxmeasure.ErrInvalidMetadata, "2 data bytes, want 4"},
		{"metadata offset beyond file", mut(func(fw []byte) { le.PutUint32(fw[0x4000-32-40:], 0x10000) }), tdxmeasure.ErrInvalidMetadata, "outside"},
		{"metadata offset zero", mut(func(fw []byte) { le.PutUint32(fw[0x4000-32-40:], 0) }), tdxmeasure.ErrInvalidMetadata, "outside"},
		{"bad signature", mut(func(fw []byte) { fw[meta] = 'X' }), tdxmeasure.ErrInvalidMetadata, "signature"},
		{"bad version", mut(func(fw []byte) { le.PutUint32(fw[meta+8:], 2) }), tdxmeasure.ErrInvalidMetadata, "version 2"},
		{"no sections", mut(func(fw []byte) { le.PutUint32(fw[meta+12:], 0); le.PutUint32(fw[meta+4:], 16) }), tdxmeasure.ErrInvalidMetadata, "no sections"},
		{"length mismatch", mut(func(fw []byte) { le.PutUint32(fw[meta+4:], 16+32*4) }), tdxmeasure.ErrInvalidMetadata, "does not match"},
		{"huge count", mut(func(fw []byte) { le.PutUint32(fw[meta+12:], 0xffffffff); le.PutUint32(fw[meta+4:], 0xffffffff) }), tdxmeasure.ErrInvalidMetadata, "does not match"},
		{"descriptor past end", mut(func(fw []byte) { le.PutUint32(fw[meta+12:], 100); le.PutUint32(fw[meta+4:], 16+32*100) }), tdxmeasure.ErrInvalidMetadata, "past the end"},
		{"raw data past end", withSecs(func(s []tdxmeasure.Section) { s[0].DataOffset = 0x2000 }), tdxmeasure.ErrInvalidMetadata, "section 0 (BFV): raw data at file offset 0x2000"},
		{"raw data offset overflow", withSecs(func(s []tdxmeasure.Section) { s[1].DataOffset = 0xffffffff }), tdxmeasure.ErrInvalidMetadata, "past the end"},
		{"unaligned address", withSecs(func(s []tdxmeasure.Section) { s[2].MemoryAddress += 8 }), tdxmeasure.ErrInvalidMetadata, "not 4 KiB aligned"},
		{"unaligned size", withSecs(func(s []tdxmeasure.Section) { s[3].MemoryDataSize = 0x1800 }), tdxmeasure.ErrInvalidMetadata, "multiple of 4 KiB"},
		{"range overflows", withSecs(func(s []tdxmeasure.Section) { s[3].MemoryAddress = 0xfffffffffffff000 }), tdxmeasure.ErrInvalidMetadata, "52-bit"},
		{"size beyond GPA space", withSecs(func(s []tdxmeasure.Section) { s[3].MemoryDataSize = 1 << 60 }), tdxmeasure.ErrInvalidMetadata, "52-bit"},
		{"too many pages", withSecs(func(s []tdxmeasure.Section) { s[3].MemoryDataSize = 1 << 40 }), tdxmeasure.ErrInvalidMetadata, "more than the limit"},
		{"raw larger than memory", withSecs(func(s []tdxmeasure.Section) { s[1].MemoryDataSize = 0 }), tdxmeasure.ErrInvalidMetadata, "exceeds memory size"},
		{"unknown type", withSecs(func(s []tdxmeasure.Section) { s[3].Type = 9 }), tdxmeasure.ErrInvalidMetadata, "unknown section type 9"},
		{"unknown attribute", withSecs(func(s []tdxmeasure.Section) { s[0].Attributes = 5 }), tdxmeasure.ErrInvalidMetadata, "unknown attribute"},
		{"extend and aug", withSecs(func(s []tdxmeasure.Section) { s[0].Attributes = 3 }), tdxmeasure.ErrInvalidMetadata, "both"},
		{"BFV without raw data", withSecs(func(s []tdxmeasure.Section) { s[0].RawDataSize = 0; s[0].Attributes = 0 }), tdxmeasure.ErrInvalidMetadata, "without raw data"},
		{"TempMem with raw data", withSecs(func(s []tdxmeasure.Section) { s[3].RawDataSize = 0x1000 }), tdxmeasure.ErrInvalidMetadata, "want 0"},
		{"extend raw short", withSecs(func(s []tdxmeasure.Section) { s[0].MemoryDataSize = 0x4000 }), tdxmeasure.ErrInvalidMetadata, "MR.EXTEND section"},
		{"TD_INFO in memory", withSecs(func(s []tdxmeasure.Section) { s[2].Type = 7 }), tdxmeasure.ErrInvalidMetadata, "TD_INFO"},
		{"overlap", withSecs(func(s []tdxmeasure.Section) { s[2].MemoryAddress = 0x801000 }), tdxmeasure.ErrInvalidMetadata, "overlap"},
		{"overlap with PAGE.AUG", withSecs(func(s []tdxmeasure.Section) { s[4].MemoryAddress = 0xFFFFF000 }), tdxmeasure.ErrInvalidMetadata, "overlap"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fw := tt.img.build()
			secs, err := tdxmeasure.ParseMetadata(fw)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("ParseMetadata() = %v, %v; want error wrapping %v containing %q", secs, err, tt.want, tt.msg)
			}
			if !strings.HasPrefix(err.Error(), "tdxmeasure: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
			if _, merr := tdxmeasure.MRTD(fw); !errors.Is(merr, tt.want) {
				t.Errorf("MRTD() error = %v, want %v", merr, tt.want)
			}
		})
	}
}

// TD_INFO without a memory range is accepted and not measured.
func TestTDInfoSkipped(t *testing.T) {
	img := defaultSynth()
	img.secs = append(synthSections(), tdxmeasure.Section{DataOffset: 0x100, RawDataSize: 0x40, Type: tdxmeasure.TypeTDInfo})
	fw := img.build()
	got, err := tdxmeasure.MRTD(fw)
	if err != nil {
		t.Fatalf("MRTD() = %v", err)
	}
	if want := independentMRTD(fw, img.secs); got != want {
		t.Errorf("MRTD() = %x, want %x", got, want)
	}
}

func TestGarbage(t *testing.T) {
	zeros := make([]byte, 8192)
	noise := make([]byte, 8192)
	for i := range noise {
		noise[i] = byte(i*131 + i>>5)
	}
	footerOnly := make([]byte, 64) // a footer GUID and nothing else
	copy(footerOnly[64-32-16:], guidFooter[:])
	tests := []struct {
		name string
		fw   []byte
	}{
		{"nil", nil},
		{"one byte", []byte{0}},
		{"31 bytes", make([]byte, 31)},
		{"zeros", zeros},
		{"noise", noise},
		{"footer GUID, zero table size", footerOnly},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tdxmeasure.ParseMetadata(tt.fw)
			if !errors.Is(err, tdxmeasure.ErrNoMetadata) && !errors.Is(err, tdxmeasure.ErrInvalidMetadata) {
				t.Errorf("ParseMetadata() = %v, want ErrNoMetadata or ErrInvalidMetadata", err)
			}
		})
	}
	// Every truncation of the synthetic image fails cleanly.
	fw := defaultSynth().build()
	for n := 0; n < len(fw); n += 97 {
		for _, b := range [][]byte{fw[:n], fw[len(fw)-n:]} {
			if _, err := tdxmeasure.MRTD(b); err == nil {
				t.Errorf("MRTD(%d-byte truncation) succeeded", len(b))
			}
		}
	}
}

// Truncations of the real image: its tail alone keeps the footer table and
// the metadata, whose offsets then no longer fit.
func TestTruncatedOVMF(t *testing.T) {
	fw := readCached(t, "OVMF.fd")
	tests := []struct {
		name string
		fw   []byte
		want error
	}{
		{"last 64 KiB", fw[len(fw)-0x10000:], tdxmeasure.ErrInvalidMetadata},
		{"last 4 KiB", fw[len(fw)-0x1000:], tdxmeasure.ErrInvalidMetadata},
		{"first 1 MiB", fw[:0x100000], tdxmeasure.ErrNoMetadata},
		{"one byte short", fw[:len(fw)-1], tdxmeasure.ErrNoMetadata},
		{"last 0x840 bytes", fw[len(fw)-0x840:], tdxmeasure.ErrInvalidMetadata},
		{"last 0x83f bytes", fw[len(fw)-0x83f:], tdxmeasure.ErrInvalidMetadata},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := tdxmeasure.MRTD(tt.fw); !errors.Is(err, tt.want) {
				t.Errorf("MRTD() = %v, want %v", err, tt.want)
			}
		})
	}
}

func readCached(tb testing.TB, name string) []byte {
	tb.Helper()
	path := filepath.Join(inputDir, name)
	fw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		tb.Skipf("%s missing: run scripts/fetch-test-inputs.sh (make test does)", path)
	}
	if err != nil {
		tb.Fatal(err)
	}
	return fw
}

func TestTypeName(t *testing.T) {
	for typ, want := range map[uint32]string{0: "BFV", 2: "TD_HOB", 7: "TD_INFO", 42: "type 42"} {
		if got := tdxmeasure.TypeName(typ); got != want {
			t.Errorf("TypeName(%d) = %q, want %q", typ, got, want)
		}
	}
}

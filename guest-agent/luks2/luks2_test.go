package luks2

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// testRand is a deterministic randomness source (synthetic keys only).
func testRand(seed byte) *rand.ChaCha8 {
	var s [32]byte
	s[0] = seed
	return rand.NewChaCha8(s)
}

func testKey(seed byte) []byte {
	k := make([]byte, 64)
	testRand(seed + 100).Read(k)
	return k
}

var fastOpts = FormatOptions{KeyslotIterations: 1000, DigestIterations: 1000}

// formatImage returns a formatted image of size bytes (in memory).
func formatImage(t testing.TB, key []byte, size int) []byte {
	t.Helper()
	w := &memFile{}
	o := fastOpts
	o.Rand = testRand(1)
	if _, err := Format(w, key, o); err != nil {
		t.Fatalf("Format: %v", err)
	}
	if len(w.b) > size {
		t.Fatalf("Format wrote %d bytes, more than %d", len(w.b), size)
	}
	return append(w.b, make([]byte, size-len(w.b))...)
}

// memFile is an in-memory io.WriterAt, safe for concurrent use.
type memFile struct {
	mu sync.Mutex
	b  []byte
}

func (m *memFile) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if end := int(off) + len(p); end > len(m.b) {
		m.b = append(m.b, make([]byte, end-len(m.b))...)
	}
	return copy(m.b[off:], p), nil
}

func TestFormatParse(t *testing.T) {
	key := testKey(1)
	img := formatImage(t, key, DataOffset+1<<20)
	h, err := Parse(bytes.NewReader(img))
	if err != nil {
		t.Fatalf("Parse of Format's output: %v", err)
	}
	wantSeg := Segment{Offset: DataOffset, Dynamic: true, Encryption: "aes-xts-plain64", SectorSize: 512}
	if d := cmp.Diff(wantSeg, h.Segment); d != "" {
		t.Errorf("segment (-want +got):\n%s", d)
	}
	wantKS := []Keyslot{{
		ID: 0, KeySize: 64,
		Area: Area{Offset: 32768, Size: 258048, Encryption: "aes-xts-plain64", KeySize: 64},
		KDF:  KDF{Type: "pbkdf2", Hash: "sha256", Iterations: 1000},
		AF:   AF{Type: "luks1", Stripes: 4000, Hash: "sha256"},
	}}
	if d := cmp.Diff(wantKS, h.Keyslots, cmpopts.IgnoreFields(KDF{}, "Salt")); d != "" {
		t.Errorf("keyslots (-want +got):\n%s", d)
	}
	if h.HdrSize != 16384 || h.KeyslotsSize != 16744448 || !h.Primary || h.SeqID != 1 || h.DeviceSize != uint64(len(img)) {
		t.Errorf("header = size %d, keyslots size %d, primary %v, seqid %d, device size %d; want 16384, 16744448, true, 1, %d",
			h.HdrSize, h.KeyslotsSize, h.Primary, h.SeqID, h.DeviceSize, len(img))
	}
	if h.Digest.Hash != "sha256" || h.Digest.Iterations != 1000 || len(h.Digest.Value) != 32 || len(h.Digest.Salt) != 32 {
		t.Errorf("digest = %+v, want sha256, 1000 iterations, 32-byte salt and value", h.Digest)
	}
	if n, err := h.Segment.DataSectors(h.DeviceSize); err != nil || n != 2048 {
		t.Errorf("DataSectors = %d, %v; want 2048", n, err)
	}
	if err := h.CheckKey(key); err != nil {
		t.Errorf("CheckKey(right key) = %v", err)
	}
	got, err := h.openKeyslot(bytes.NewReader(img), 0, key)
	if err != nil || !bytes.Equal(got, key) {
		t.Errorf("openKeyslot(0, volume key) = %x, %v; want the volume key", got, err)
	}
	if _, err := h.openKeyslot(bytes.NewReader(img), 0, testKey(2)); !errors.Is(err, ErrWrongKey) {
		t.Errorf("openKeyslot(0, other key) = %v, want ErrWrongKey", err)
	}
}

func TestCheckKeyWrong(t *testing.T) {
	key := testKey(1)
	h, err := Parse(bytes.NewReader(formatImage(t, key, DataOffset+4096)))
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(key)
	flipped[63] ^= 1
	for name, k := range map[string][]byte{
		"other key":   testKey(2),
		"one bit off": flipped,
		"short":       key[:32],
		"empty":       nil,
		"too long":    append(bytes.Clone(key), 0),
	} {
		err := h.CheckKey(k)
		if !errors.Is(err, ErrWrongKey) {
			t.Errorf("CheckKey(%s) = %v, want ErrWrongKey", name, err)
		} else if !strings.Contains(err.Error(), "wrong key") {
			t.Errorf("CheckKey(%s) = %q, want a message saying wrong key", name, err)
		}
	}
}

func TestFormatDeterministic(t *testing.T) {
	a := formatImage(t, testKey(1), DataOffset)
	b := formatImage(t, testKey(1), DataOffset)
	if !bytes.Equal(a, b) {
		t.Error("Format with the same randomness and key wrote different bytes")
	}
	c := formatImage(t, testKey(2), DataOffset)
	if bytes.Equal(a[:32768], c[:32768]) {
		t.Error("Format with different keys wrote the same headers")
	}
}

func TestFormatRejects(t *testing.T) {
	if _, err := Format(&memFile{}, make([]byte, 32), fastOpts); err == nil {
		t.Error("Format with a 32-byte key succeeded; want an error (512-bit keys only)")
	}
	if _, err := Format(&memFile{}, testKey(1), FormatOptions{Rand: bytes.NewReader(nil)}); err == nil {
		t.Error("Format with an empty randomness source succeeded")
	}
	if _, err := Format(&memFile{}, testKey(1), FormatOptions{KeyslotIterations: -1}); err == nil {
		t.Error("Format with -1 iterations succeeded")
	}
}

func TestEncryptDecrypt(t *testing.T) {
	key := testKey(1)
	w := &memFile{}
	h, err := Format(w, key, FormatOptions{Rand: testRand(1), KeyslotIterations: 1000, DigestIterations: 1000})
	if err != nil {
		t.Fatal(err)
	}
	plain := make([]byte, 3*chunkSize+700) // several chunks and a partial sector
	testRand(9).Read(plain)
	n, err := Encrypt(w, h, key, bytes.NewReader(plain))
	if want := int64(len(plain)+511) / 512 * 512; err != nil || n != want {
		t.Fatalf("Encrypt = %d, %v; want %d", n, err, want)
	}
	if bytes.Contains(w.b[DataOffset:], plain[:4096]) {
		t.Error("the data segment contains plaintext")
	}
	var out bytes.Buffer
	if err := Decrypt(&out, bytes.NewReader(w.b), h, key, n); err != nil {
		t.Fatal(err)
	}
	want := append(bytes.Clone(plain), make([]byte, n-int64(len(plain)))...)
	if !bytes.Equal(out.Bytes(), want) {
		t.Error("Decrypt(Encrypt(x)) != x padded to a sector")
	}
	// Sector 5 of the segment is encrypted with IV 5, independently.
	dc, err := NewDataCipher(h, key)
	if err != nil {
		t.Fatal(err)
	}
	s5 := bytes.Clone(w.b[DataOffset+5*512 : DataOffset+6*512])
	dc.Decrypt(s5, 5)
	if !bytes.Equal(s5, plain[5*512:6*512]) {
		t.Error("sector 5 alone does not decrypt with IV 5")
	}
	if _, err := Encrypt(w, h, testKey(2), bytes.NewReader(plain)); !errors.Is(err, ErrWrongKey) {
		t.Errorf("Encrypt with the wrong key = %v, want ErrWrongKey", err)
	}
}

func TestAFRoundTrip(t *testing.T) {
	key := testKey(3)
	for _, stripes := range []int{1, 2, 4000} {
		for _, n := range []int{16, 32, 33, 64} {
			m, err := afSplit(key[:min(n, 64)], stripes, sha256.New, testRand(4))
			if err != nil {
				t.Fatal(err)
			}
			if got := afMerge(m, min(n, 64), stripes, sha256.New); !bytes.Equal(got, key[:min(n, 64)]) {
				t.Errorf("afMerge(afSplit(key[:%d], %d)) = %x, want the key", n, stripes, got)
			}
		}
	}
}

// rewrite replaces the JSON of both header copies of img (Format's layout)
// with js and fixes the checksums: what an attacker with the disk can do.
func rewrite(t *testing.T, img []byte, js []byte) []byte {
	t.Helper()
	img = bytes.Clone(img)
	for _, off := range []int{0, formatHdrSize} {
		area := img[off+binHeaderSize : off+formatHdrSize]
		if len(js) > len(area) {
			t.Fatalf("JSON of %d bytes does not fit", len(js))
		}
		clear(area)
		copy(area, js)
		fixChecksum(img[off : off+formatHdrSize])
	}
	return img
}

func fixChecksum(hdr []byte) {
	clear(hdr[offCsum : offCsum+csumLen])
	sum := sha256.Sum256(hdr)
	copy(hdr[offCsum:], sum[:])
}

// editJSON applies f to the decoded JSON of img and rewrites it.
func editJSON(t *testing.T, img []byte, f func(m map[string]any)) []byte {
	t.Helper()
	h := img[binHeaderSize:formatHdrSize]
	var m map[string]any
	if err := json.Unmarshal(bytes.TrimRight(h, "\x00"), &m); err != nil {
		t.Fatal(err)
	}
	f(m)
	js, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return rewrite(t, img, js)
}

func obj(m map[string]any, path ...string) map[string]any {
	for _, p := range path {
		m = m[p].(map[string]any)
	}
	return m
}

// sized is a reader over the first bytes of an image that reports the
// whole image's size, so that header tests need not copy 16 MiB.
type sized struct {
	*bytes.Reader
	size int64
}

func (s sized) Size() int64 { return s.size }

func TestParseHostile(t *testing.T) {
	key := testKey(1)
	const size = DataOffset + 1<<20
	good := formatImage(t, key, size)[:2*formatHdrSize]
	seg := func(k string, v any) func(m map[string]any) {
		return func(m map[string]any) { obj(m, "segments", "0")[k] = v }
	}
	tests := []struct {
		name string
		img  []byte
		want string // substring of the error
		// unsupported says the error must wrap ErrUnsupported.
		unsupported bool
	}{
		{name: "empty", img: nil, want: "no valid LUKS2 header"},
		{name: "zeros", img: make([]byte, 64<<10), want: "no LUKS2 magic"},
		{name: "both copies flipped", img: func() []byte {
			b := bytes.Clone(good)
			b[binHeaderSize+10] ^= 1
			b[formatHdrSize+binHeaderSize+10] ^= 1
			return b
		}(), want: "checksum mismatch"},
		{name: "primary magic gone, secondary flipped", img: func() []byte {
			b := bytes.Clone(good)
			b[0] = 'X'
			b[formatHdrSize+100] ^= 1
			return b
		}(), want: "secondary header at offset 16384: checksum mismatch"},
		{name: "hdr_size not allowed", img: func() []byte {
			b := bytes.Clone(good)
			for _, off := range []int{0, formatHdrSize} {
				binary.BigEndian.PutUint64(b[off+offHdrSize:], 12345)
			}
			return b
		}(), want: "hdr_size 12345 is not one the specification allows"},
		{name: "hdr_size larger than the file", img: func() []byte {
			b := bytes.Clone(good)
			for _, off := range []int{0, formatHdrSize} {
				binary.BigEndian.PutUint64(b[off+offHdrSize:], 4<<20)
			}
			return b
		}(), want: "reading the 4190208-byte JSON area"},
		{name: "version 3", img: func() []byte {
			b := bytes.Clone(good)
			for _, off := range []int{0, formatHdrSize} {
				binary.BigEndian.PutUint16(b[off+offVersion:], 3)
				fixChecksum(b[off : off+formatHdrSize])
			}
			return b
		}(), want: "version 3", unsupported: true},
		{name: "luks1", img: append([]byte("LUKS\xba\xbe\x00\x01"), make([]byte, 64<<10)...), want: "LUKS version 1", unsupported: true},
		{name: "checksum alg sha1", img: func() []byte {
			b := bytes.Clone(good)
			for _, off := range []int{0, formatHdrSize} {
				copy(b[off+offCsumAlg:], "sha1\x00\x00")
				fixChecksum(b[off : off+formatHdrSize])
			}
			return b
		}(), want: `checksum algorithm "sha1"`, unsupported: true},
		{name: "garbage after JSON", img: func() []byte {
			b := bytes.Clone(good)
			for _, off := range []int{0, formatHdrSize} {
				b[off+formatHdrSize-1] = 'x'
				fixChecksum(b[off : off+formatHdrSize])
			}
			return b
		}(), want: "bytes after the end of the JSON text"},
		{name: "not JSON", img: rewrite(t, good, []byte("{]")), want: "JSON metadata"},
		{name: "JSON with trailing object", img: rewrite(t, good, append(bytes.Clone(bytes.TrimRight(good[binHeaderSize:formatHdrSize], "\x00")), "{}"...)), want: "trailing data"},
		{name: "config missing", img: editJSON(t, good, func(m map[string]any) { delete(m, "config") }), want: "all required"},
		{name: "json_size wrong", img: editJSON(t, good, func(m map[string]any) { obj(m, "config")["json_size"] = "4096" }), want: "json_size 4096 does not match"},
		{name: "unknown top-level field", img: editJSON(t, good, func(m map[string]any) { m["evil"] = 1 }), want: `unknown field "evil"`},
		{name: "negative segment offset", img: editJSON(t, good, seg("offset", "-1")), want: `segment offset "-1" is not a decimal unsigned number`},
		{name: "huge segment offset", img: editJSON(t, good, seg("offset", "99999999999999999999999")), want: "not a decimal unsigned number"},
		{name: "segment offset 2^63", img: editJSON(t, good, seg("offset", "9223372036854775808")), want: "out of range"},
		{name: "segment offset as number", img: editJSON(t, good, seg("offset", 16777216)), want: "cannot unmarshal number"},
		{name: "segment beyond the file", img: editJSON(t, good, seg("offset", "1099511627776")), want: "at or beyond the end of the device"},
		{name: "fixed segment beyond the file", img: editJSON(t, good, seg("size", "2097152")), want: "beyond the end of the device"},
		{name: "segment over the headers", img: editJSON(t, good, seg("offset", "0")), want: "overlaps the headers"},
		{name: "segment offset unaligned", img: editJSON(t, good, seg("offset", "16777217")), want: "not a multiple of 512"},
		{name: "cipher_null", img: editJSON(t, good, seg("encryption", "cipher_null-ecb")), want: `encryption "cipher_null-ecb"`, unsupported: true},
		{name: "aes-cbc", img: editJSON(t, good, seg("encryption", "aes-cbc-essiv:sha256")), want: `encryption "aes-cbc-essiv:sha256"`, unsupported: true},
		{name: "sector size 4096", img: editJSON(t, good, seg("sector_size", 4096)), want: "sector_size 4096", unsupported: true},
		{name: "negative sector size", img: editJSON(t, good, seg("sector_size", -512)), want: "cannot unmarshal number -512"},
		{name: "iv_tweak", img: editJSON(t, good, seg("iv_tweak", "8")), want: "iv_tweak 8", unsupported: true},
		{name: "integrity", img: editJSON(t, good, seg("integrity", map[string]any{"type": "hmac(sha256)"})), want: "integrity", unsupported: true},
		{name: "linear segment", img: editJSON(t, good, seg("type", "linear")), want: `type "linear"`, unsupported: true},
		{name: "two segments", img: editJSON(t, good, func(m map[string]any) {
			obj(m, "segments")["1"] = obj(m, "segments", "0")
		}), want: "2 segments", unsupported: true},
		{name: "unknown segment field", img: editJSON(t, good, seg("extra", true)), want: `unknown field "extra"`},
		{name: "digest argon2", img: editJSON(t, good, func(m map[string]any) { obj(m, "digests", "0")["type"] = "argon2id" }), want: `digest 0 has type "argon2id"`, unsupported: true},
		{name: "digest huge iterations", img: editJSON(t, good, func(m map[string]any) { obj(m, "digests", "0")["iterations"] = 2000000000 }), want: "iterations 2000000000 out of range"},
		{name: "digest iterations 1e30", img: editJSON(t, good, func(m map[string]any) { obj(m, "digests", "0")["iterations"] = 1e30 }), want: "cannot unmarshal number"},
		{name: "digest hash md5", img: editJSON(t, good, func(m map[string]any) { obj(m, "digests", "0")["hash"] = "md5" }), want: `hash "md5"`, unsupported: true},
		{name: "digest short salt", img: editJSON(t, good, func(m map[string]any) { obj(m, "digests", "0")["salt"] = "AAAA" }), want: "salt is 3 bytes"},
		{name: "no digest for the segment", img: editJSON(t, good, func(m map[string]any) { obj(m, "digests", "0")["segments"] = []string{} }), want: "no digest for segment 0"},
		{name: "digest names a missing keyslot", img: editJSON(t, good, func(m map[string]any) { obj(m, "digests", "0")["keyslots"] = []string{"7"} }), want: "keyslot 7, which does not exist"},
		{name: "keyslot key_size huge", img: editJSON(t, good, func(m map[string]any) { obj(m, "keyslots", "0")["key_size"] = 1 << 40 }), want: "key_size 1099511627776 out of range"},
		{name: "keyslot area beyond keyslots", img: editJSON(t, good, func(m map[string]any) { obj(m, "keyslots", "0", "area")["offset"] = "16777216" }), want: "outside the keyslots area"},
		{name: "keyslot area too small", img: editJSON(t, good, func(m map[string]any) { obj(m, "keyslots", "0", "area")["size"] = "4096" }), want: "smaller than key_size"},
		{name: "keyslot reencrypt", img: editJSON(t, good, func(m map[string]any) { obj(m, "keyslots", "0")["type"] = "reencrypt" }), want: `keyslot 0 has type "reencrypt"`, unsupported: true},
		{name: "keyslot id not a number", img: editJSON(t, good, func(m map[string]any) {
			ks := obj(m, "keyslots")
			ks["x"] = ks["0"]
			delete(ks, "0")
		}), want: `keyslot id "x"`},
		{name: "too many keyslots", img: editJSON(t, good, func(m map[string]any) {
			ks := obj(m, "keyslots")
			for i := 1; i <= 32; i++ {
				ks[strconv.Itoa(i)] = ks["0"]
			}
		}), want: "33 keyslots, at most 32"},
		{name: "mandatory requirement", img: editJSON(t, good, func(m map[string]any) {
			obj(m, "config")["requirements"] = map[string]any{"mandatory": []string{"online-reencrypt-v2"}}
		}), want: "online-reencrypt-v2", unsupported: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := Parse(sized{bytes.NewReader(tt.img), size})
			if err == nil {
				t.Fatalf("Parse succeeded (segment %+v), want an error containing %q", h.Segment, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse error = %q, want it to contain %q", err, tt.want)
			}
			if got := errors.Is(err, ErrUnsupported); got != tt.unsupported {
				t.Errorf("errors.Is(%q, ErrUnsupported) = %v, want %v", err, got, tt.unsupported)
			}
		})
	}
}

func TestParseOneCopyDamaged(t *testing.T) {
	key := testKey(1)
	good := formatImage(t, key, DataOffset+4096)[:2*formatHdrSize]
	tests := []struct {
		name        string
		damage      func(b []byte)
		wantPrimary bool
	}{
		{"primary JSON flipped", func(b []byte) { b[binHeaderSize+20] ^= 0x40 }, false},
		{"primary magic zeroed", func(b []byte) { clear(b[:6]) }, false},
		{"primary hdr_size garbage", func(b []byte) { binary.BigEndian.PutUint64(b[offHdrSize:], 1<<62) }, false},
		{"secondary JSON flipped", func(b []byte) { b[formatHdrSize+binHeaderSize+20] ^= 0x40 }, true},
		{"secondary zeroed", func(b []byte) { clear(b[formatHdrSize : 2*formatHdrSize]) }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := bytes.Clone(good)
			tt.damage(b)
			h, err := Parse(sized{bytes.NewReader(b), DataOffset + 4096})
			if err != nil {
				t.Fatalf("Parse with one good copy: %v", err)
			}
			if h.Primary != tt.wantPrimary {
				t.Errorf("Primary = %v, want %v", h.Primary, tt.wantPrimary)
			}
			if err := h.CheckKey(key); err != nil {
				t.Errorf("CheckKey: %v", err)
			}
		})
	}
	// The copy with the higher seqid wins.
	b := bytes.Clone(good)
	binary.BigEndian.PutUint64(b[formatHdrSize+offSeqID:], 7)
	fixChecksum(b[formatHdrSize : 2*formatHdrSize])
	if h, err := Parse(sized{bytes.NewReader(b), DataOffset + 4096}); err != nil || h.Primary || h.SeqID != 7 {
		t.Errorf("Parse with a newer secondary = %+v, %v; want the secondary, seqid 7", h, err)
	}
}

func TestParseFile(t *testing.T) {
	// An *os.File: the size comes from Seek, and the offset is restored.
	key := testKey(1)
	p := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(p, formatImage(t, key, DataOffset+8192), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Seek(100, 0); err != nil {
		t.Fatal(err)
	}
	h, err := Parse(f)
	if err != nil {
		t.Fatal(err)
	}
	if h.DeviceSize != DataOffset+8192 {
		t.Errorf("DeviceSize = %d, want %d", h.DeviceSize, DataOffset+8192)
	}
	if pos, _ := f.Seek(0, 1); pos != 100 {
		t.Errorf("file offset after Parse = %d, want 100 (restored)", pos)
	}
}

type failWriter struct{ after int64 }

func (f failWriter) WriteAt(p []byte, off int64) (int, error) {
	if off >= f.after {
		return 0, errors.New("disk full")
	}
	return len(p), nil
}

type failReader struct{ n int }

func (f *failReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errors.New("read failed")
	}
	m := min(len(p), f.n)
	f.n -= m
	return m, nil
}

func TestEncryptErrors(t *testing.T) {
	key := testKey(1)
	w := &memFile{}
	h, err := Format(w, key, fastOpts)
	if err != nil {
		t.Fatal(err)
	}
	plain := make([]byte, 20*chunkSize)
	if _, err := Encrypt(failWriter{after: DataOffset + 3*chunkSize}, h, key, bytes.NewReader(plain)); err == nil || !strings.Contains(err.Error(), "writing the data segment: disk full") {
		t.Errorf("Encrypt to a failing disk = %v, want a write error", err)
	}
	if _, err := Encrypt(w, h, key, &failReader{n: 5*chunkSize + 100}); err == nil || !strings.Contains(err.Error(), "reading the plaintext: read failed") {
		t.Errorf("Encrypt from a failing reader = %v, want a read error", err)
	}
	if n, err := Encrypt(w, h, key, bytes.NewReader(nil)); err != nil || n != 0 {
		t.Errorf("Encrypt of nothing = %d, %v; want 0, nil", n, err)
	}
}

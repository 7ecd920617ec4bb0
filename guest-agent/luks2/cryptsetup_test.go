package luks2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The recorded headers in testdata (see testdata/README.md) came from
// 17 MiB images.
const recordedSize = 17 << 20

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseRecordedCryptsetup(t *testing.T) {
	vk := readTestdata(t, "volume-key.bin")
	for _, tt := range []struct {
		file, kdf string
	}{
		{"cryptsetup-pbkdf2.hdr", "pbkdf2"},
		{"cryptsetup-argon2id.hdr", "argon2id"},
	} {
		t.Run(tt.file, func(t *testing.T) {
			h, err := Parse(sized{bytes.NewReader(readTestdata(t, tt.file)), recordedSize})
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if h.Segment.Offset != 16<<20 || !h.Segment.Dynamic || len(h.Keyslots) != 1 || h.Keyslots[0].KDF.Type != tt.kdf {
				t.Errorf("header = segment %+v, keyslots %+v; want offset 16 MiB, dynamic, one %s keyslot", h.Segment, h.Keyslots, tt.kdf)
			}
			if err := h.CheckKey(vk); err != nil {
				t.Errorf("CheckKey(volume key) = %v", err)
			}
			if err := h.CheckKey(testKey(5)); !errors.Is(err, ErrWrongKey) {
				t.Errorf("CheckKey(other key) = %v, want ErrWrongKey", err)
			}
		})
	}
	_, err := Parse(sized{bytes.NewReader(readTestdata(t, "cryptsetup-sector4096.hdr")), recordedSize})
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "sector_size 4096") {
		t.Errorf("Parse(4096-byte sectors) = %v, want ErrUnsupported naming sector_size 4096", err)
	}
}

// cryptsetup returns the cryptsetup binary, or skips.
func cryptsetup(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"cryptsetup", "/usr/sbin/cryptsetup", "/sbin/cryptsetup"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	t.Skip("cryptsetup is not installed (Debian package cryptsetup-bin): interop with cryptsetup not checked")
	return ""
}

func run(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// TestCryptsetupOpensOurs checks Format's output with cryptsetup: the dump
// shows our segment, and the keyslot opens with the volume key as key file
// (end to end through our AF split and keyslot encryption) and not with
// another key.
func TestCryptsetupOpensOurs(t *testing.T) {
	cs := cryptsetup(t)
	dir := t.TempDir()
	key := testKey(1)
	img, keyFile, wrongFile := filepath.Join(dir, "img"), filepath.Join(dir, "key"), filepath.Join(dir, "wrong")
	if err := os.WriteFile(img, formatImage(t, key, DataOffset+1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(wrongFile, testKey(2), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, cs, "luksDump", img)
	if err != nil {
		t.Fatalf("cryptsetup luksDump of our header: %v\n%s", err, out)
	}
	for _, want := range []string{"Version:       \t2", "offset: 16777216 [bytes]", "length: (whole device)", "cipher: aes-xts-plain64", "sector: 512 [bytes]", "PBKDF:      pbkdf2", "AF stripes: 4000", "Area length:258048 [bytes]"} {
		if !strings.Contains(out, want) {
			t.Errorf("luksDump output lacks %q:\n%s", want, out)
		}
	}
	if out, err := run(t, cs, "open", "--test-passphrase", "--key-file", keyFile, img); err != nil {
		t.Errorf("cryptsetup open --test-passphrase with the right key file: %v\n%s", err, out)
	}
	out, err = run(t, cs, "open", "--test-passphrase", "--key-file", wrongFile, img)
	if code := exitCode(err); code != 2 { // 2: "No key available with this passphrase"
		t.Errorf("cryptsetup open --test-passphrase with a wrong key file: exit %d (%v), want 2 (wrong passphrase)\n%s", code, err, out)
	}
}

// TestParseCryptsetupFresh formats images with the installed cryptsetup
// and checks that Parse, CheckKey and our keyslot opening agree with it.
func TestParseCryptsetupFresh(t *testing.T) {
	cs := cryptsetup(t)
	dir := t.TempDir()
	vk, pass := testKey(7), []byte("synthetic passphrase")
	vkFile, passFile := filepath.Join(dir, "vk"), filepath.Join(dir, "pass")
	if err := os.WriteFile(vkFile, vk, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(passFile, pass, 0o600); err != nil {
		t.Fatal(err)
	}
	common := []string{"luksFormat", "-q", "--type", "luks2", "--cipher", "aes-xts-plain64", "--key-size", "512", "--sector-size", "512", "--volume-key-file", vkFile, "--key-file", passFile}
	for _, tt := range []struct {
		name string
		args []string
		// openable says our openKeyslot can open it (pbkdf2 keyslots).
		openable bool
	}{
		{"pbkdf2", []string{"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"}, true},
		{"argon2id", []string{"--pbkdf", "argon2id", "--pbkdf-memory", "32768", "--pbkdf-force-iterations", "4", "--pbkdf-parallel", "1"}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			img := filepath.Join(dir, tt.name+".img")
			if err := os.WriteFile(img, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(img, 20<<20); err != nil {
				t.Fatal(err)
			}
			if out, err := run(t, cs, append(append(common, tt.args...), img)...); err != nil {
				t.Fatalf("cryptsetup luksFormat: %v\n%s", err, out)
			}
			f, err := os.Open(img)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			h, err := Parse(f)
			if err != nil {
				t.Fatalf("Parse of cryptsetup's header: %v", err)
			}
			if err := h.CheckKey(vk); err != nil {
				t.Errorf("CheckKey(volume key) = %v", err)
			}
			if err := h.CheckKey(testKey(8)); !errors.Is(err, ErrWrongKey) {
				t.Errorf("CheckKey(other key) = %v, want ErrWrongKey", err)
			}
			if !tt.openable {
				return
			}
			got, err := h.openKeyslot(f, 0, pass)
			if err != nil || !bytes.Equal(got, vk) {
				t.Errorf("openKeyslot(cryptsetup's keyslot, passphrase) = %x, %v; want the volume key", got, err)
			}
		})
	}
}

// compact returns the fuzz form of a 16 KiB-header image: the first 512
// bytes of the primary binary header (every field lives there) followed by
// the JSON text. Large inputs make coverage-guided fuzzing crawl.
func compact(img []byte) []byte {
	return append(bytes.Clone(img[:512]), bytes.TrimRight(img[binHeaderSize:formatHdrSize], "\x00")...)
}

// expand builds a two-copy image from compact form: both copies get the
// binary fields (the secondary with its own magic and offset) and the
// JSON, and valid checksums, so that the fuzzer reaches the JSON parser.
func expand(c []byte) []byte {
	img := make([]byte, 2*formatHdrSize)
	bin, js := c[:min(len(c), 512)], c[min(len(c), 512):]
	for i, off := range []int{0, formatHdrSize} {
		h := img[off : off+formatHdrSize]
		copy(h, bin)
		if i == 1 {
			copy(h, magicSecondary)
			binary.BigEndian.PutUint64(h[offHdrOffset:], formatHdrSize)
		}
		copy(h[binHeaderSize:], js)
		fixChecksum(h)
	}
	return img
}

// FuzzParse feeds Parse both the raw input and its expansion to a full
// image with valid checksums. Whatever parses must satisfy the invariants
// the guest relies on.
func FuzzParse(f *testing.F) {
	for _, name := range []string{"cryptsetup-pbkdf2.hdr", "cryptsetup-argon2id.hdr", "cryptsetup-sector4096.hdr"} {
		f.Add(compact(readTestdata(f, name)))
	}
	f.Add(compact(formatImage(f, testKey(1), DataOffset)))
	f.Add([]byte("LUKS\xba\xbe\x00\x02"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, img := range [][]byte{b, expand(b)} {
			h, err := Parse(sized{bytes.NewReader(img), recordedSize})
			if err != nil {
				continue
			}
			s := h.Segment
			if s.Encryption != Cipher || s.SectorSize != SectorSize || s.IVTweak != 0 || s.Offset%SectorSize != 0 ||
				s.Offset < 2*h.HdrSize || s.Offset >= recordedSize || (!s.Dynamic && s.Offset+s.Size > recordedSize) {
				t.Fatalf("Parse accepted a segment the guest cannot safely map: %+v", s)
			}
			if h.Digest.Iterations < 1 || h.Digest.Iterations > maxIterations || len(h.Digest.Salt) != 32 {
				t.Fatalf("Parse accepted digest %+v", h.Digest)
			}
		}
	})
}

// FuzzParseJSON fuzzes the JSON metadata parser alone (the part behind the
// checksum, which FuzzParse reaches only through its checksum fix-up).
func FuzzParseJSON(f *testing.F) {
	for _, name := range []string{"cryptsetup-pbkdf2.hdr", "cryptsetup-argon2id.hdr", "cryptsetup-sector4096.hdr"} {
		b := readTestdata(f, name)
		f.Add(bytes.TrimRight(b[binHeaderSize:formatHdrSize], "\x00"))
	}
	f.Add([]byte(`{"keyslots":{},"tokens":{},"segments":{},"digests":{},"config":{"json_size":"12288","keyslots_size":"0"}}`))
	f.Fuzz(func(t *testing.T, js []byte) {
		h, err := parseJSON(js, formatHdrSize, recordedSize)
		if err != nil {
			return
		}
		s := h.Segment
		if s.Encryption != Cipher || s.SectorSize != SectorSize || s.Offset < 2*formatHdrSize+h.KeyslotsSize || s.Offset >= recordedSize {
			t.Fatalf("parseJSON accepted segment %+v (keyslots size %d)", s, h.KeyslotsSize)
		}
		for _, k := range h.Keyslots {
			if k.Area.Offset < 2*formatHdrSize || k.Area.Offset+k.Area.Size > 2*formatHdrSize+h.KeyslotsSize {
				t.Fatalf("parseJSON accepted keyslot area %+v", k.Area)
			}
		}
	})
}

// TestFuzzExpand checks that FuzzParse's seeds reach a successful parse
// after expansion (else the fuzzer would never get past the checksums).
func TestFuzzExpand(t *testing.T) {
	for _, name := range []string{"cryptsetup-pbkdf2.hdr", "cryptsetup-argon2id.hdr"} {
		if _, err := Parse(sized{bytes.NewReader(expand(compact(readTestdata(t, name)))), recordedSize}); err != nil {
			t.Errorf("Parse(expand(compact(%s))): %v", name, err)
		}
	}
}

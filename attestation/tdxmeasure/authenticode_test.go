package tdxmeasure_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/greatjail/cvm/attestation/tdxmeasure"
)

// peImage describes a small synthetic PE32+ image (layout in build).
type peImage struct {
	ndirs    uint32 // NumberOfRvaAndSizes
	certSize uint32 // certificate table at the end of the file; 0 for none
	tail     int    // bytes of trailing data before it; 0 means 0x40
	mutate   func(b []byte)
}

func synthPE(t testing.TB) peImage {
	t.Helper()
	return peImage{ndirs: 16, certSize: 0x40}
}

// Layout of the synthetic image:
//
//	0x000 DOS header "MZ", e_lfanew = 0x40
//	0x040 "PE\0\0", COFF header (2 sections, optional header 0xF0 bytes)
//	0x058 optional header PE32+: CheckSum at 0x098, SizeOfHeaders 0x200 at
//	      0x094, NumberOfRvaAndSizes at 0x0C4, data directories at 0x0C8;
//	      the certificate-table entry (index 4) at 0x0E8
//	0x148 section table: ".b" raw 0x300+0x100, then ".a" raw 0x200+0x100
//	      (out of file order, to exercise the sort)
//	0x200 section .a, 0x300 section .b
//	0x400 0x40 bytes of trailing data, then the certificate table
const (
	peOpt       = 0x58
	peChecksum  = peOpt + 64
	peCertEntry = peOpt + 112 + 4*8
	peHeaders   = 0x200
	peTrailing  = 0x400
)

func (p peImage) build() []byte {
	le := binary.LittleEndian
	if p.tail == 0 {
		p.tail = 0x40
	}
	n := peTrailing + p.tail + int(p.certSize)
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8 + 1)
	}
	copy(b, "MZ")
	le.PutUint32(b[0x3c:], 0x40)
	copy(b[0x40:], "PE\x00\x00")
	le.PutUint16(b[0x44:], 0x8664) // Machine
	le.PutUint16(b[0x46:], 2)      // NumberOfSections
	le.PutUint16(b[0x54:], 0xf0)   // SizeOfOptionalHeader
	le.PutUint16(b[peOpt:], 0x20b)
	le.PutUint32(b[peOpt+60:], peHeaders)
	le.PutUint32(b[peOpt+108:], p.ndirs)
	le.PutUint32(b[peCertEntry:], uint32(n)-p.certSize)
	le.PutUint32(b[peCertEntry+4:], p.certSize)
	sec := func(off int, name string, ptr uint32) {
		copy(b[off:off+40], make([]byte, 40))
		copy(b[off:], name)
		le.PutUint32(b[off+16:], 0x100) // SizeOfRawData
		le.PutUint32(b[off+20:], ptr)   // PointerToRawData
	}
	sec(0x148, ".b", 0x300)
	sec(0x170, ".a", 0x200)
	if p.mutate != nil {
		p.mutate(b)
	}
	return b
}

// TestAuthenticodeSynthetic checks the digest of the synthetic image against
// the byte ranges the Authenticode specification names, written out by hand.
func TestAuthenticodeSynthetic(t *testing.T) {
	img := synthPE(t).build()
	cat := func(ranges ...[2]int) []byte {
		var b []byte
		for _, r := range ranges {
			b = append(b, img[r[0]:r[1]]...)
		}
		return b
	}
	tests := []struct {
		name string
		img  []byte
		want [48]byte
	}{
		{"signed", img, sha512.Sum384(cat(
			[2]int{0, peChecksum}, [2]int{peChecksum + 4, peCertEntry}, [2]int{peCertEntry + 8, 0x200}, // headers
			[2]int{0x200, 0x300}, [2]int{0x300, 0x400}, // sections by file offset
			[2]int{0x400, 0x440}, // trailing data before the certificate table
		))},
	}
	// Without a certificate-table directory entry, only the checksum is
	// skipped and the whole tail is hashed.
	noDir := peImage{ndirs: 4}.build()
	img2 := noDir
	tests = append(tests, struct {
		name string
		img  []byte
		want [48]byte
	}{"4 directories, no certificate entry", noDir, sha512.Sum384(append(append(append([]byte(nil), img2[:peChecksum]...), img2[peChecksum+4:0x200]...), img2[0x200:]...))})
	for _, tc := range tests {
		got, err := tdxmeasure.Authenticode(tc.img)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got != tc.want {
			t.Errorf("%s: Authenticode() = %x, want %x", tc.name, got, tc.want)
		}
	}

	// Every byte outside the excluded fields and the certificate table
	// changes the digest; those inside do not.
	base, _ := tdxmeasure.Authenticode(img)
	excluded := func(i int) bool {
		return (i >= peChecksum && i < peChecksum+4) || (i >= peCertEntry && i < peCertEntry+8) || i >= 0x440
	}
	for i := range img {
		if (i < 0x200 && !excluded(i)) || (i >= peCertEntry+4 && i < peCertEntry+8) {
			continue // structural header bytes (and the certificate size); their coverage is the ranges above
		}
		m := append([]byte(nil), img...)
		m[i] ^= 0x01
		got, err := tdxmeasure.Authenticode(m)
		if err != nil {
			t.Fatalf("flipping byte %#x: %v", i, err)
		}
		if (got == base) != excluded(i) {
			t.Errorf("flipping byte %#x: digest changed = %v, want %v", i, got != base, !excluded(i))
		}
	}
}

func TestAuthenticodeRejects(t *testing.T) {
	le := binary.LittleEndian
	tests := []struct {
		name   string
		mutate func(b []byte)
		want   string
	}{
		{"no MZ", func(b []byte) { b[0] = 'X' }, "no MZ"},
		{"e_lfanew past the end", func(b []byte) { le.PutUint32(b[0x3c:], 0xfffffff0) }, "no PE signature"},
		{"no PE signature", func(b []byte) { b[0x41] = 'X' }, "no PE signature"},
		{"bad magic", func(b []byte) { le.PutUint16(b[peOpt:], 0x107) }, "magic"},
		{"short optional header", func(b []byte) { le.PutUint16(b[0x54:], 100) }, "shorter"},
		{"optional header past the end", func(b []byte) { le.PutUint16(b[0x54:], 0xfff0) }, "past the end"},
		{"too many directories", func(b []byte) { le.PutUint32(b[peOpt+108:], 1000) }, "data directories"},
		{"SizeOfHeaders past the end", func(b []byte) { le.PutUint32(b[peOpt+60:], 0x10000) }, "SizeOfHeaders"},
		{"section table past SizeOfHeaders", func(b []byte) { le.PutUint32(b[peOpt+60:], 0x150) }, "section table"},
		{"too many sections", func(b []byte) { le.PutUint16(b[0x46:], 97) }, "more than 96"},
		{"section past the end", func(b []byte) { le.PutUint32(b[0x148+20:], 0xffffff00) }, "section 0"},
		{"certificate larger than the tail", func(b []byte) { le.PutUint32(b[peCertEntry+4:], 0x1000) }, "certificate table"},
	}
	for _, tc := range tests {
		img := peImage{ndirs: 16, certSize: 0x40, mutate: tc.mutate}.build()
		_, err := tdxmeasure.Authenticode(img)
		if !errors.Is(err, tdxmeasure.ErrNotPE) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Authenticode() error = %v, want ErrNotPE mentioning %q", tc.name, err, tc.want)
		}
	}
	for _, b := range [][]byte{nil, []byte("MZ"), make([]byte, 64)} {
		if _, err := tdxmeasure.Authenticode(b); !errors.Is(err, tdxmeasure.ErrNotPE) {
			t.Errorf("Authenticode(%d bytes) error = %v, want ErrNotPE", len(b), err)
		}
	}
}

// debianKernels are the Debian kernels in .cache/inputs (make test-inputs)
// with the SHA-256 Authenticode digest in their Debian Secure Boot
// signature, as `osslsigncode verify` prints it ("Current message digest").
// Debian signed them with its own tooling (sbsign), an implementation
// independent of ours and of osslsigncode.
var debianKernels = []struct{ name, signedSHA256 string }{
	{"vmlinuz-6.1.0-56-cloud-amd64", "5f21ff2c0d5d899842b28a8b19901ba72cf7a7ab93c02a77fadc6ff72be85b31"},
	{"vmlinuz-6.12.117+deb13-cloud-amd64", "a20646051d119ba9f5e4f6759d6bb1395157aa7d69bc39fa42e3e5d8cb94c56b"},
}

func TestAuthenticodeDebianSignature(t *testing.T) {
	for _, k := range debianKernels {
		img := readCached(t, k.name)
		h := sha256.New()
		if err := tdxmeasure.AuthenticodeHash(img, h); err != nil {
			t.Fatalf("%s: %v", k.name, err)
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != k.signedSHA256 {
			t.Errorf("%s: Authenticode SHA-256 = %s, Debian's signature says %s", k.name, got, k.signedSHA256)
		}
	}
}

// TestAuthenticodeOsslsigncode signs the unsigned Debian kernel with
// osslsigncode -h sha384 and a throwaway key, and compares the digest in the
// signature with ours of the unsigned and of the Debian-signed image.
func TestAuthenticodeOsslsigncode(t *testing.T) {
	tool, err := exec.LookPath("osslsigncode")
	if err != nil {
		t.Skip("osslsigncode is not installed (apt-get install osslsigncode)")
	}
	dir := t.TempDir()
	keyPEM, certPEM := throwawaySigner(t)
	key, cert := filepath.Join(dir, "key.pem"), filepath.Join(dir, "cert.pem")
	if err := os.WriteFile(key, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cert, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(tool, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("osslsigncode %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	digestRE := regexp.MustCompile(`(?m)^(Current|Calculated) message digest\s*:\s*([0-9A-Fa-f]+)`)
	for _, k := range debianKernels {
		src := cachedPath(t, k.name)
		unsigned, signed := filepath.Join(dir, k.name+".unsigned"), filepath.Join(dir, k.name+".signed")
		run("remove-signature", "-in", src, "-out", unsigned)
		run("sign", "-h", "sha384", "-certs", cert, "-key", key, "-in", unsigned, "-out", signed)
		// Verification of the chain fails (self-signed), so the exit status
		// is not used; the digests are printed either way.
		out, _ := exec.Command(tool, "verify", "-in", signed).CombinedOutput()
		m := digestRE.FindAllStringSubmatch(string(out), -1)
		if len(m) != 2 || !strings.EqualFold(m[0][2], m[1][2]) || len(m[0][2]) != 96 {
			t.Fatalf("%s: osslsigncode verify printed no matching SHA-384 current/calculated digests:\n%s", k.name, out)
		}
		want := strings.ToLower(m[0][2])
		for _, p := range []string{unsigned, src, signed} {
			img, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			got, err := tdxmeasure.Authenticode(img)
			if err != nil {
				t.Fatalf("%s: %v", p, err)
			}
			if hex.EncodeToString(got[:]) != want {
				t.Errorf("%s (%s): Authenticode() = %x, osslsigncode %s", k.name, filepath.Base(p), got, want)
			}
		}
		if raw, _ := os.ReadFile(unsigned); bytes.Equal(raw, readCached(t, k.name)) {
			t.Errorf("%s: remove-signature left the file unchanged; the test compares nothing new", k.name)
		}
	}
}

// throwawaySigner returns a synthetic P-256 key (PKCS#8 PEM) and a
// self-signed code-signing certificate for it, made for this test only.
func throwawaySigner(t *testing.T) (keyPEM, certPEM []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "cvm tdxmeasure test signer (synthetic)"},
		NotBefore:    time.Unix(1_700_000_000, 0),
		NotAfter:     time.Unix(1_700_000_000, 0).AddDate(100, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	p8, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// cachedPath returns the path of a large input in .cache/inputs, skipping
// the test when it has not been fetched.
func cachedPath(tb testing.TB, name string) string {
	tb.Helper()
	p := filepath.Join(inputDir, name)
	if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
		tb.Skipf("%s missing: run make test-inputs", p)
	} else if err != nil {
		tb.Fatal(err)
	}
	return p
}

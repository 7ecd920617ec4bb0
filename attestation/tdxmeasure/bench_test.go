package tdxmeasure_test

import (
	"crypto/sha512"
	"testing"

	"github.com/greatjail/cvm/attestation/tdxmeasure"
)

// BenchmarkMeasure is MRTD of Debian 12's OVMF.fd: metadata parsing plus
// 538 PAGE.ADD and 7680 MR.EXTEND records.
func BenchmarkMeasure(b *testing.B) {
	fw := readCached(b, "OVMF.fd")
	b.SetBytes(int64(hashedBytes(b, fw)))
	for b.Loop() {
		if _, err := tdxmeasure.MRTD(fw); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHashBound is the lower bound of BenchmarkMeasure: one SHA-384
// over as many bytes as MRTD hashes for the same image.
func BenchmarkHashBound(b *testing.B) {
	fw := readCached(b, "OVMF.fd")
	buf := make([]byte, hashedBytes(b, fw))
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		sha512.Sum384(buf)
	}
}

// hashedBytes is the number of bytes MRTD feeds to SHA-384 for fw.
func hashedBytes(tb testing.TB, fw []byte) int {
	tb.Helper()
	secs, err := tdxmeasure.ParseMetadata(fw)
	if err != nil {
		tb.Fatal(err)
	}
	_, adds, exts := tdxmeasure.MeasureCounts(fw, secs)
	return adds*128 + exts*(128+256)
}

// BenchmarkRTMR1 is RTMR1 of the Debian 12 kernel as OVMF <= 2025.02
// measures it: QEMU's header patch (a copy of the image) and the
// Authenticode SHA-384 over the whole file.
func BenchmarkRTMR1(b *testing.B) {
	k := readCached(b, "vmlinuz-6.1.0-56-cloud-amd64")
	boot := tdxmeasure.Boot{Kernel: k, Initrd: make([]byte, 1<<20), MemorySize: 4 << 30, KernelImage: tdxmeasure.KernelPatched, Stub: tdxmeasure.StubCC}
	b.SetBytes(int64(len(k)))
	for b.Loop() {
		if _, err := tdxmeasure.RTMR1(boot); err != nil {
			b.Fatal(err)
		}
	}
}

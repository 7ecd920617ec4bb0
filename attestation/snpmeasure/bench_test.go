package snpmeasure

import (
	"crypto/sha256"
	"crypto/sha512"
	"testing"
)

// benchOptions is the AmdSev fixture with the Debian kernel and the tiny
// initrd: it exercises every step (firmware page, metadata sections,
// hashes page, VMSA) and hashes 13.5 MiB of kernel, more bytes than the
// 2 MiB Debian OVMF.fd without a kernel.
func benchOptions(b *testing.B) Options {
	vs := loadVectors(b)
	for _, v := range vs {
		if v.ID == "snp-amdsev-kh-1vcpu-epycv4-f1" {
			return v.options(b)
		}
	}
	b.Fatal("vector snp-amdsev-kh-1vcpu-epycv4-f1 not found")
	return Options{}
}

// BenchmarkMeasure is LaunchDigest over benchOptions.
func BenchmarkMeasure(b *testing.B) {
	o := benchOptions(b)
	b.SetBytes(int64(len(o.Firmware) + len(o.Kernel) + len(o.Initrd)))
	for b.Loop() {
		if _, err := LaunchDigest(o); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHashBound is the floor for BenchmarkMeasure: SHA-256 over the
// kernel and initrd, plus SHA-384 over as many 4 KiB pages as LaunchDigest
// hashes with contents (firmware, hashes page, VMSA).
func BenchmarkHashBound(b *testing.B) {
	o := benchOptions(b)
	pages := make([]byte, len(o.Firmware)+PageSize+o.VCPUs*PageSize)
	b.SetBytes(int64(len(o.Firmware) + len(o.Kernel) + len(o.Initrd)))
	for b.Loop() {
		sha256.Sum256(o.Kernel)
		sha256.Sum256(o.Initrd)
		sha512.Sum384(pages)
	}
}

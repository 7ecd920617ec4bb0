package tdxmeasure_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/greatjail/cvm/attestation/tdxmeasure"
)

// patchable are the setup-header bytes PatchKernel may change.
func patchable(i int) bool {
	return i == 0x210 || i == 0x211 || (i >= 0x218 && i < 0x220) || (i >= 0x224 && i < 0x22c) || (i >= 0x20 && i < 0x24)
}

// FuzzAuthenticode checks that Authenticode and PatchKernel never panic on
// untrusted kernels, fail only with the package's sentinels, and that
// PatchKernel changes only setup-header fields.
func FuzzAuthenticode(f *testing.F) {
	f.Add(peImage{ndirs: 16, certSize: 0x40}.build())
	f.Add(peImage{ndirs: 4}.build())
	f.Add(peImage{ndirs: 16, certSize: 0x40, tail: 0x1000}.build())
	for _, k := range debianKernels {
		if b, err := os.ReadFile(filepath.Join(inputDir, k.name)); err == nil {
			f.Add(b[:0x4000]) // headers and setup header; sections cut off
		}
	}
	f.Add([]byte{})
	f.Add([]byte("MZ"))
	f.Fuzz(func(t *testing.T, img []byte) {
		if _, err := tdxmeasure.Authenticode(img); err != nil && !errors.Is(err, tdxmeasure.ErrNotPE) {
			t.Fatalf("Authenticode() error %v does not wrap ErrNotPE", err)
		}
		for _, initrd := range []int{0, 1 << 20} {
			p, err := tdxmeasure.PatchKernel(img, initrd, 1<<30, "")
			if err != nil {
				if !errors.Is(err, tdxmeasure.ErrUnsupportedBoot) {
					t.Fatalf("PatchKernel() error %v does not wrap ErrUnsupportedBoot", err)
				}
				continue
			}
			if len(p) != len(img) {
				t.Fatalf("PatchKernel() returned %d bytes for %d", len(p), len(img))
			}
			for i := range p {
				if p[i] != img[i] && !patchable(i) {
					t.Fatalf("PatchKernel() changed byte %#x", i)
				}
			}
		}
	})
}

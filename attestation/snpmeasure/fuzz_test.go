package snpmeasure

import (
	"errors"
	"os"
	"testing"
)

// fuzzSeeds returns the AmdSev fixture, the synthetic images of the unit
// tests, and the last 64 KiB of Debian's OVMF.fd when it has been fetched
// (its tables all sit in the tail).
func fuzzSeeds(f *testing.F) [][]byte {
	seeds := [][]byte{
		fixture(f),
		synthImage(nil),
		synthImage(sevMetadata(1, MetadataSection{0x800000, 0x1000, SectionSNPSecMem}), mdEntry),
	}
	if b, err := os.ReadFile("../../.cache/inputs/OVMF.fd"); err == nil && len(b) >= 64<<10 {
		seeds = append(seeds, b[len(b)-64<<10:])
	}
	return seeds
}

func FuzzParseFooterTable(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, fw []byte) {
		entries, err := ParseFooterTable(fw)
		if err != nil {
			if !errors.Is(err, ErrInvalidFirmware) {
				t.Fatalf("error %v does not wrap ErrInvalidFirmware", err)
			}
			return
		}
		n := 0
		for _, d := range entries {
			n += len(d) + footerEntrySize
		}
		if n > len(fw) {
			t.Fatalf("entries hold %d bytes of a %d-byte image", n, len(fw))
		}
	})
}

func FuzzParseSEVMetadata(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, fw []byte) {
		secs, err := ParseSEVMetadata(fw)
		if err != nil {
			if !errors.Is(err, ErrInvalidFirmware) && !errors.Is(err, ErrNoSEVMetadata) {
				t.Fatalf("error %v wraps no sentinel", err)
			}
			return
		}
		if 16+12*len(secs) > len(fw) {
			t.Fatalf("%d sections from a %d-byte image", len(secs), len(fw))
		}
		// LaunchDigest must not panic on anything the parser accepts.
		if len(fw)%PageSize == 0 {
			_, _ = LaunchDigest(Options{Firmware: fw, VCPUs: 2, VMM: VMMEC2, HasKernel: true})
		}
	})
}

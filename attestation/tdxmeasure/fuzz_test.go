package tdxmeasure_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/greatjail/cvm/attestation/tdxmeasure"
)

// FuzzParseMetadata checks that ParseMetadata and MRTD never panic, fail
// only with the package's sentinels, and that accepted metadata describes
// the input.
func FuzzParseMetadata(f *testing.F) {
	f.Add(defaultSynth().build())
	shim := defaultSynth()
	shim.tdshim = true
	f.Add(shim.build())
	if fw, err := os.ReadFile(filepath.Join(inputDir, "OVMF.fd")); err == nil {
		f.Add(fw[len(fw)-0x1000:]) // footer table and TDVF metadata
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, fw []byte) {
		secs, err := tdxmeasure.ParseMetadata(fw)
		if err != nil {
			if !errors.Is(err, tdxmeasure.ErrNoMetadata) && !errors.Is(err, tdxmeasure.ErrInvalidMetadata) {
				t.Fatalf("ParseMetadata() error %v wraps no sentinel", err)
			}
			return
		}
		pages := uint64(0)
		for i, s := range secs {
			if uint64(s.DataOffset)+uint64(s.RawDataSize) > uint64(len(fw)) {
				t.Fatalf("accepted section %d raw data beyond the %d-byte input: %+v", i, len(fw), s)
			}
			if s.Attributes&tdxmeasure.AttrPageAug == 0 {
				pages += s.MemoryDataSize / 4096
			}
		}
		if pages > 1<<12 {
			return // valid but slow to hash; the bound itself is tested elsewhere
		}
		got, err := tdxmeasure.MRTD(fw)
		if err != nil {
			t.Fatalf("MRTD() = %v after ParseMetadata accepted the input", err)
		}
		if want := independentMRTD(fw, secs); got != want {
			t.Fatalf("MRTD() = %x, independent %x", got, want)
		}
	})
}

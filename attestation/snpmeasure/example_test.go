package snpmeasure_test

import (
	"fmt"
	"log"
	"os"

	"github.com/greatjail/cvm/attestation/snpmeasure"
)

// The expected MEASUREMENT of a one-vCPU EPYC-v4 guest that QEMU starts from
// an OVMF image without a kernel.
func Example() {
	fw, err := os.ReadFile("../../testdata/measure/inputs/ovmf_AmdSev_suffix.bin")
	if err != nil {
		log.Fatal(err)
	}
	sig, err := snpmeasure.VCPUSig("EPYC-v4")
	if err != nil {
		log.Fatal(err)
	}
	ld, err := snpmeasure.LaunchDigest(snpmeasure.Options{
		Firmware:      fw,
		VCPUs:         1,
		VCPUSig:       sig,
		GuestFeatures: 0x1, // SNPActive
		VMM:           snpmeasure.VMMQEMU,
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%x\n", ld)
	// Output: 19358ba9a7615534a9a1e2f0dfc29384dcd4dcb7062ff9c6013b26869a5fc6ecabe033c48dd6f6db5d6d76e7c5df632d
}

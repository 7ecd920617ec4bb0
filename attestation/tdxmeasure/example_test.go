package tdxmeasure_test

import (
	"errors"
	"fmt"

	"github.com/greatjail/cvm/attestation/tdxmeasure"
)

func Example() {
	// A real caller reads the unified firmware file the VMM maps, e.g.
	// os.ReadFile("/usr/share/ovmf/OVMF.fd"); here a tiny synthetic one.
	fw := defaultSynth().build()

	secs, err := tdxmeasure.ParseMetadata(fw)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, s := range secs {
		fmt.Printf("%-7s gpa %#x size %#x extend=%v\n", tdxmeasure.TypeName(s.Type), s.MemoryAddress, s.MemoryDataSize, s.Attributes&tdxmeasure.AttrMRExtend != 0)
	}
	mrtd, err := tdxmeasure.MRTD(fw)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("MRTD %x\n", mrtd)

	// Images without TDVF metadata are told apart from broken ones.
	_, err = tdxmeasure.MRTD(make([]byte, 4096))
	fmt.Println(errors.Is(err, tdxmeasure.ErrNoMetadata))
	// Output:
	// BFV     gpa 0xffffd000 size 0x3000 extend=true
	// CFV     gpa 0xffffc000 size 0x1000 extend=false
	// TD_HOB  gpa 0x809000 size 0x1000 extend=false
	// TempMem gpa 0x800000 size 0x2000 extend=false
	// PermMem gpa 0x1000000 size 0x1000 extend=false
	// MRTD 84e448e73ca8ca6ea0bc2dd5602cbfa5ae7aeb834631f2b91ad3990ca0303b7df76fc78b5026469161e6c5465ca51736
	// true
}

package vmm

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// BootMSRs holds each register once, with Firecracker's values for the
// ones that are not cleared.
func TestBootMSRs(t *testing.T) {
	got := map[uint32]uint64{}
	for _, m := range BootMSRs() {
		if _, dup := got[m.Index]; dup {
			t.Errorf("MSR %#x listed twice", m.Index)
		}
		got[m.Index] = m.Data
	}
	want := map[uint32]uint64{
		0x174: 0, 0x175: 0, 0x176: 0, // SYSENTER_CS/ESP/EIP
		0xc0000081: 0, 0xc0000082: 0, 0xc0000083: 0, 0xc0000084: 0, 0xc0000102: 0, // STAR, LSTAR, CSTAR, FMASK, KERNEL_GS_BASE
		0x10:  0,         // TSC
		0x1a0: 1,         // MISC_ENABLE: fast strings
		0x2ff: 1<<11 | 6, // MTRRdefType: enabled, write-back
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("BootMSRs (-want +got):\n%s", d)
	}
}

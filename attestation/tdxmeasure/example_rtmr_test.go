package tdxmeasure_test

import (
	"fmt"

	"github.com/greatjail/cvm/attestation/tdxmeasure"
)

func ExampleRTMR2() {
	// A real caller reads the files given to QEMU -kernel and -initrd.
	boot := tdxmeasure.Boot{
		Initrd:  []byte("initrd contents"),
		Cmdline: "console=ttyS0",
		Stub:    tdxmeasure.StubCC,
	}
	opts, _ := tdxmeasure.LoadOptionsBytes(boot.Cmdline, len(boot.Initrd) > 0)
	fmt.Printf("load options: %d bytes of UTF-16LE\n", len(opts))

	r, err := tdxmeasure.RTMR2(boot)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, e := range r.Events {
		fmt.Printf("%s %x...\n", e.Name, e.Digest[:4])
	}
	v := r.Value()
	fmt.Printf("RTMR2 %x...\n", v[:8])
	// Output:
	// load options: 56 bytes of UTF-16LE
	// EV_EVENT_TAG: LOADED_IMAGE::LoadOptions 1d26f8af...
	// EV_EVENT_TAG: Linux initrd 47aaaa6f...
	// RTMR2 cd55be745a9345c1...
}

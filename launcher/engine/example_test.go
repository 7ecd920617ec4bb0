package engine_test

import (
	"errors"
	"fmt"

	"github.com/greatjail/cvm/launcher/engine"
)

// Select with "auto" falls back to QEMU (TCG) when /dev/kvm is not usable,
// and says why.
func ExampleSelect() {
	noKVM := func() error { return errors.New("open /dev/kvm: no such file or directory") }
	c, err := engine.Select("auto", noKVM)
	if err != nil {
		panic(err)
	}
	fmt.Println(c.Engine.Name(), c.Engine.Accel(), "-", c.Why)
	// Output:
	// qemu tcg - no usable KVM (open /dev/kvm: no such file or directory)
}

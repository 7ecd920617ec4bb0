// Command containerd-shim-cvm-v2 is the containerd runtime v2 shim of the
// cvm runtime class (runtime_type io.containerd.cvm.v2): one microVM per
// pod sandbox. See docs/containerd.md.
package main

import (
	"context"

	"github.com/greatjail/cvm/launcher/shim"
)

func main() {
	shim.Run(context.Background(), shim.Options{
		Name:       "io.containerd.cvm.v2",
		NewSandbox: shim.NewVMSandbox,
		Cleanup:    shim.CleanupVMSandbox,
	})
}

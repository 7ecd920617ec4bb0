package kernel_test

import (
	"fmt"
	"log"

	"github.com/greatjail/cvm/launcher/kernel"
)

// The launcher's use: the default kernel and the modules an initramfs
// needs, dependencies first. (Not run: it needs `make test-inputs`.)
func Example() {
	k, err := kernel.Default()
	if err != nil {
		log.Fatal(err)
	}
	mods, err := k.Modules([]string{"dm_crypt", "vmw_vsock_virtio_transport"}, []string{"sev-guest"})
	if err != nil {
		log.Fatal(err)
	}
	for _, m := range mods {
		fmt.Printf("/lib/modules/%s.ko (%d bytes, needs %v)\n", m.Name, len(m.Data), m.Depends)
	}
}

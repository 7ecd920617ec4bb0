package rootimage_test

import (
	"context"
	"log"

	"github.com/greatjail/cvm/launcher/shim/rootimage"
)

// The shim turns a container's root, mounted at <bundle>/rootfs, into the
// read-only disk image the pod's microVM gets.
func ExampleMake() {
	if err := rootimage.Make(context.Background(), rootimage.EROFS, "/run/bundle/rootfs", "/run/bundle/rootfs.erofs"); err != nil {
		log.Fatal(err)
	}
}

package image_test

import (
	"context"
	"log"
	"os"

	"github.com/greatjail/cvm/launcher/image"
)

// Encrypt ./rootfs into disk.img with its key in disk.key, printing
// progress. (Needs mkfs.ext4, so it only compiles here.)
func ExampleEncrypt() {
	res, err := image.Encrypt(context.Background(), image.Options{
		RootFS: "./rootfs", Out: "disk.img", KeyOut: "disk.key", Progress: os.Stderr,
	})
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("%s: %d bytes, LUKS2 UUID %s", res.Out, res.ImageSize, res.UUID)
}

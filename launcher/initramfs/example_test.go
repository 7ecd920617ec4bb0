package initramfs_test

import (
	"bytes"
	"fmt"
	"log"

	"github.com/greatjail/cvm/launcher/initramfs"
)

func Example() {
	a := initramfs.New()
	for _, err := range []error{
		a.AddFile("/init", []byte("#!/bin/sh\n"), 0o755),
		a.AddFile("/etc/cvm/modules", []byte("dm_mod\n"), 0o644), // /etc and /etc/cvm implied
		a.AddDir("/proc", 0o555),
		a.AddCharDev("/dev/console", 0o600, 5, 1),
		a.AddSymlink("/bin/sh", "/init"),
	} {
		if err != nil {
			log.Fatal(err)
		}
	}
	var buf bytes.Buffer
	n, err := a.WriteTo(&buf)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(n, n%512 == 0, buf.String()[:6])
	// Output: 1536 true 070701
}

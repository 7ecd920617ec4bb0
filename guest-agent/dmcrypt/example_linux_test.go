package dmcrypt_test

import (
	"errors"
	"log"

	"github.com/greatjail/cvm/guest-agent/dmcrypt"
	"github.com/greatjail/cvm/guest-agent/luks2"
)

// The guest agent unlocks its disk with the key the broker released, runs
// the workload from /mnt/root, and closes the volume at shutdown. (Needs
// root and device-mapper, so it only compiles here.)
func ExampleUnlock() {
	var key []byte // 64 bytes from the key broker
	v, err := dmcrypt.Unlock("/dev/vda", key, "cvm-root", "/mnt/root")
	if errors.Is(err, luks2.ErrWrongKey) {
		log.Fatal("the broker released a key for another disk: ", err)
	}
	if err != nil {
		log.Fatal(err)
	}
	defer v.Close()
	// chroot to v.Mountpoint and exec the entrypoint
}

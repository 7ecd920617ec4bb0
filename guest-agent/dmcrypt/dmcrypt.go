// Package dmcrypt maps an encrypted block device with dm-crypt through the
// device-mapper ioctls of /dev/mapper/control directly: no libdevmapper, no
// cgo, no udev (the device node is created with mknod from the device
// number the kernel returns). It is linked into the static guest agent.
//
// Open creates one mapping with a single "crypt" target; Close removes it.
// Unlock (Linux) does what the agent needs for its disk: parse the LUKS2
// header, check the key, map, and mount ext4.
package dmcrypt

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// nameMax is DM_NAME_LEN minus the terminating NUL.
const nameMax = 127

// checkName validates a device-mapper name: it becomes /dev/mapper/<name>.
func checkName(name string) error {
	if name == "" || name == "." || name == ".." || len(name) > nameMax {
		return fmt.Errorf("dmcrypt: invalid mapping name %q (1..%d bytes, not . or ..)", name, nameMax)
	}
	for _, c := range []byte(name) {
		if c <= ' ' || c >= 0x7f || c == '/' {
			return fmt.Errorf("dmcrypt: invalid mapping name %q: only printable ASCII without spaces or '/'", name)
		}
	}
	return nil
}

// table returns the dm-crypt target parameters
//
//	<cipher> <hex key> <iv offset 0> <backing device> <offset sectors>
//
// for a mapping of the backing device from offsetSectors on. The caller
// must clear the returned buffer: it holds the key.
func table(cipher string, key []byte, backing string, offsetSectors uint64) ([]byte, error) {
	if cipher == "" || strings.ContainsFunc(cipher, func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
		return nil, fmt.Errorf("dmcrypt: invalid cipher %q", cipher)
	}
	if len(key) == 0 || len(key) > 128 {
		return nil, fmt.Errorf("dmcrypt: key of %d bytes; want 1..128", len(key))
	}
	if backing == "" || strings.ContainsFunc(backing, func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
		return nil, fmt.Errorf("dmcrypt: invalid backing device %q", backing)
	}
	b := make([]byte, 0, len(cipher)+2*len(key)+len(backing)+32)
	b = append(b, cipher...)
	b = append(b, ' ')
	b = hex.AppendEncode(b, key)
	b = append(b, " 0 "...)
	b = append(b, backing...)
	b = append(b, ' ')
	b = strconv.AppendUint(b, offsetSectors, 10)
	return b, nil
}

// ErrNoDeviceMapper is returned (wrapped) when the kernel has no
// device-mapper: no /dev/mapper/control and no misc device to make it from.
var ErrNoDeviceMapper = errors.New("device-mapper is not available in this kernel (is the dm_mod module loaded?)")

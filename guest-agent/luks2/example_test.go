package luks2_test

import (
	"bytes"
	"errors"
	"fmt"
	"sync"

	"github.com/greatjail/cvm/guest-agent/luks2"
)

// memDisk is an in-memory disk (Encrypt writes from several goroutines).
type memDisk struct {
	mu sync.Mutex
	b  []byte
}

func (m *memDisk) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if end := int(off) + len(p); end > len(m.b) {
		m.b = append(m.b, make([]byte, end-len(m.b))...)
	}
	return copy(m.b[off:], p), nil
}

// The tenant formats and fills a disk; the guest parses the header and
// checks the key it was given.
func Example() {
	key := bytes.Repeat([]byte{0x5a}, 64) // synthetic; use crypto/rand
	disk := &memDisk{}
	h, err := luks2.Format(disk, key, luks2.FormatOptions{KeyslotIterations: 1000, DigestIterations: 1000})
	if err != nil {
		panic(err)
	}
	if _, err := luks2.Encrypt(disk, h, key, bytes.NewReader([]byte("an ext4 file system"))); err != nil {
		panic(err)
	}

	g, err := luks2.Parse(bytes.NewReader(disk.b))
	if err != nil {
		panic(err)
	}
	fmt.Println(g.Segment.Encryption, g.Segment.Offset, g.Segment.SectorSize)
	fmt.Println(g.CheckKey(key))
	fmt.Println(errors.Is(g.CheckKey(bytes.Repeat([]byte{1}, 64)), luks2.ErrWrongKey))
	// Output:
	// aes-xts-plain64 16777216 512
	// <nil>
	// true
}

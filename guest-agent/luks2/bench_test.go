package luks2

import (
	"bytes"
	"io"
	"testing"
)

// BenchmarkEncrypt measures the data-segment encryption (Encrypt: read,
// encrypt per 512-byte sector, write) next to raw AES-XTS over the same
// bytes.
func BenchmarkEncrypt(b *testing.B) {
	key := testKey(1)
	w := &memFile{}
	h, err := Format(w, key, fastOpts)
	if err != nil {
		b.Fatal(err)
	}
	plain := make([]byte, 8<<20)
	b.Run("Encrypt", func(b *testing.B) {
		b.SetBytes(int64(len(plain)))
		for b.Loop() {
			if _, err := Encrypt(discardAt{}, h, key, bytes.NewReader(plain)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("raw-xts", func(b *testing.B) {
		c, err := newXTS(key)
		if err != nil {
			b.Fatal(err)
		}
		buf := bytes.Clone(plain)
		b.SetBytes(int64(len(buf)))
		for b.Loop() {
			xtsSectors(c, buf, 0, false)
		}
	})
}

type discardAt struct{}

func (discardAt) WriteAt(p []byte, _ int64) (int, error) { return io.Discard.Write(p) }

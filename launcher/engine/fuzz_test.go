package engine

import (
	"bytes"
	"testing"
)

// FuzzReadLine: the reply to CONNECT comes from the VMM's socket; readLine
// never reads past the newline or past its limit, and never panics.
func FuzzReadLine(f *testing.F) {
	for _, s := range []string{"OK 1073741824\nrest", "OK 5\n", "", "\n", "NOPE", string(bytes.Repeat([]byte{'A'}, 100))} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		line, err := readLine(r, 64)
		consumed := len(b) - r.Len()
		if consumed > 64 {
			t.Fatalf("consumed %d bytes, limit 64", consumed)
		}
		if err == nil {
			if consumed != len(line)+1 || b[consumed-1] != '\n' || bytes.IndexByte(b[:consumed-1], '\n') >= 0 {
				t.Fatalf("line %q, consumed %d of %q: not exactly through the first newline", line, consumed, b)
			}
		}
	})
}

package link

import (
	"bytes"
	"testing"
)

func FuzzReadPSPRequest(f *testing.F) {
	f.Add(append(make([]byte, 64), 1, 0, 0, 0))
	f.Add(make([]byte, 67))
	f.Add(append(make([]byte, 64), 9, 0, 0, 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ReadPSPRequest(bytes.NewReader(b))
		if err != nil {
			return
		}
		out, err := r.MarshalBinary()
		if err != nil {
			t.Fatalf("a decoded request does not encode: %v", err)
		}
		if !bytes.Equal(out, b[:68]) {
			t.Fatalf("round trip %x, want %x", out, b[:68])
		}
	})
}

func FuzzReadPSPResponse(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 2, 0, 0, 0, 'r', 'r', 1, 0, 0, 0, 'c'})
	f.Add([]byte{1, 0, 0, 0, 3, 0, 0, 0, 'b', 'a', 'd'})
	f.Add([]byte{0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ReadPSPResponse(bytes.NewReader(b))
		if err != nil {
			return
		}
		if len(r.Report) > MaxPSPReport || len(r.CertTable) > MaxPSPCertTable || len(r.Message) > MaxPSPMessage {
			t.Fatalf("over a limit: %d/%d/%d", len(r.Report), len(r.CertTable), len(r.Message))
		}
		out, err := r.MarshalBinary()
		if err != nil {
			t.Fatalf("a decoded response does not encode: %v", err)
		}
		if !bytes.Equal(out, b[:len(out)]) {
			t.Fatalf("round trip %x, want prefix of %x", out, b)
		}
	})
}

func FuzzReadHeader(f *testing.F) {
	for _, s := range []string{"ttrpc\n", "kbs\n", "psp\nxx", "log\n", "\n", "abcdefghijklmnopq\n", "x"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		kind, err := ReadHeader(r)
		if err != nil {
			return
		}
		used := len(b) - r.Len()
		if used > MaxHeader || used != len(kind)+1 || string(b[:used]) != kind+"\n" {
			t.Fatalf("ReadHeader(%q) = %q after %d bytes", b, kind, used)
		}
	})
}

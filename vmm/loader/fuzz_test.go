package loader

import (
	"bytes"
	"errors"
	"os"
	"testing"
)

// FuzzParse checks that Parse never panics, returns either a kernel or a
// sentinel error, and that every returned segment lies within the input
// and within its declared memory size.
func FuzzParse(f *testing.F) {
	if b, err := os.ReadFile(realKernelPath); err == nil {
		f.Add(b[:64<<10])
	}
	f.Add(synthBzImage(nil))
	f.Add(synthELF(elfOpts{}))
	f.Add(synthELF(elfOpts{desc: le.AppendUint64(nil, 0x2000000), memExtra: 0x1000}))
	f.Add([]byte("\x7fELF"))
	f.Add(synthBzImage(func(b []byte) { b[0x201] = 0x8e })[:0x280])
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := Parse(b)
		if err != nil {
			if k != nil {
				t.Fatalf("Parse() = %+v and error %v", k, err)
			}
			if !errors.Is(err, ErrFormat) && !errors.Is(err, ErrUnsupported) && !errors.Is(err, ErrNoPVH) {
				t.Fatalf("Parse() error %v wraps no sentinel", err)
			}
			return
		}
		if len(k.Segments) == 0 {
			t.Fatal("Parse() returned a kernel without segments")
		}
		for i, s := range k.Segments {
			if uint64(len(s.Data)) > s.MemSize || s.GPA+s.MemSize < s.GPA {
				t.Fatalf("segment %d: %d bytes, memory size %#x at %#x", i, len(s.Data), s.MemSize, s.GPA)
			}
			if len(s.Data) > 0 && !bytes.Contains(b, s.Data) {
				t.Fatalf("segment %d is not part of the input", i)
			}
		}
		if k.Format == BzImage && (k.SetupHeader == nil || len(k.SetupHeader.Raw) == 0) {
			t.Fatal("bzImage without setup header")
		}
		// Laying out a boot from whatever parsed must not panic either.
		_, _ = Linux(BootOptions{Kernel: b, Initrd: []byte{1}, Cmdline: "console=ttyS0", MemorySize: 128 << 20, VCPUs: 1})
	})
}

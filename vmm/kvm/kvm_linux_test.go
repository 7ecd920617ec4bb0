package kvm

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestOpenErrors(t *testing.T) {
	regular := filepath.Join(t.TempDir(), "not-kvm")
	if err := os.WriteFile(regular, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path    string
		wantErr error
	}{
		{"/nonexistent/kvm", ErrNoKVM},
		{"/dev/null", ErrNoKVM},
		{regular, ErrNoKVM},
	}
	for _, tt := range tests {
		s, err := Open(tt.path)
		if err == nil {
			s.Close()
			t.Errorf("Open(%q) succeeded, want error", tt.path)
			continue
		}
		if !errors.Is(err, tt.wantErr) {
			t.Errorf("Open(%q) = %v, want %v", tt.path, err, tt.wantErr)
		}
		if !strings.Contains(err.Error(), tt.path) {
			t.Errorf("Open(%q) = %q, which does not name the path", tt.path, err)
		}
	}
	if err := func() error { _, err := Open("/nonexistent/kvm"); return err }(); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open(missing) = %v, want it to match fs.ErrNotExist too", err)
	}
}

func TestCheckRegion(t *testing.T) {
	const ps = 4096
	mem, err := Mmap(4 * ps)
	if err != nil {
		t.Fatal(err)
	}
	defer Munmap(mem)
	tests := []struct {
		name    string
		gpa     uint64
		mem     []byte
		wantErr error
	}{
		{"whole mapping", 0, mem, nil},
		{"page-aligned sub-slice", 0x100000, mem[ps : 3*ps], nil},
		{"delete slot", 0, nil, nil},
		{"unaligned host address", 0, mem[1 : ps+1], ErrInvalid},
		{"partial page", 0, mem[:ps+1], ErrInvalid},
		{"unaligned gpa", 0x1001, mem, ErrInvalid},
		{"wraps", ^uint64(0) &^ (ps - 1), mem[:2*ps], ErrInvalid},
	}
	for _, tt := range tests {
		if err := checkRegion(tt.gpa, tt.mem, ps); !errors.Is(err, tt.wantErr) {
			t.Errorf("checkRegion(%s) = %v, want %v", tt.name, err, tt.wantErr)
		}
	}
}

func TestMmapInvalid(t *testing.T) {
	for _, size := range []int{0, -4096, 100} {
		if b, err := Mmap(size); !errors.Is(err, ErrInvalid) {
			if err == nil {
				Munmap(b)
			}
			t.Errorf("Mmap(%d) = %v, want ErrInvalid", size, err)
		}
	}
}

func TestRegisterConversions(t *testing.T) {
	s := Sregs{
		CS:  Segment{Base: 1, Limit: 0xffffffff, Selector: 8, Type: 11, Present: true, S: true, L: true, G: true},
		DS:  Segment{Selector: 0x10, Type: 3, Present: true, DB: true, S: true, G: true, AVL: true},
		TR:  Segment{Selector: 0x18, Type: 11, Present: true, DPL: 3, Unusable: true},
		GDT: DTable{Base: 0x500, Limit: 31}, IDT: DTable{Base: 0x520, Limit: 7},
		CR0: CR0PE | CR0PG, CR2: 2, CR3: 0x9000, CR4: CR4PAE, CR8: 8, EFER: EFERLME | EFERLMA, APICBase: 0xfee00900,
		InterruptBitmap: [4]uint64{1, 2, 3, 4},
	}
	if diff := cmp.Diff(s, sregsFromRaw(sregsToRaw(s))); diff != "" {
		t.Errorf("Sregs round trip (-want +got):\n%s", diff)
	}
	f := FPU{FCW: 0x37f, FSW: 1, FTWX: 2, LastOpcode: 3, LastIP: 4, LastDP: 5, MXCSR: 0x1f80}
	f.FPR[7][15], f.XMM[15][0] = 9, 10
	if diff := cmp.Diff(f, fpuFromRaw(fpuToRaw(f))); diff != "" {
		t.Errorf("FPU round trip (-want +got):\n%s", diff)
	}
	c := &CPUID{Entries: []CPUIDEntry{
		{Function: 0, EAX: 0xd, EBX: 0x756e6547},
		{Function: 7, Index: 1, Flags: CPUIDFlagSignificantIndex, EDX: 5},
	}}
	_, _, raw := cpuidBuffer(len(c.Entries))
	cpuidToRaw(c, raw)
	if diff := cmp.Diff(c, cpuidFromRaw(raw)); diff != "" {
		t.Errorf("CPUID round trip (-want +got):\n%s", diff)
	}
	if got := c.Find(7, 1); got == nil || got.EDX != 5 {
		t.Errorf("Find(7, 1) = %+v, want the EDX=5 entry", got)
	}
	if got := c.Find(7, 0); got != nil {
		t.Errorf("Find(7, 0) = %+v, want nil (index is significant)", got)
	}
	if got := c.Find(0, 42); got == nil {
		t.Errorf("Find(0, 42) = nil, want leaf 0 (index not significant)")
	}
}

package kvm

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const testRunSize = 3 * 4096 // a typical KVM_GET_VCPU_MMAP_SIZE

// runPage builds a synthetic kvm_run area: exit reason plus little-endian
// fields written at the given offsets.
type field struct {
	off int
	val any // uint8, uint16, uint32, uint64 or []byte
}

func runPage(reason ExitReason, fields ...field) []byte {
	p := make([]byte, testRunSize)
	binary.LittleEndian.PutUint32(p[runExitReason:], uint32(reason))
	for _, f := range fields {
		switch v := f.val.(type) {
		case uint8:
			p[f.off] = v
		case uint16:
			binary.LittleEndian.PutUint16(p[f.off:], v)
		case uint32:
			binary.LittleEndian.PutUint32(p[f.off:], v)
		case uint64:
			binary.LittleEndian.PutUint64(p[f.off:], v)
		case []byte:
			copy(p[f.off:], v)
		}
	}
	return p
}

func ioPage(dir, size uint8, port uint16, count uint32, off uint64, data []byte) []byte {
	return runPage(ExitIO,
		field{runIODirection, dir}, field{runIOSize, size}, field{runIOPort, port},
		field{runIOCount, count}, field{runIODataOffset, off}, field{int(off) % testRunSize, data})
}

func TestDecodeExit(t *testing.T) {
	tests := []struct {
		name    string
		run     []byte
		want    Exit
		wantErr error
	}{
		{
			name: "io out byte",
			run:  ioPage(1, 1, 0x10, 1, 4096, []byte{0x42}),
			want: Exit{Reason: ExitIO, IO: IOExit{Direction: IOOut, Size: 1, Port: 0x10, Count: 1, Data: []byte{0x42}}},
		},
		{
			name: "io rep in words",
			run:  ioPage(0, 2, 0x1f0, 3, 4096, []byte{1, 2, 3, 4, 5, 6}),
			want: Exit{Reason: ExitIO, IO: IOExit{Direction: IOIn, Size: 2, Port: 0x1f0, Count: 3, Data: []byte{1, 2, 3, 4, 5, 6}}},
		},
		{
			name: "io data ends exactly at the area's end",
			run:  ioPage(1, 4, 0x3f8, 2, testRunSize-8, []byte{1, 2, 3, 4, 5, 6, 7, 8}),
			want: Exit{Reason: ExitIO, IO: IOExit{Direction: IOOut, Size: 4, Port: 0x3f8, Count: 2, Data: []byte{1, 2, 3, 4, 5, 6, 7, 8}}},
		},
		{name: "io data past the end", run: ioPage(1, 4, 0x3f8, 3, testRunSize-8, nil), wantErr: ErrMalformedExit},
		{name: "io huge count", run: ioPage(1, 4, 0x3f8, 0xffffffff, 4096, nil), wantErr: ErrMalformedExit},
		{name: "io huge offset", run: runPage(ExitIO, field{runIODirection, uint8(1)}, field{runIOSize, uint8(1)}, field{runIOCount, uint32(1)}, field{runIODataOffset, ^uint64(0)}), wantErr: ErrMalformedExit},
		{name: "io data inside the header", run: ioPage(1, 1, 0x10, 1, 8, nil), wantErr: ErrMalformedExit},
		{name: "io bad size", run: ioPage(1, 3, 0x10, 1, 4096, nil), wantErr: ErrMalformedExit},
		{name: "io bad direction", run: ioPage(2, 1, 0x10, 1, 4096, nil), wantErr: ErrMalformedExit},
		{
			name: "mmio write dword",
			run: runPage(ExitMMIO, field{runMMIOPhysAddr, uint64(0xd0000000)}, field{runMMIOData, []byte{0xef, 0xbe, 0xad, 0xde, 9, 9, 9, 9}},
				field{runMMIOLen, uint32(4)}, field{runMMIOIsWrite, uint8(1)}),
			want: Exit{Reason: ExitMMIO, MMIO: MMIOExit{Addr: 0xd0000000, IsWrite: true, Data: []byte{0xef, 0xbe, 0xad, 0xde}}},
		},
		{
			name: "mmio read qword",
			run:  runPage(ExitMMIO, field{runMMIOPhysAddr, uint64(0xfee00000)}, field{runMMIOLen, uint32(8)}),
			want: Exit{Reason: ExitMMIO, MMIO: MMIOExit{Addr: 0xfee00000, Data: make([]byte, 8)}},
		},
		{name: "mmio len 9", run: runPage(ExitMMIO, field{runMMIOLen, uint32(9)}), wantErr: ErrMalformedExit},
		{name: "mmio len 0", run: runPage(ExitMMIO), wantErr: ErrMalformedExit},
		{name: "hlt", run: runPage(ExitHLT), want: Exit{Reason: ExitHLT}},
		{name: "shutdown", run: runPage(ExitShutdown), want: Exit{Reason: ExitShutdown}},
		{
			name: "fail entry",
			run:  runPage(ExitFailEntry, field{runFailEntryReason, uint64(0x80000021)}, field{runFailEntryCPU, uint32(1)}),
			want: Exit{Reason: ExitFailEntry, FailEntry: FailEntryExit{HardwareReason: 0x80000021, CPU: 1}},
		},
		{
			name: "internal error emulation",
			run:  runPage(ExitInternalError, field{runInternalSuberror, uint32(1)}, field{runNData, uint32(2)}, field{runData, uint64(0xaa)}, field{runData + 8, uint64(0xbb)}),
			want: Exit{Reason: ExitInternalError, Internal: InternalExit{Suberror: 1, Data: []uint64{0xaa, 0xbb}}},
		},
		{
			name: "system event with ndata clamped to 16",
			run:  runPage(ExitSystemEvent, field{runSystemEventType, uint32(2)}, field{runNData, uint32(1000)}),
			want: Exit{Reason: ExitSystemEvent, SystemEvent: SystemEventExit{Type: 2, Data: make([]uint64, 16)}},
		},
		{
			name: "unknown with hardware reason",
			run:  runPage(ExitUnknown, field{runHWExitReason, uint64(0x1e)}),
			want: Exit{Reason: ExitUnknown, HardwareReason: 0x1e},
		},
		{name: "undecoded reason", run: runPage(ExitReason(99)), want: Exit{Reason: 99}},
		{name: "area too short", run: make([]byte, runUnionEnd-1), wantErr: ErrMalformedExit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeExit(tt.run)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("decodeExit() error = %v, want %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("decodeExit() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDecodeExitAliases checks that I/O and MMIO data are windows onto the
// shared area (so IN/read results reach the kernel) with no spare capacity.
func TestDecodeExitAliases(t *testing.T) {
	run := ioPage(0, 1, 0x60, 1, 4096, nil)
	e, err := decodeExit(run)
	if err != nil {
		t.Fatal(err)
	}
	e.IO.Data[0] = 0x5a
	if run[4096] != 0x5a {
		t.Errorf("writing IO.Data[0] did not reach run[4096]")
	}
	if cap(e.IO.Data) != len(e.IO.Data) {
		t.Errorf("cap(IO.Data) = %d, want %d", cap(e.IO.Data), len(e.IO.Data))
	}
	run = runPage(ExitMMIO, field{runMMIOLen, uint32(2)})
	e, err = decodeExit(run)
	if err != nil {
		t.Fatal(err)
	}
	e.MMIO.Data[1] = 0x77
	if run[runMMIOData+1] != 0x77 || cap(e.MMIO.Data) != 2 {
		t.Errorf("MMIO.Data is not run[40:42:42]")
	}
}

func TestExitStrings(t *testing.T) {
	tests := []struct {
		got, want string
	}{
		{ExitHLT.String(), "HLT"},
		{ExitReason(99).String(), "ExitReason(99)"},
		{Exit{Reason: ExitIO, IO: IOExit{Direction: IOOut, Size: 1, Port: 0x10, Count: 1}}.String(), "IO out port 0x10 size 1 count 1"},
		{Exit{Reason: ExitMMIO, MMIO: MMIOExit{Addr: 0xd0000000, IsWrite: true, Data: make([]byte, 4)}}.String(), "MMIO write 0xd0000000 len 4"},
		{Exit{Reason: ExitInternalError, Internal: InternalExit{Suberror: 1}}.String(), "INTERNAL_ERROR suberror 1 data []"},
		{Exit{Reason: ExitShutdown}.String(), "SHUTDOWN"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("String() = %q, want %q", tt.got, tt.want)
		}
	}
}

// FuzzDecodeExit feeds arbitrary kvm_run contents (shared with the kernel,
// and partly guest-controlled) to the decoder: it must not panic, and any
// data it returns must be a window inside the area at the offset the
// header names.
func FuzzDecodeExit(f *testing.F) {
	f.Add(ioPage(1, 1, 0x10, 1, 4096, []byte{0x42})[:4097])
	f.Add(ioPage(0, 4, 0x3f8, 2, 300, nil)[:308])
	f.Add(runPage(ExitMMIO, field{runMMIOPhysAddr, uint64(0xd0000000)}, field{runMMIOLen, uint32(4)}, field{runMMIOIsWrite, uint8(1)})[:runUnionEnd])
	f.Add(runPage(ExitInternalError, field{runInternalSuberror, uint32(1)}, field{runNData, uint32(3)})[:runUnionEnd])
	f.Add(runPage(ExitSystemEvent, field{runNData, uint32(17)})[:runUnionEnd])
	f.Add(runPage(ExitHLT)[:runUnionEnd])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, run []byte) {
		e, err := decodeExit(run)
		if err != nil {
			return
		}
		switch e.Reason {
		case ExitIO:
			off := binary.LittleEndian.Uint64(run[runIODataOffset:])
			n := uint64(len(e.IO.Data))
			if n != uint64(e.IO.Size)*uint64(e.IO.Count) || off+n > uint64(len(run)) || off < runUnionEnd {
				t.Fatalf("IO data [%d, +%d) for size %d count %d in a %d-byte area", off, n, e.IO.Size, e.IO.Count, len(run))
			}
			checkAlias(t, run, e.IO.Data, int(off))
		case ExitMMIO:
			if len(e.MMIO.Data) == 0 || len(e.MMIO.Data) > 8 {
				t.Fatalf("MMIO data length %d", len(e.MMIO.Data))
			}
			checkAlias(t, run, e.MMIO.Data, runMMIOData)
		case ExitInternalError:
			if len(e.Internal.Data) > runMaxData {
				t.Fatalf("internal data has %d words", len(e.Internal.Data))
			}
		case ExitSystemEvent:
			if len(e.SystemEvent.Data) > runMaxData {
				t.Fatalf("system event data has %d words", len(e.SystemEvent.Data))
			}
		}
	})
}

// checkAlias proves data is run[off:off+len(data)] by writing through it.
func checkAlias(t *testing.T, run, data []byte, off int) {
	t.Helper()
	if cap(data) != len(data) {
		t.Fatalf("data has spare capacity %d > %d", cap(data), len(data))
	}
	for i := range data {
		old := run[off+i]
		data[i] = ^old
		if run[off+i] != ^old {
			t.Fatalf("data[%d] is not run[%d]", i, off+i)
		}
		data[i] = old
	}
}

package kvm

import (
	"encoding/binary"
	"fmt"
)

// ExitReason says why KVM_RUN returned to userspace (KVM_EXIT_*).
type ExitReason uint32

// Exit reasons. Only the ones a simple VMM meets are named; others print
// as ExitReason(N).
const (
	ExitUnknown       ExitReason = 0
	ExitException     ExitReason = 1
	ExitIO            ExitReason = 2
	ExitHypercall     ExitReason = 3
	ExitDebug         ExitReason = 4
	ExitHLT           ExitReason = 5
	ExitMMIO          ExitReason = 6
	ExitIRQWindowOpen ExitReason = 7
	ExitShutdown      ExitReason = 8
	ExitFailEntry     ExitReason = 9
	ExitIntr          ExitReason = 10
	ExitNMI           ExitReason = 16
	ExitInternalError ExitReason = 17
	ExitSystemEvent   ExitReason = 24
)

var exitNames = map[ExitReason]string{
	ExitUnknown:       "UNKNOWN",
	ExitException:     "EXCEPTION",
	ExitIO:            "IO",
	ExitHypercall:     "HYPERCALL",
	ExitDebug:         "DEBUG",
	ExitHLT:           "HLT",
	ExitMMIO:          "MMIO",
	ExitIRQWindowOpen: "IRQ_WINDOW_OPEN",
	ExitShutdown:      "SHUTDOWN",
	ExitFailEntry:     "FAIL_ENTRY",
	ExitIntr:          "INTR",
	ExitNMI:           "NMI",
	ExitInternalError: "INTERNAL_ERROR",
	ExitSystemEvent:   "SYSTEM_EVENT",
}

func (r ExitReason) String() string {
	if s, ok := exitNames[r]; ok {
		return s
	}
	return fmt.Sprintf("ExitReason(%d)", uint32(r))
}

// IODirection is the direction of a port I/O exit.
type IODirection uint8

// Port I/O directions (KVM_EXIT_IO_IN, KVM_EXIT_IO_OUT).
const (
	IOIn  IODirection = 0
	IOOut IODirection = 1
)

func (d IODirection) String() string {
	switch d {
	case IOIn:
		return "in"
	case IOOut:
		return "out"
	}
	return fmt.Sprintf("IODirection(%d)", uint8(d))
}

// IOExit is a port I/O access (ExitIO).
type IOExit struct {
	Direction IODirection
	Size      uint8  // bytes per access: 1, 2 or 4
	Port      uint16 // first port
	Count     uint32 // accesses (more than 1 for rep ins/outs)
	// Data is Count*Size bytes in the shared kvm_run area. For IOOut it
	// holds what the guest wrote; for IOIn the handler fills it before the
	// next Run.
	Data []byte
}

// MMIOExit is a guest access to a physical address with no memory slot
// (ExitMMIO).
type MMIOExit struct {
	Addr    uint64
	IsWrite bool
	// Data is the access, 1 to 8 bytes, in the shared kvm_run area. For a
	// write it holds the value; for a read the handler fills it before the
	// next Run.
	Data []byte
}

// FailEntryExit reports that the hardware refused to enter the guest
// (ExitFailEntry).
type FailEntryExit struct {
	HardwareReason uint64
	CPU            uint32
}

// InternalExit is a KVM internal error (ExitInternalError), for example
// an instruction the emulator cannot handle.
type InternalExit struct {
	Suberror uint32 // KVM_INTERNAL_ERROR_*: 1 emulation, 2 simultaneous exceptions, 3 delivery event, 4 unexpected exit reason
	Data     []uint64
}

// SystemEventExit is a guest request to stop or reset (ExitSystemEvent).
type SystemEventExit struct {
	Type uint32 // KVM_SYSTEM_EVENT_*: 1 shutdown, 2 reset, 3 crash
	Data []uint64
}

// Exit is a decoded KVM_RUN exit. Only the member matching Reason is set.
// Slices alias the vCPU's shared kvm_run area and are valid until the next
// Run.
type Exit struct {
	Reason         ExitReason
	IO             IOExit
	MMIO           MMIOExit
	FailEntry      FailEntryExit
	Internal       InternalExit
	SystemEvent    SystemEventExit
	HardwareReason uint64 // ExitUnknown: the hardware exit reason
}

func (e Exit) String() string {
	switch e.Reason {
	case ExitIO:
		return fmt.Sprintf("IO %s port %#x size %d count %d", e.IO.Direction, e.IO.Port, e.IO.Size, e.IO.Count)
	case ExitMMIO:
		dir := "read"
		if e.MMIO.IsWrite {
			dir = "write"
		}
		return fmt.Sprintf("MMIO %s %#x len %d", dir, e.MMIO.Addr, len(e.MMIO.Data))
	case ExitFailEntry:
		return fmt.Sprintf("FAIL_ENTRY hardware reason %#x cpu %d", e.FailEntry.HardwareReason, e.FailEntry.CPU)
	case ExitInternalError:
		return fmt.Sprintf("INTERNAL_ERROR suberror %d data %#x", e.Internal.Suberror, e.Internal.Data)
	case ExitSystemEvent:
		return fmt.Sprintf("SYSTEM_EVENT type %d data %#x", e.SystemEvent.Type, e.SystemEvent.Data)
	case ExitUnknown:
		return fmt.Sprintf("UNKNOWN hardware reason %#x", e.HardwareReason)
	}
	return e.Reason.String()
}

// decodeExit decodes the exit recorded in a vCPU's kvm_run area (the whole
// KVM_GET_VCPU_MMAP_SIZE mapping, since I/O data lives after the struct).
// The area is shared with the kernel and, through I/O data, filled by the
// guest, so every length and offset is checked: returned slices always
// lie inside run.
func decodeExit(run []byte) (Exit, error) {
	if len(run) < runUnionEnd {
		return Exit{}, fmt.Errorf("kvm_run area is %d bytes, want at least %d: %w", len(run), runUnionEnd, ErrMalformedExit)
	}
	le := binary.LittleEndian
	e := Exit{Reason: ExitReason(le.Uint32(run[runExitReason:]))}
	switch e.Reason {
	case ExitIO:
		io := IOExit{
			Direction: IODirection(run[runIODirection]),
			Size:      run[runIOSize],
			Port:      le.Uint16(run[runIOPort:]),
			Count:     le.Uint32(run[runIOCount:]),
		}
		if io.Direction != IOIn && io.Direction != IOOut {
			return Exit{}, fmt.Errorf("io exit: direction %d: %w", io.Direction, ErrMalformedExit)
		}
		if io.Size != 1 && io.Size != 2 && io.Size != 4 {
			return Exit{}, fmt.Errorf("io exit: size %d: %w", io.Size, ErrMalformedExit)
		}
		off := le.Uint64(run[runIODataOffset:])
		n := uint64(io.Size) * uint64(io.Count) // at most 4 * (2^32-1): no overflow
		if off < runUnionEnd || off > uint64(len(run)) || n > uint64(len(run))-off {
			return Exit{}, fmt.Errorf("io exit: data [%#x, +%#x) outside the %#x-byte kvm_run area: %w", off, n, len(run), ErrMalformedExit)
		}
		io.Data = run[off : off+n : off+n]
		e.IO = io
	case ExitMMIO:
		n := le.Uint32(run[runMMIOLen:])
		if n == 0 || n > 8 {
			return Exit{}, fmt.Errorf("mmio exit: length %d: %w", n, ErrMalformedExit)
		}
		e.MMIO = MMIOExit{
			Addr:    le.Uint64(run[runMMIOPhysAddr:]),
			IsWrite: run[runMMIOIsWrite] != 0,
			Data:    run[runMMIOData : runMMIOData+n : runMMIOData+n],
		}
	case ExitFailEntry:
		e.FailEntry = FailEntryExit{
			HardwareReason: le.Uint64(run[runFailEntryReason:]),
			CPU:            le.Uint32(run[runFailEntryCPU:]),
		}
	case ExitInternalError:
		e.Internal = InternalExit{Suberror: le.Uint32(run[runInternalSuberror:]), Data: exitData(run)}
	case ExitSystemEvent:
		e.SystemEvent = SystemEventExit{Type: le.Uint32(run[runSystemEventType:]), Data: exitData(run)}
	case ExitUnknown:
		e.HardwareReason = le.Uint64(run[runHWExitReason:])
	}
	return e, nil
}

// exitData copies the ndata/data[16] words shared by the internal and
// system_event members. Kernels before 5.18 did not fill ndata for system
// events, so a count above 16 is clamped rather than rejected.
func exitData(run []byte) []uint64 {
	n := binary.LittleEndian.Uint32(run[runNData:])
	if n > runMaxData {
		n = runMaxData
	}
	if n == 0 {
		return nil
	}
	d := make([]uint64, n)
	for i := range d {
		d[i] = binary.LittleEndian.Uint64(run[runData+8*i:])
	}
	return d
}

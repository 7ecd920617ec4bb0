package devices

import "sync/atomic"

// I8042 port offsets from base port 0x60.
const (
	I8042Base = 0x60
	// i8042Command is port 0x64 (status on read, command on write).
	i8042Command = 4
	// i8042CmdReset pulses the CPU reset line.
	i8042CmdReset = 0xfe
)

// I8042 is a keyboard controller whose only job is guest reset: Linux
// reboots (reboot=k) by writing 0xFE to port 0x64. There is no keyboard.
// It is safe for concurrent use.
type I8042 struct {
	reset func()
	fired atomic.Bool
}

// NewI8042 returns a controller that calls reset (on the vCPU thread that
// wrote the command) the first time the guest asks for a CPU reset; later
// requests are ignored, so reset need not be idempotent.
func NewI8042(reset func()) *I8042 { return &I8042{reset: reset} }

// Read handles a port load at off = port - I8042Base. Every register reads
// as zero: status "output buffer empty, input buffer empty".
func (k *I8042) Read(off uint64, p []byte) { clear(p) }

// Write handles a port store at off = port - I8042Base.
func (k *I8042) Write(off uint64, p []byte) {
	if off != i8042Command || len(p) == 0 || p[0] != i8042CmdReset {
		return
	}
	if k.fired.CompareAndSwap(false, true) && k.reset != nil {
		k.reset()
	}
}

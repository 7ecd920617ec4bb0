package vmm

import "github.com/greatjail/cvm/vmm/acpi"

// Reasons Run reports in Result.Reason.
const (
	ReasonPowerOff = "poweroff"
	ReasonReboot   = "reboot"
	ReasonCanceled = "canceled"
)

// Result says how a VM ended.
type Result struct {
	// Reason is ReasonPowerOff, ReasonReboot or ReasonCanceled.
	Reason string
}

// sleepPort is the ACPI sleep control/status and reset register, all on
// one port (acpi.DefaultSleepPort).
type sleepPort struct{ poweroff, reset func() }

func (s sleepPort) Read(off uint64, p []byte) { clear(p) }

func (s sleepPort) Write(off uint64, p []byte) {
	if off != 0 || len(p) != 1 {
		return
	}
	switch p[0] {
	case acpi.PowerOffValue:
		s.poweroff()
	case acpi.ResetValue:
		s.reset()
	}
}

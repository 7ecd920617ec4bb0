package vmm

import "github.com/greatjail/cvm/vmm/kvm"

// Model-specific registers Run sets on every vCPU before it starts.
const (
	msrIA32TSC        = 0x10
	msrSysenterCS     = 0x174
	msrSysenterESP    = 0x175
	msrSysenterEIP    = 0x176
	msrMiscEnable     = 0x1a0
	msrMTRRDefType    = 0x2ff
	msrSTAR           = 0xc0000081
	msrLSTAR          = 0xc0000082
	msrCSTAR          = 0xc0000083
	msrSyscallMask    = 0xc0000084
	msrKernelGSBase   = 0xc0000102
	miscEnableFastStr = 1 << 0
	mtrrEnable        = 1 << 11
	mtrrTypeWriteBack = 6
)

// BootMSRs are the model-specific register values every vCPU starts with,
// as Firecracker sets them (arch/x86_64/msr.rs create_boot_msr_entries):
// the SYSENTER and SYSCALL MSRs cleared, the TSC at 0, fast string
// operations enabled, and MTRRs enabled with write-back as the default
// memory type, as firmware would leave them.
func BootMSRs() []kvm.MSR {
	return []kvm.MSR{
		{Index: msrSysenterCS},
		{Index: msrSysenterESP},
		{Index: msrSysenterEIP},
		{Index: msrSTAR},
		{Index: msrCSTAR},
		{Index: msrKernelGSBase},
		{Index: msrSyscallMask},
		{Index: msrLSTAR},
		{Index: msrIA32TSC},
		{Index: msrMiscEnable, Data: miscEnableFastStr},
		{Index: msrMTRRDefType, Data: mtrrEnable | mtrrTypeWriteBack},
	}
}

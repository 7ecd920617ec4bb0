package snpmeasure

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
)

// VMMType selects the initial vCPU register state a VMM writes into the
// VMSA, and the order in which it measures the CPUID page.
type VMMType int

// VMM types.
const (
	VMMQEMU VMMType = iota + 1
	VMMEC2
)

// String returns the lowercase name ParseVMMType accepts.
func (v VMMType) String() string {
	switch v {
	case VMMQEMU:
		return "qemu"
	case VMMEC2:
		return "ec2"
	}
	return fmt.Sprintf("VMMType(%d)", int(v))
}

// ParseVMMType parses "qemu" or "ec2", case-insensitively.
func ParseVMMType(s string) (VMMType, error) {
	switch strings.ToLower(s) {
	case "qemu":
		return VMMQEMU, nil
	case "ec2":
		return VMMEC2, nil
	}
	return 0, fmt.Errorf("snpmeasure: unknown VMM type %q (known: qemu, ec2)", s)
}

// cpuSig computes CPUID(1).EAX from family, model and stepping (AMD CPUID
// specification #25481, Fn0000_0001_EAX).
func cpuSig(family, model, stepping uint32) uint32 {
	famLow, famExt := family, uint32(0)
	if family > 0xF {
		famLow, famExt = 0xF, (family-0xF)&0xFF
	}
	return famExt<<20 | (model>>4&0xF)<<16 | famLow<<8 | (model&0xF)<<4 | stepping&0xF
}

// vcpuSigs maps the QEMU builtin EPYC CPU model names (lowercase) to their
// signatures, as listed by sev-snp-measure's vcpu_types.py.
var vcpuSigs = map[string]uint32{
	"epyc":          cpuSig(23, 1, 2),
	"epyc-v1":       cpuSig(23, 1, 2),
	"epyc-v2":       cpuSig(23, 1, 2),
	"epyc-ibpb":     cpuSig(23, 1, 2),
	"epyc-v3":       cpuSig(23, 1, 2),
	"epyc-v4":       cpuSig(23, 1, 2),
	"epyc-rome":     cpuSig(23, 49, 0),
	"epyc-rome-v1":  cpuSig(23, 49, 0),
	"epyc-rome-v2":  cpuSig(23, 49, 0),
	"epyc-rome-v3":  cpuSig(23, 49, 0),
	"epyc-milan":    cpuSig(25, 1, 1),
	"epyc-milan-v1": cpuSig(25, 1, 1),
	"epyc-milan-v2": cpuSig(25, 1, 1),
	"epyc-genoa":    cpuSig(25, 17, 0),
	"epyc-genoa-v1": cpuSig(25, 17, 0),
	"epyc-turin":    cpuSig(26, 0, 0),
}

// VCPUSig returns the CPUID(1).EAX signature of a QEMU vCPU model such as
// "EPYC-v4" or "EPYC-Milan" (case-insensitive). With "-cpu host" the guest
// sees the host's signature instead, which the caller must supply itself.
func VCPUSig(name string) (uint32, error) {
	if s, ok := vcpuSigs[strings.ToLower(name)]; ok {
		return s, nil
	}
	names := make([]string, 0, len(vcpuSigs))
	for n := range vcpuSigs {
		names = append(names, n)
	}
	slices.Sort(names)
	return 0, fmt.Errorf("snpmeasure: unknown vCPU type %q (known, case-insensitive: %s)", name, strings.Join(names, ", "))
}

// BSPEIP is the reset EIP of the boot processor.
const BSPEIP = 0xFFFFFFF0

// Offsets in the SEV-ES save area (AMD APM vol. 2 table B-4; Linux struct
// sev_es_save_area).
const (
	vmsaES      = 0x000 // segments are {u16 selector, u16 attrib, u32 limit, u64 base}
	vmsaCS      = 0x010
	vmsaSS      = 0x020
	vmsaDS      = 0x030
	vmsaFS      = 0x040
	vmsaGS      = 0x050
	vmsaGDTR    = 0x060
	vmsaLDTR    = 0x070
	vmsaIDTR    = 0x080
	vmsaTR      = 0x090
	vmsaEFER    = 0x0D0
	vmsaCR4     = 0x148
	vmsaCR0     = 0x158
	vmsaDR7     = 0x160
	vmsaDR6     = 0x168
	vmsaRFLAGS  = 0x170
	vmsaRIP     = 0x178
	vmsaGPAT    = 0x268
	vmsaRDX     = 0x310
	vmsaSEVFeat = 0x3B0
	vmsaXCR0    = 0x3E8
	vmsaMXCSR   = 0x408
	vmsaX87FCW  = 0x410
)

// VMSA returns the initial VMSA page a VMM of type vmm creates for a vCPU:
// the boot processor when bsp is set, otherwise an application processor
// starting at apEIP (the firmware's SEV-ES reset block EIP).
func VMSA(vmm VMMType, vcpuSig uint32, guestFeatures uint64, bsp bool, apEIP uint32) ([PageSize]byte, error) {
	var p [PageSize]byte
	eip := uint32(BSPEIP)
	if !bsp {
		if apEIP == 0 {
			return p, fmt.Errorf("snpmeasure: application processor VMSA needs the SEV-ES reset EIP: %w", ErrInvalidFirmware)
		}
		eip = apEIP
	}
	// Register values that differ between VMMs.
	var (
		csAttr, ssAttr, trAttr uint16
		rdx                    uint64
		mxcsr                  uint32
		fcw                    uint16
	)
	switch vmm {
	case VMMQEMU:
		csAttr, ssAttr, trAttr = 0x9B, 0x93, 0x8B
		rdx = uint64(vcpuSig)
		mxcsr, fcw = 0x1F80, 0x37F
	case VMMEC2:
		csAttr, ssAttr, trAttr = 0x9B, 0x92, 0x83
		if bsp {
			csAttr = 0x9A
		}
		rdx = 0x600
	default:
		return p, fmt.Errorf("snpmeasure: unknown VMM type %v", vmm)
	}
	le := binary.LittleEndian
	seg := func(off int, sel, attr uint16, limit uint32, base uint64) {
		le.PutUint16(p[off:], sel)
		le.PutUint16(p[off+2:], attr)
		le.PutUint32(p[off+4:], limit)
		le.PutUint64(p[off+8:], base)
	}
	seg(vmsaES, 0, 0x93, 0xFFFF, 0)
	seg(vmsaCS, 0xF000, csAttr, 0xFFFF, uint64(eip&0xFFFF0000))
	seg(vmsaSS, 0, ssAttr, 0xFFFF, 0)
	seg(vmsaDS, 0, 0x93, 0xFFFF, 0)
	seg(vmsaFS, 0, 0x93, 0xFFFF, 0)
	seg(vmsaGS, 0, 0x93, 0xFFFF, 0)
	seg(vmsaGDTR, 0, 0, 0xFFFF, 0)
	seg(vmsaLDTR, 0, 0x82, 0xFFFF, 0)
	seg(vmsaIDTR, 0, 0, 0xFFFF, 0)
	seg(vmsaTR, 0, trAttr, 0xFFFF, 0)
	le.PutUint64(p[vmsaEFER:], 0x1000) // EFER.SVME, set by KVM
	le.PutUint64(p[vmsaCR4:], 0x40)    // CR4.MCE, set by KVM
	le.PutUint64(p[vmsaCR0:], 0x10)
	le.PutUint64(p[vmsaDR7:], 0x400)
	le.PutUint64(p[vmsaDR6:], 0xFFFF0FF0)
	le.PutUint64(p[vmsaRFLAGS:], 0x2)
	le.PutUint64(p[vmsaRIP:], uint64(eip&0xFFFF))
	le.PutUint64(p[vmsaGPAT:], 0x0007040600070406)
	le.PutUint64(p[vmsaRDX:], rdx)
	le.PutUint64(p[vmsaSEVFeat:], guestFeatures)
	le.PutUint64(p[vmsaXCR0:], 0x1)
	le.PutUint32(p[vmsaMXCSR:], mxcsr)
	le.PutUint16(p[vmsaX87FCW:], fcw)
	return p, nil
}

package attestcmd

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/greatjail/cvm/attestation/snpmeasure"
	"github.com/greatjail/cvm/attestation/tdxmeasure"
)

// MeasureInput names one input of a measurement and its SHA-256.
type MeasureInput struct {
	Role   string `json:"role"`
	Name   string `json:"name"`
	Size   int    `json:"size"`
	SHA256 string `json:"sha256"`
}

// Measurement is what `cvm measure --json` prints: a reference-value
// document that `cvm kbs refvalue import` accepts.
type Measurement struct {
	TEE          string            `json:"tee"`
	LaunchDigest string            `json:"launch_digest,omitempty"`
	MRTD         string            `json:"mrtd,omitempty"`
	RTMR1        string            `json:"rtmr1,omitempty"`
	RTMR2        string            `json:"rtmr2,omitempty"`
	Events       *TDXEvents        `json:"events,omitempty"`
	Inputs       []MeasureInput    `json:"inputs"`
	Parameters   map[string]string `json:"parameters,omitempty"`
}

// Digest returns the measurement's hex digest.
func (m *Measurement) Digest() string {
	if m.MRTD != "" {
		return m.MRTD
	}
	return m.LaunchDigest
}

// MeasureSNPOptions are the inputs of `cvm measure snp`.
type MeasureSNPOptions struct {
	Firmware      string
	VCPUs         int
	VCPUType      string
	VCPUSig       string
	GuestFeatures string
	VMMType       string
	Kernel        string
	Initrd        string
	Cmdline       string
}

// MeasureSNP computes the SEV-SNP launch digest the hardware will report.
func MeasureSNP(o MeasureSNPOptions) (*Measurement, error) {
	if o.VCPUs < 1 {
		return nil, fmt.Errorf("%w: --vcpus must be at least 1", ErrUsage)
	}
	vmm, err := snpmeasure.ParseVMMType(o.VMMType)
	if err != nil {
		return nil, fmt.Errorf("%w: --vmm-type: %w", ErrUsage, err)
	}
	var sig uint32
	switch {
	case o.VCPUSig != "":
		v, err := strconv.ParseUint(strings.TrimPrefix(strings.ToLower(o.VCPUSig), "0x"), 16, 32)
		if err != nil {
			return nil, fmt.Errorf("%w: --vcpu-sig: want a hex CPUID(1).EAX such as 0x800f12", ErrUsage)
		}
		sig = uint32(v)
	case o.VCPUType != "":
		if sig, err = snpmeasure.VCPUSig(o.VCPUType); err != nil {
			return nil, fmt.Errorf("%w: --vcpu-type: %w", ErrUsage, err)
		}
	default:
		return nil, fmt.Errorf("%w: --vcpu-type NAME or --vcpu-sig 0xHEX is required", ErrUsage)
	}
	gf, err := strconv.ParseUint(strings.TrimPrefix(strings.ToLower(o.GuestFeatures), "0x"), 16, 64)
	if err != nil || o.GuestFeatures == "" {
		return nil, fmt.Errorf("%w: --guest-features: want hex SEV_FEATURES such as 0x1", ErrUsage)
	}
	m := &Measurement{TEE: "snp", Parameters: map[string]string{
		"vcpus": strconv.Itoa(o.VCPUs), "vcpu_sig": fmt.Sprintf("%#x", sig), "guest_features": fmt.Sprintf("%#x", gf),
		"vmm_type": strings.ToLower(o.VMMType),
	}}
	if o.VCPUType != "" {
		m.Parameters["vcpu_type"] = o.VCPUType
	}
	fw, err := m.input("firmware", o.Firmware)
	if err != nil {
		return nil, err
	}
	opts := snpmeasure.Options{Firmware: fw, VCPUs: o.VCPUs, VCPUSig: sig, GuestFeatures: gf, VMM: vmm}
	if o.Kernel != "" {
		if opts.Kernel, err = m.input("kernel", o.Kernel); err != nil {
			return nil, err
		}
		opts.HasKernel = true
		opts.Cmdline = o.Cmdline
		m.Parameters["cmdline"] = o.Cmdline
		if o.Initrd != "" {
			if opts.Initrd, err = m.input("initrd", o.Initrd); err != nil {
				return nil, err
			}
		}
	} else if o.Initrd != "" || o.Cmdline != "" {
		return nil, fmt.Errorf("%w: --initrd and --cmdline need --kernel", ErrUsage)
	}
	d, err := snpmeasure.LaunchDigest(opts)
	if err != nil {
		return nil, fmt.Errorf("measure snp: %w", err)
	}
	m.LaunchDigest = hex.EncodeToString(d[:])
	return m, nil
}

// MeasureTDXOptions are the inputs of `cvm measure tdx`.
type MeasureTDXOptions struct {
	Firmware string
	// Kernel, Initrd and Cmdline describe a direct boot (QEMU -kernel,
	// -initrd, -append); with Kernel, RTMR1 and RTMR2 are computed too.
	Kernel  string
	Initrd  string
	Cmdline string
	// MemorySize is the guest RAM in bytes (QEMU -m), needed when
	// KernelImage is "patched" and there is an initrd; 0 when not given.
	MemorySize uint64
	// KernelImage is "patched" or "raw": which kernel bytes OVMF hashes.
	KernelImage string
	// Stub is "cc" or "none": whether the kernel's EFI stub extends RTMR2.
	Stub string
}

// TDXEvents are the RTMR event lists `cvm measure tdx --json` prints.
type TDXEvents struct {
	RTMR1 []tdxmeasure.Event `json:"rtmr1"`
	RTMR2 []tdxmeasure.Event `json:"rtmr2"`
}

// MeasureTDX computes the MRTD of a TDVF firmware image and, with a
// kernel, the RTMR1 and RTMR2 of the direct boot.
func MeasureTDX(o MeasureTDXOptions) (*Measurement, error) {
	var boot tdxmeasure.Boot
	if o.Kernel != "" {
		var err error
		if o.KernelImage == "" {
			return nil, fmt.Errorf("%w: --kernel needs --ovmf-measures patched|raw (which kernel bytes the firmware hashes)", ErrUsage)
		}
		if boot.KernelImage, err = tdxmeasure.ParseKernelImage(o.KernelImage); err != nil {
			return nil, fmt.Errorf("%w: --ovmf-measures: %w", ErrUsage, err)
		}
		if o.Stub == "" {
			return nil, fmt.Errorf("%w: --kernel needs --stub-measures cc|none (whether the kernel's EFI stub extends RTMR2)", ErrUsage)
		}
		if boot.Stub, err = tdxmeasure.ParseStub(o.Stub); err != nil {
			return nil, fmt.Errorf("%w: --stub-measures: %w", ErrUsage, err)
		}
		if boot.KernelImage == tdxmeasure.KernelPatched && o.Initrd != "" && o.MemorySize == 0 {
			return nil, fmt.Errorf("%w: --ovmf-measures patched with --initrd needs --memory SIZE: QEMU writes the initrd address, which depends on the memory size, into the measured kernel", ErrUsage)
		}
	} else if o.Initrd != "" || o.Cmdline != "" || o.MemorySize != 0 || o.KernelImage != "" || o.Stub != "" {
		return nil, fmt.Errorf("%w: --initrd, --cmdline, --memory, --ovmf-measures and --stub-measures need --kernel", ErrUsage)
	}
	m := &Measurement{TEE: "tdx"}
	fw, err := m.input("firmware", o.Firmware)
	if err != nil {
		return nil, err
	}
	d, err := tdxmeasure.MRTD(fw)
	if err != nil {
		return nil, fmt.Errorf("measure tdx: %w", err)
	}
	m.MRTD = hex.EncodeToString(d[:])
	if o.Kernel == "" {
		return m, nil
	}
	if boot.Kernel, err = m.input("kernel", o.Kernel); err != nil {
		return nil, err
	}
	if o.Initrd != "" {
		if boot.Initrd, err = m.input("initrd", o.Initrd); err != nil {
			return nil, err
		}
	}
	boot.Cmdline, boot.MemorySize = o.Cmdline, o.MemorySize
	r1, err := tdxmeasure.RTMR1(boot)
	if err != nil {
		return nil, fmt.Errorf("measure tdx: kernel %s: %w", o.Kernel, err)
	}
	r2, err := tdxmeasure.RTMR2(boot)
	if err != nil {
		return nil, fmt.Errorf("measure tdx: %w", err)
	}
	v1, v2 := r1.Value(), r2.Value()
	m.RTMR1, m.RTMR2 = hex.EncodeToString(v1[:]), hex.EncodeToString(v2[:])
	m.Events = &TDXEvents{RTMR1: r1.Events, RTMR2: r2.Events}
	m.Parameters = map[string]string{
		"cmdline":       o.Cmdline,
		"ovmf_measures": strings.ToLower(o.KernelImage),
		"stub_measures": strings.ToLower(o.Stub),
	}
	if o.MemorySize != 0 {
		m.Parameters["memory"] = strconv.FormatUint(o.MemorySize, 10)
	}
	return m, nil
}

// input reads a file, records its name and SHA-256.
func (m *Measurement) input(role, path string) ([]byte, error) {
	if path == "" {
		return nil, fmt.Errorf("%w: --%s FILE is required", ErrUsage, role)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%w: --%s: %w", ErrUsage, role, err)
	}
	if fi.Size() > maxMeasureInput {
		return nil, fmt.Errorf("%w: --%s: %s is %d bytes, more than %d", ErrUsage, role, path, fi.Size(), maxMeasureInput)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: --%s: %w", ErrUsage, role, err)
	}
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: --%s: %s is empty", ErrUsage, role, path)
	}
	h := sha256.Sum256(b)
	m.Inputs = append(m.Inputs, MeasureInput{Role: role, Name: filepath.Base(path), Size: len(b), SHA256: hex.EncodeToString(h[:])})
	return b, nil
}

// maxMeasureInput bounds a firmware, kernel or initrd file.
const maxMeasureInput = 1 << 30

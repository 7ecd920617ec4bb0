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

// MeasureTDX computes the MRTD of a TDVF firmware image.
func MeasureTDX(firmware string) (*Measurement, error) {
	m := &Measurement{TEE: "tdx"}
	fw, err := m.input("firmware", firmware)
	if err != nil {
		return nil, err
	}
	d, err := tdxmeasure.MRTD(fw)
	if err != nil {
		return nil, fmt.Errorf("measure tdx: %w", err)
	}
	m.MRTD = hex.EncodeToString(d[:])
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

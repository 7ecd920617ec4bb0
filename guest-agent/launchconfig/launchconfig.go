// Package launchconfig is the measured launch configuration of a microVM:
// the JSON file /etc/cvm/launch.json inside the initramfs, which names the
// mode, the TEE the guest attests as, the key broker's CA, the disk key
// resource, the disk and the entrypoint. Being in the initramfs, it is part
// of the launch measurement, so the host cannot change it without changing
// what the broker sees. The launcher writes it with Marshal; the agent reads
// it with Parse, which is strict.
//
// Two modes: launch (the default, "mode" absent) runs one confidential
// workload from an encrypted disk; pod runs the containers of one pod
// sandbox for the containerd shim (the Containers service), either plain
// (tee "none") or confidential (sim, snp, tdx: the guest attests to the
// broker before any container may be created).
//
// The package also holds what launcher and agent must agree on about the
// initramfs: the fixed paths, the kernel command line, the kernel modules
// each TEE needs and the format of the module order file.
package launchconfig

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"

	"github.com/greatjail/cvm/attestation"
)

// Fixed paths inside the initramfs, and the measured kernel command line.
const (
	ConfigPath  = "/etc/cvm/launch.json"
	ModulesPath = "/etc/cvm/modules"
	ModulesDir  = "/lib/modules"
	Cmdline     = "console=ttyS0 panic=-1 quiet"
)

// Version is the only configuration version this package reads and writes.
const Version = 1

// MaxSize bounds the configuration file.
const MaxSize = 1 << 20

// ErrInvalid means a configuration is malformed or fails validation.
var ErrInvalid = errors.New("launchconfig: invalid launch configuration")

// The modes. ModeLaunch is written as an absent "mode", so that launch
// configurations (and their measurements) are those of before modes existed.
const (
	ModeLaunch = "launch"
	ModePod    = "pod"
)

// TEENone is the tee of a plain (non-confidential) pod: no evidence, no
// broker. It is valid only in pod mode.
const TEENone attestation.TEE = "none"

// Config is the launch configuration. Marshal writes its fields in this
// order; in launch mode Parse requires every one of them but mode. In pod
// mode only version, mode and tee are required; kbs_ca_pem and resource
// are required for a confidential pod and absent for tee none; the launch
// fields (entrypoint, args, env, disk) are absent.
type Config struct {
	Version int `json:"version"`
	// Mode is ModeLaunch ("" means the same) or ModePod.
	Mode string `json:"mode,omitempty"`
	// TEE is the evidence the guest produces: sim, snp or tdx (or none,
	// for a plain pod).
	TEE attestation.TEE `json:"tee"`
	// KBSCAPEM is the PEM of the CA that issued the broker's TLS
	// certificate: the only root the agent trusts for the broker.
	KBSCAPEM string `json:"kbs_ca_pem"`
	// Resource is the broker resource holding the disk's volume key; in a
	// confidential pod, the resource the guest fetches to attest (released
	// only to a guest the broker accepts).
	Resource string `json:"resource"`
	// Entrypoint is the absolute path, inside the disk's root file
	// system, of the program to run.
	Entrypoint string   `json:"entrypoint"`
	Args       []string `json:"args"`
	Env        []string `json:"env"`
	Disk       Disk     `json:"disk"`
}

// Disk is the encrypted disk.
type Disk struct {
	// Device is the guest's block device holding the LUKS2 volume.
	Device string `json:"device"`
	// FS is the file system inside it (e.g. ext4).
	FS string `json:"fs"`
}

// Marshal returns the canonical encoding of c: encoding/json of the struct,
// fields in declaration order, no extra whitespace, nil lists written as
// []. It validates c first.
func (c *Config) Marshal() ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if c.IsPod() {
		return encode(&podJSON{Version: c.Version, Mode: ModePod, TEE: c.TEE, KBSCAPEM: c.KBSCAPEM, Resource: c.Resource})
	}
	cc := *c
	cc.Mode = "" // launch mode is written as an absent mode
	if cc.Args == nil {
		cc.Args = []string{}
	}
	if cc.Env == nil {
		cc.Env = []string{}
	}
	return encode(&cc)
}

// podJSON is the canonical form of a pod-mode configuration.
type podJSON struct {
	Version  int             `json:"version"`
	Mode     string          `json:"mode"`
	TEE      attestation.TEE `json:"tee"`
	KBSCAPEM string          `json:"kbs_ca_pem,omitempty"`
	Resource string          `json:"resource,omitempty"`
}

func encode(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("launchconfig: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// IsPod reports whether c is a pod-mode configuration.
func (c *Config) IsPod() bool { return c.Mode == ModePod }

// Confidential reports whether the guest attests: every launch, and a pod
// whose tee is not none.
func (c *Config) Confidential() bool { return c.TEE != TEENone }

// The top-level keys of each mode.
var (
	launchKeys = []string{"version", "tee", "kbs_ca_pem", "resource", "entrypoint", "args", "env", "disk"}
	podKeys    = []string{"version", "mode", "tee"}
	podTEEKeys = []string{"kbs_ca_pem", "resource"} // a confidential pod's
)

// Parse decodes and validates a configuration. It is strict: unknown,
// missing, duplicate or null fields, trailing data, another version and
// anything Validate refuses are errors wrapping ErrInvalid.
func Parse(b []byte) (*Config, error) {
	if len(b) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrInvalid, len(b), MaxSize)
	}
	var probe struct {
		Mode *string         `json:"mode"`
		TEE  attestation.TEE `json:"tee"`
	}
	_ = json.Unmarshal(b, &probe) // errors are found below
	want := launchKeys
	var optional []string
	if probe.Mode != nil {
		switch *probe.Mode {
		case ModeLaunch:
			want = append([]string{"mode"}, launchKeys...)
		case ModePod:
			want = podKeys
			if probe.TEE != TEENone {
				want = append(append([]string{}, podKeys...), podTEEKeys...)
			} else {
				optional = podTEEKeys // so that Validate says why they are wrong
			}
		default:
			return nil, fmt.Errorf("%w: mode %q, want launch or pod", ErrInvalid, *probe.Mode)
		}
	}
	if err := checkKeys(b, "", want, optional); err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var c Config
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the object", ErrInvalid)
	}
	if !c.IsPod() && (c.Args == nil || c.Env == nil) {
		return nil, fmt.Errorf("%w: args and env must be lists", ErrInvalid)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// checkKeys checks that the JSON object in b has exactly the keys want
// (and maybe some of optional), each once and none null, and recurses into
// "disk".
func checkKeys(b []byte, where string, want, optional []string) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return fmt.Errorf("%w: %snot a JSON object", ErrInvalid, where)
	}
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return fmt.Errorf("%w: %s%w", ErrInvalid, where, err)
		}
		key, _ := t.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return fmt.Errorf("%w: %s%q: %w", ErrInvalid, where, key, err)
		}
		if !slices.Contains(want, key) && !slices.Contains(optional, key) {
			return fmt.Errorf("%w: %sunknown field %q", ErrInvalid, where, key)
		}
		if seen[key] {
			return fmt.Errorf("%w: %sfield %q appears twice", ErrInvalid, where, key)
		}
		seen[key] = true
		if string(v) == "null" {
			return fmt.Errorf("%w: %sfield %q is null", ErrInvalid, where, key)
		}
		if key == "disk" {
			if err := checkKeys(v, "disk: ", []string{"device", "fs"}, nil); err != nil {
				return err
			}
		}
	}
	for _, k := range want {
		if !seen[k] {
			return fmt.Errorf("%w: %smissing field %q", ErrInvalid, where, k)
		}
	}
	return nil
}

// Validate checks the fields' values.
func (c *Config) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, a...))
	}
	if c.Version != Version {
		return bad("version %d, want %d", c.Version, Version)
	}
	switch c.Mode {
	case "", ModeLaunch:
	case ModePod:
		return c.validatePod()
	default:
		return bad("mode %q, want launch or pod", c.Mode)
	}
	switch {
	case c.TEE != attestation.TEESim && c.TEE != attestation.TEESEVSNP && c.TEE != attestation.TEETDX:
		return bad("tee %q, want sim, snp or tdx", c.TEE)
	case c.Resource == "":
		return bad("resource is empty")
	case !path.IsAbs(c.Entrypoint):
		return bad("entrypoint %q is not an absolute path", c.Entrypoint)
	case !path.IsAbs(c.Disk.Device):
		return bad("disk device %q is not an absolute path", c.Disk.Device)
	case c.Disk.FS == "":
		return bad("disk fs is empty")
	}
	if _, err := c.CACertificates(); err != nil {
		return err
	}
	return nil
}

// validatePod checks a pod-mode configuration.
func (c *Config) validatePod() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: pod mode: %s", ErrInvalid, fmt.Sprintf(format, a...))
	}
	switch {
	case c.Entrypoint != "" || c.Args != nil || c.Env != nil || c.Disk != (Disk{}):
		return bad("entrypoint, args, env and disk belong to launch mode")
	case c.TEE == TEENone:
		if c.KBSCAPEM != "" || c.Resource != "" {
			return bad("tee none has no broker: kbs_ca_pem and resource must be absent")
		}
		return nil
	case c.TEE != attestation.TEESim && c.TEE != attestation.TEESEVSNP && c.TEE != attestation.TEETDX:
		return bad("tee %q, want none, sim, snp or tdx", c.TEE)
	case c.Resource == "":
		return bad("a confidential pod (tee %s) needs the resource it attests for", c.TEE)
	}
	_, err := c.CACertificates()
	return err
}

// CACertificates parses KBSCAPEM: one or more CERTIFICATE blocks and
// nothing else.
func (c *Config) CACertificates() ([]*x509.Certificate, error) {
	rest := []byte(c.KBSCAPEM)
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%w: kbs_ca_pem holds a %q block, want only certificates", ErrInvalid, block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: kbs_ca_pem: %w", ErrInvalid, err)
		}
		certs = append(certs, cert)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: kbs_ca_pem has data that is not PEM", ErrInvalid)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%w: kbs_ca_pem holds no certificate", ErrInvalid)
	}
	return certs, nil
}

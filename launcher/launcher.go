// Package launcher runs one confidential microVM launch end to end: it
// builds the measured launch (the agent, the measured launch configuration
// and kernel modules in a reproducible initramfs, the constant kernel
// command line, the launch plan and its digest), starts an engine
// (launcher/engine), serves the host side of the link (the key broker
// relay, the simulated PSP, the agent's log), drives the guest agent over
// ttrpc (Status until ready, Launch, Output, Wait, Shutdown) and returns
// the workload's exit code.
//
// Build is the only path from a Spec to the guest's bytes, and Measure
// uses it too, so `cvm measure launch` on the tenant's machine and
// `cvm launch` on the host compute the same digest from the same inputs.
//
// Exit codes (ExitCode): the workload's own when it ran; ExitLaunchFailed
// (125) when the launch failed (bad input, engine error, broker
// unreachable, disk problem, boot timeout); ExitDenied (126) when the key
// broker denied the guest.
package launcher

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/greatjail/cvm/attestation/sim"
)

// Defaults of a Spec.
const (
	DefaultVCPUs       = 1
	DefaultMemory      = 512 << 20
	DefaultEngine      = "auto"
	DefaultBootTimeout = 120 * time.Second
)

// Spec is one launch as the host operator asks for it (`cvm launch`).
// Kernel, Agent, KBSCA, Resource, Entrypoint, Args, TEE, VCPUs and Memory
// are measured (Build); the others are not.
type Spec struct {
	// Kernel is the guest bzImage; "" means kernel.Default().
	Kernel string
	// Disk is the encrypted disk image (LUKS2, `cvm image encrypt`).
	Disk string
	// KBS is the key broker, HOST:PORT as the host reaches it.
	KBS string
	// KBSCA is the broker's CA certificate (PEM), pinned by the guest.
	KBSCA string
	// Resource is the broker resource holding the disk key.
	Resource string
	// Entrypoint is the absolute path of the workload inside the disk.
	Entrypoint string
	Args       []string
	// TEE is "sim", "snp" or "tdx".
	TEE string
	// SimDir is the simulated TEE authority (`cvm attest sim init`), for
	// TEE "sim".
	SimDir string
	// Engine is "auto", "builtin" or "qemu".
	Engine string
	VCPUs  int
	// Memory is the guest memory in bytes, a multiple of 1 MiB.
	Memory uint64
	// Quiet suppresses the progress lines.
	Quiet bool
	// Agent is the cvm-agent binary; "" means next to the executable
	// (see Build).
	Agent string
	// StateDir keeps the console and agent logs; "" means a temporary
	// directory, removed after a successful launch.
	StateDir string
	// BootTimeout bounds the time from engine start to a ready agent;
	// 0 means DefaultBootTimeout.
	BootTimeout time.Duration
}

// ErrInvalid is wrapped by every error Validate returns.
var ErrInvalid = errors.New("invalid launch")

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, a...))
}

// withDefaults fills in the defaults of unset fields.
func (s Spec) withDefaults() Spec {
	if s.VCPUs == 0 {
		s.VCPUs = DefaultVCPUs
	}
	if s.Memory == 0 {
		s.Memory = DefaultMemory
	}
	if s.Engine == "" {
		s.Engine = DefaultEngine
	}
	if s.BootTimeout == 0 {
		s.BootTimeout = DefaultBootTimeout
	}
	s.TEE = strings.ToLower(s.TEE)
	return s
}

// validateMeasured checks the measured inputs (what Measure needs).
func (s Spec) validateMeasured() error {
	if s.Kernel != "" {
		if err := regularFile("--kernel", s.Kernel); err != nil {
			return err
		}
	}
	if s.KBSCA == "" {
		return invalid("--kbs-ca FILE is required (the key broker's CA certificate, PEM)")
	}
	if err := regularFile("--kbs-ca", s.KBSCA); err != nil {
		return err
	}
	if _, err := readCA(s.KBSCA); err != nil {
		return err
	}
	if s.Resource == "" {
		return invalid("--resource NAME is required (the broker resource holding the disk key)")
	}
	if s.Entrypoint == "" {
		return invalid("--entrypoint PATH is required (the program to run, inside the disk)")
	}
	if !strings.HasPrefix(s.Entrypoint, "/") {
		return invalid("--entrypoint %q is not an absolute path", s.Entrypoint)
	}
	switch s.TEE {
	case "sim", "snp", "tdx":
	case "":
		return invalid("--tee is required: sim, snp or tdx")
	default:
		return invalid("--tee %q: want sim, snp or tdx", s.TEE)
	}
	if s.VCPUs < 1 || s.VCPUs > 255 {
		return invalid("--vcpus %d: want 1..255", s.VCPUs)
	}
	if s.Memory%(1<<20) != 0 || s.Memory < 64<<20 {
		return invalid("--memory %d bytes: want at least 64M, a multiple of 1M", s.Memory)
	}
	return nil
}

// Validate checks s before anything starts, naming the first problem. It
// applies the defaults first, as Run does.
func (s Spec) Validate() error {
	s = s.withDefaults()
	if s.Disk == "" {
		return invalid("--disk FILE is required (the encrypted disk image, from 'cvm image encrypt')")
	}
	if err := regularFile("--disk", s.Disk); err != nil {
		return err
	}
	if s.KBS == "" {
		return invalid("--kbs HOST:PORT is required (the key broker)")
	}
	if _, err := kbsHost(s.KBS); err != nil {
		return err
	}
	if err := s.validateMeasured(); err != nil {
		return err
	}
	switch s.Engine {
	case "auto", "builtin", "qemu":
	default:
		return invalid("--engine %q: want auto, builtin or qemu", s.Engine)
	}
	if s.TEE == "sim" {
		if s.SimDir == "" {
			return invalid("--tee sim needs --sim-dir DIR (made by 'cvm attest sim init')")
		}
		if fi, err := os.Stat(s.SimDir); err != nil || !fi.IsDir() {
			return invalid("--sim-dir %s is not a directory (create one with 'cvm attest sim init --dir %s')", s.SimDir, s.SimDir)
		}
		if _, err := os.Stat(filepath.Join(s.SimDir, "vcek.key")); err != nil {
			return invalid("--sim-dir %s is not a simulated TEE (no vcek.key; run 'cvm attest sim init --dir %s')", s.SimDir, s.SimDir)
		}
	} else if s.SimDir != "" {
		return invalid("--sim-dir is only for --tee sim")
	}
	if s.StateDir != "" {
		if fi, err := os.Stat(s.StateDir); err == nil && !fi.IsDir() {
			return invalid("--state-dir %s exists and is not a directory", s.StateDir)
		}
	}
	return nil
}

// loadSim loads the simulated PSP of s.
func (s Spec) loadSim() (*sim.Authority, error) {
	a, err := sim.Load(s.SimDir)
	if err != nil {
		return nil, invalid("--sim-dir %s: %v (create one with 'cvm attest sim init')", s.SimDir, err)
	}
	return a, nil
}

// kbsHost returns the host part of HOST:PORT, checking both.
func kbsHost(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", invalid("--kbs %q: want HOST:PORT: %v", addr, err)
	}
	if host == "" {
		return "", invalid("--kbs %q: the host is empty", addr)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return "", invalid("--kbs %q: port %q is not 1..65535", addr, port)
	}
	return host, nil
}

func regularFile(flag, path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return invalid("%s %s: %v", flag, path, errors.Unwrap(err))
	}
	if !fi.Mode().IsRegular() {
		return invalid("%s %s is not a regular file", flag, path)
	}
	return nil
}

// maxCA bounds the CA file (it goes into the measured configuration).
const maxCA = 64 << 10

// readCA reads a PEM file holding one or more certificates and returns them
// re-encoded canonically (PEM, in file order, nothing else), so text around
// the blocks or line endings do not change the measurement.
func readCA(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, invalid("--kbs-ca %s: %v", path, err)
	}
	if len(b) > maxCA {
		return nil, invalid("--kbs-ca %s: %d bytes, more than %d", path, len(b), maxCA)
	}
	var out []byte
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			return nil, invalid("--kbs-ca %s: PEM block %q, want only CERTIFICATE", path, blk.Type)
		}
		if _, err := x509.ParseCertificate(blk.Bytes); err != nil {
			return nil, invalid("--kbs-ca %s: %v", path, err)
		}
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: blk.Bytes})...)
	}
	if len(out) == 0 {
		return nil, invalid("--kbs-ca %s is not PEM: no CERTIFICATE block", path)
	}
	return out, nil
}

// ReadCA reads a key broker CA file (PEM, one or more certificates) as
// the measured launch configuration carries it: the certificates
// re-encoded canonically, in file order. The shim's confidential pods use
// it too, so the same file always gives the same measurement.
func ReadCA(path string) ([]byte, error) { return readCA(path) }

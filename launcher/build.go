package launcher

import (
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/greatjail/cvm/attestation/attestcmd"
	"github.com/greatjail/cvm/attestation/snpmeasure"
	"github.com/greatjail/cvm/guest-agent/launchconfig"
	"github.com/greatjail/cvm/launcher/initramfs"
	"github.com/greatjail/cvm/launcher/kernel"
	"github.com/greatjail/cvm/vmm"
)

// AgentName is the guest agent binary's file name.
const AgentName = "cvm-agent"

// Launch is a built launch: every byte the guest starts from, and the
// measurement the simulated TEE reports for it.
type Launch struct {
	Kernel    *kernel.Kernel
	KernelRaw []byte
	// Agent is the path of the cvm-agent binary put in as /init.
	Agent string
	// Config is the measured launch configuration (/etc/cvm/launch.json).
	Config []byte
	// Modules are the module names in load order (/etc/cvm/modules).
	Modules   []string
	Initramfs []byte
	Cmdline   string
	VCPUs     int
	Memory    uint64
	// Digest is snpmeasure.PlanDigest of the launch plan.
	Digest [48]byte
}

// DigestHex returns the digest as 96 lowercase hex digits.
func (l *Launch) DigestHex() string { return hex.EncodeToString(l.Digest[:]) }

// Build builds the measured launch of s: it reads the kernel (s.Kernel or
// kernel.Default), finds the agent, resolves the modules, writes the
// launch configuration and the initramfs, and computes the plan's digest.
// The same measured inputs always give the same bytes.
func Build(s Spec) (*Launch, error) {
	s = s.withDefaults()
	if err := s.validateMeasured(); err != nil {
		return nil, err
	}
	var k *kernel.Kernel
	var err error
	if s.Kernel != "" {
		k, err = kernel.Open(s.Kernel)
	} else {
		k, err = kernel.Default()
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	kraw, err := os.ReadFile(k.Path)
	if err != nil {
		return nil, fmt.Errorf("%w: kernel: %w", ErrInvalid, err)
	}
	agentPath, err := FindAgent(s.Agent)
	if err != nil {
		return nil, err
	}
	agent, err := os.ReadFile(agentPath)
	if err != nil {
		return nil, fmt.Errorf("%w: agent: %w", ErrInvalid, err)
	}
	if err := checkStatic(agentPath, agent); err != nil {
		return nil, err
	}
	ca, err := readCA(s.KBSCA)
	if err != nil {
		return nil, err
	}
	cfg, err := launchConfig(s, ca)
	if err != nil {
		return nil, err
	}
	required, optional := modulesFor(s.TEE)
	mods, err := k.Modules(required, optional)
	if err != nil {
		return nil, fmt.Errorf("%w: kernel %s (%s): modules: %w", ErrInvalid, k.Path, k.Release, err)
	}
	l := &Launch{Kernel: k, KernelRaw: kraw, Agent: agentPath, Config: cfg, Cmdline: cmdline, VCPUs: s.VCPUs, Memory: s.Memory}
	a := initramfs.New()
	var errs []error
	check := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	for _, d := range []string{"dev", "proc", "sys", "run", "mnt", "etc", "etc/cvm", "lib", "lib/modules"} {
		check(a.AddDir(d, 0o755))
	}
	check(a.AddDir("tmp", 0o1777))
	check(a.AddCharDev("dev/console", 0o600, 5, 1))
	check(a.AddFile("init", agent, 0o755))
	check(a.AddFile(strings.TrimPrefix(launchconfig.ConfigPath, "/"), cfg, 0o644))
	for _, m := range mods {
		l.Modules = append(l.Modules, m.Name)
		check(a.AddFile(strings.TrimPrefix(launchconfig.ModulesDir, "/")+"/"+m.Name+".ko", m.Data, 0o644))
	}
	order, err := launchconfig.FormatModules(l.Modules)
	check(err)
	check(a.AddFile(strings.TrimPrefix(launchconfig.ModulesPath, "/"), order, 0o644))
	if len(errs) > 0 {
		return nil, fmt.Errorf("initramfs: %w", errors.Join(errs...))
	}
	var buf bytes.Buffer
	if _, err := a.WriteTo(&buf); err != nil {
		return nil, fmt.Errorf("initramfs: %w", err)
	}
	l.Initramfs = buf.Bytes()
	if l.Digest, err = planDigest(l.vmmConfig()); err != nil {
		return nil, err
	}
	return l, nil
}

// PlanDigest is the measurement of a guest that starts from these bytes:
// snpmeasure.PlanDigest of the vmm.Plan of kernel (the bzImage's bytes),
// initrd, cmdline, vcpus and memory (bytes), with one disk, entropy and
// vsock, as for every launch and on every engine. Build uses it for
// `cvm launch`, and the shim for a confidential pod's launch.
func PlanDigest(kernel, initrd []byte, cmdline string, vcpus int, memory uint64) ([48]byte, error) {
	l := &Launch{KernelRaw: kernel, Initramfs: initrd, Cmdline: cmdline, VCPUs: vcpus, Memory: memory}
	return planDigest(l.vmmConfig())
}

// DefaultPodHotplugSlots is how many disk hot-plug slots a pod VM has by
// default (containerd-shim-cvm-v2: one per container after the pod's
// first, at once).
const DefaultPodHotplugSlots = 8

// PodPlanDigest is PlanDigest for a pod VM with slots disk hot-plug slots
// (vmm.Config.Slots). The slots are part of the plan (the guest's ACPI
// tables describe their virtio devices), so a pod's measurement names
// their number on every engine: the builtin VMM runs exactly this plan,
// and the qemu engine's pods measure the same, as for `cvm launch`.
func PodPlanDigest(kernel, initrd []byte, cmdline string, vcpus int, memory uint64, slots int) ([48]byte, error) {
	if slots < 0 {
		return [48]byte{}, fmt.Errorf("%w: %d hot-plug slots", ErrInvalid, slots)
	}
	l := &Launch{KernelRaw: kernel, Initramfs: initrd, Cmdline: cmdline, VCPUs: vcpus, Memory: memory}
	c := l.vmmConfig()
	for range slots {
		c.Slots = append(c.Slots, vmm.NewDiskSlot())
	}
	return planDigest(c)
}

func planDigest(c vmm.Config) ([48]byte, error) {
	p, err := vmm.Plan(c)
	if err != nil {
		return [48]byte{}, fmt.Errorf("%w: launch plan: %w", ErrInvalid, err)
	}
	d, err := snpmeasure.PlanDigest(p)
	if err != nil {
		return [48]byte{}, fmt.Errorf("launch plan digest: %w", err)
	}
	return d, nil
}

// vmmConfig is the configuration whose plan is measured: the same for every
// engine (one disk, entropy, vsock; paths do not enter the plan).
func (l *Launch) vmmConfig() vmm.Config {
	return vmm.Config{
		Kernel: l.KernelRaw, Initrd: l.Initramfs, Cmdline: l.Cmdline,
		MemorySize: l.Memory, VCPUs: l.VCPUs,
		Disks: []vmm.Disk{{Path: "disk"}}, RNG: true, VsockUDS: "x",
	}
}

// Measure builds the launch of s exactly as Run does and returns its
// reference-value document (`cvm measure launch --json`; the digest is
// Measurement.Digest()). Disk, KBS, SimDir and Engine are not needed.
func Measure(s Spec) (*attestcmd.Measurement, error) {
	s = s.withDefaults()
	if s.TEE != "sim" {
		// SEV-SNP hardware adds the VMSAs and TDX measures differently:
		// only the simulated TEE reports the plan digest.
		return nil, invalid("--tee %q: only sim launches have a measurement this release computes", s.TEE)
	}
	l, err := Build(s)
	if err != nil {
		return nil, err
	}
	m := &attestcmd.Measurement{TEE: "sim", LaunchDigest: l.DigestHex(), Parameters: map[string]string{
		"vcpus":      strconv.Itoa(l.VCPUs),
		"memory":     vmm.FormatSize(l.Memory),
		"cmdline":    l.Cmdline,
		"kernel":     l.Kernel.Release,
		"resource":   s.Resource,
		"entrypoint": s.Entrypoint,
	}}
	m.Inputs = []attestcmd.MeasureInput{
		input("kernel", l.Kernel.Path, l.KernelRaw),
		input("initrd", "initramfs (agent "+filepath.Base(l.Agent)+", launch.json, modules)", l.Initramfs),
		input("launch_config", "/etc/cvm/launch.json", l.Config),
	}
	return m, nil
}

func input(role, name string, b []byte) attestcmd.MeasureInput {
	h := sha256.Sum256(b)
	return attestcmd.MeasureInput{Role: role, Name: name, Size: len(b), SHA256: hex.EncodeToString(h[:])}
}

// FindAgent returns the agent binary: explicit (the CLI fills it from
// $CVM_AGENT), else AgentFrom the running executable.
func FindAgent(explicit string) (string, error) {
	if explicit != "" {
		if err := regularFile("agent ($CVM_AGENT)", explicit); err != nil {
			return "", err
		}
		return explicit, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("%w: find %s: %w", ErrInvalid, AgentName, err)
	}
	if r, err := filepath.EvalSymlinks(exe); err == nil {
		exe = r
	}
	return AgentFrom(exe)
}

// AgentFrom returns cvm-agent next to the executable exe, else in
// <exe dir>/../share/cvm/ (the installed layout).
func AgentFrom(exe string) (string, error) {
	dir := filepath.Dir(exe)
	tried := []string{filepath.Join(dir, AgentName), filepath.Join(dir, "..", "share", "cvm", AgentName)}
	for _, p := range tried {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: the guest agent %s is not in %s (build it with 'make build', install it with 'make install', or set $CVM_AGENT)", ErrInvalid, AgentName, strings.Join(tried, " or "))
}

// checkStatic refuses an agent that is not a static x86-64 ELF executable
// (the initramfs has no dynamic loader).
func checkStatic(path string, b []byte) error {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("%w: agent %s is not an ELF executable: %w", ErrInvalid, path, err)
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 {
		return fmt.Errorf("%w: agent %s is for %v, want x86-64", ErrInvalid, path, f.Machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%w: agent %s is dynamically linked; build it with CGO_ENABLED=0 ('make build')", ErrInvalid, path)
		}
	}
	return nil
}

package launcher

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/attestation/attestcmd"
	"github.com/greatjail/cvm/guest-agent/launchconfig"
	"github.com/greatjail/cvm/launcher/initramfs"
	"github.com/greatjail/cvm/launcher/kernel"
	"github.com/greatjail/cvm/vmm"
)

// PodInitramfs is the initramfs of a pod VM (containerd-shim-cvm-v2; cpio
// newc, reproducible): the agent init as /init, cfg (a pod-mode launch
// configuration) as /etc/cvm/launch.json, the modules of
// launchconfig.PodModules with their load order, the usual empty
// directories.
func PodInitramfs(k *kernel.Kernel, init string, cfg *launchconfig.Config) ([]byte, error) {
	if !cfg.IsPod() {
		return nil, fmt.Errorf("pod initramfs: needs a pod-mode launch configuration, not mode %q", cfg.Mode)
	}
	conf, err := cfg.Marshal()
	if err != nil {
		return nil, fmt.Errorf("pod launch configuration: %w", err)
	}
	mods, err := k.Modules(launchconfig.PodModules(cfg.TEE))
	if err != nil {
		return nil, fmt.Errorf("pod initramfs: kernel %s modules: %w", k.Release, err)
	}
	initBin, err := os.ReadFile(init)
	if err != nil {
		return nil, fmt.Errorf("pod initramfs: guest init: %w", err)
	}
	a := initramfs.New()
	var errs []error
	check := func(err error) { errs = append(errs, err) }
	for _, d := range []string{"dev", "proc", "sys", "run", "mnt", "etc", "etc/cvm", "lib", "lib/modules"} {
		check(a.AddDir(d, 0o755))
	}
	check(a.AddDir("tmp", 0o1777))
	check(a.AddCharDev("dev/console", 0o600, 5, 1))
	check(a.AddFile("init", initBin, 0o755))
	check(a.AddFile(strings.TrimPrefix(launchconfig.ConfigPath, "/"), conf, 0o644))
	var names []string
	for _, m := range mods {
		names = append(names, m.Name)
		check(a.AddFile(strings.TrimPrefix(launchconfig.ModulesDir, "/")+"/"+m.Name+".ko", m.Data, 0o644))
	}
	order, err := launchconfig.FormatModules(names)
	check(err)
	check(a.AddFile(strings.TrimPrefix(launchconfig.ModulesPath, "/"), order, 0o644))
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("pod initramfs: %w", err)
	}
	var b bytes.Buffer
	if _, err := a.WriteTo(&b); err != nil {
		return nil, fmt.Errorf("pod initramfs: %w", err)
	}
	return b.Bytes(), nil
}

// PodSpec is what a confidential pod VM's measurement depends on: the
// node's shim settings (kernel, vCPUs, memory, the agent binary) and the
// pod's (tee, the broker's CA, the resource).
type PodSpec struct {
	// Kernel is the guest bzImage; "" means kernel.Default().
	Kernel string
	// Agent is the cvm-agent binary; "" means next to the executable.
	Agent string
	// TEE is the pod's TEE; only sim has a measurement this release
	// computes.
	TEE      string
	KBSCA    string // the broker's CA file (PEM)
	Resource string
	VCPUs    int    // 0 means DefaultVCPUs, as the shim
	Memory   uint64 // bytes; 0 means DefaultMemory, as the shim
}

// MeasurePod computes the measurement of the pod VM the shim starts for
// s (`cvm measure pod`): the plan digest (PodPlanDigest) of the kernel,
// the pod initramfs (PodInitramfs), the kernel command line, vCPUs,
// memory and the default DefaultPodHotplugSlots disk hot-plug slots.
func MeasurePod(s PodSpec) (*attestcmd.Measurement, error) {
	if s.TEE != "sim" {
		return nil, invalid("--tee %q: only sim pods have a measurement this release computes", s.TEE)
	}
	if s.VCPUs == 0 {
		s.VCPUs = DefaultVCPUs
	}
	if s.Memory == 0 {
		s.Memory = DefaultMemory
	}
	if s.VCPUs < 1 || s.VCPUs > 64 {
		return nil, invalid("--vcpus %d: want 1..64 (the shim's range)", s.VCPUs)
	}
	if s.Memory%(1<<20) != 0 || s.Memory < 128<<20 || s.Memory > 64<<30 {
		return nil, invalid("--memory %d bytes: want 128M..64G, a multiple of 1M (the shim's range)", s.Memory)
	}
	if s.KBSCA == "" {
		return nil, invalid("--kbs-ca FILE is required (the key broker's CA certificate, PEM)")
	}
	ca, err := readCA(s.KBSCA)
	if err != nil {
		return nil, err
	}
	if s.Resource == "" {
		return nil, invalid("--resource NAME is required (the broker resource the pod fetches)")
	}
	var k *kernel.Kernel
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
	agent, err := FindAgent(s.Agent)
	if err != nil {
		return nil, err
	}
	cfg := &launchconfig.Config{Version: launchconfig.Version, Mode: launchconfig.ModePod,
		TEE: attestation.TEE(s.TEE), KBSCAPEM: string(ca), Resource: s.Resource}
	conf, err := cfg.Marshal()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	initrd, err := PodInitramfs(k, agent, cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	d, err := PodPlanDigest(kraw, initrd, cmdline, s.VCPUs, s.Memory, DefaultPodHotplugSlots)
	if err != nil {
		return nil, err
	}
	m := &attestcmd.Measurement{TEE: "sim", LaunchDigest: fmt.Sprintf("%x", d[:]), Parameters: map[string]string{
		"mode":     "pod",
		"vcpus":    strconv.Itoa(s.VCPUs),
		"memory":   vmm.FormatSize(s.Memory),
		"cmdline":  cmdline,
		"kernel":   k.Release,
		"resource": s.Resource,
		"slots":    strconv.Itoa(DefaultPodHotplugSlots),
	}}
	m.Inputs = []attestcmd.MeasureInput{
		input("kernel", k.Path, kraw),
		input("initrd", "pod initramfs (agent, launch.json, modules)", initrd),
		input("launch_config", "/etc/cvm/launch.json", conf),
	}
	return m, nil
}

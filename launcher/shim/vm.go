package shim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/ttrpc"

	"github.com/greatjail/cvm/guest-agent/launchconfig"
	"github.com/greatjail/cvm/guest-agent/link"
	"github.com/greatjail/cvm/launcher/engine"
	"github.com/greatjail/cvm/launcher/initramfs"
	"github.com/greatjail/cvm/launcher/kernel"
	"github.com/greatjail/cvm/launcher/shim/rootimage"
	agentv1 "github.com/greatjail/cvm/proto/cvm/agent/v1"
)

// AgentName is the guest agent binary's file name.
const AgentName = "cvm-agent"

// ErrConfidentialPod is returned for a pod that asks for a TEE (io.cvm.tee
// sim, snp or tdx): the agent's pod mode gates containers behind
// attestation, but the shim does not yet relay the broker or call Launch
// (docs/containerd.md, "What remains").
var ErrConfidentialPod = errors.New("shim: confidential pods (io.cvm.tee sim, snp or tdx) are not supported by the shim yet; use io.cvm.tee=none")

// NewVMSandbox is the shipped binary's sandbox constructor: a plain
// (tee none) microVM per pod on the qemu engine (KVM when /dev/kvm works,
// TCG otherwise), with the kernel, memory, vCPUs and root image format of
// the pod's annotations (VMOptions) or the installed defaults: the kernel
// is kernel.Default() (PREFIX/share/cvm), the agent FindAgent().
func NewVMSandbox(ctx context.Context, bundle, podID string) (Sandbox, error) {
	o, err := bundleVMOptions(bundle)
	if err != nil {
		return nil, err
	}
	if o.TEE != "" && o.TEE != launchconfig.TEENone {
		return nil, fmt.Errorf("pod %q: %w", podID, ErrConfidentialPod)
	}
	var k *kernel.Kernel
	if o.Kernel != "" {
		k, err = kernel.Open(o.Kernel)
	} else {
		k, err = kernel.Default()
	}
	if err != nil {
		return nil, fmt.Errorf("shim: pod %q: guest kernel: %w", podID, err)
	}
	agent, err := FindAgent()
	if err != nil {
		return nil, fmt.Errorf("shim: pod %q: %w", podID, err)
	}
	choice, err := engine.Select("qemu", nil)
	if err != nil {
		return nil, fmt.Errorf("shim: pod %q: %w", podID, err)
	}
	return NewVM(VMConfig{Engine: choice.Engine, Kernel: k, Init: agent,
		VCPUs: o.VCPUs, Memory: o.Memory, Format: o.Format})(ctx, bundle, podID)
}

// FindAgent returns the guest agent binary as the launcher finds it:
// $CVM_AGENT, else cvm-agent next to the running executable, else
// <exe dir>/../share/cvm/cvm-agent (the installed layout).
func FindAgent() (string, error) {
	if p := os.Getenv("CVM_AGENT"); p != "" {
		if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() {
			return "", fmt.Errorf("the guest agent $CVM_AGENT=%s is not a regular file", p)
		}
		return p, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find %s: %w", AgentName, err)
	}
	if r, err := filepath.EvalSymlinks(exe); err == nil {
		exe = r
	}
	return findAgentFrom(exe)
}

func findAgentFrom(exe string) (string, error) {
	dir := filepath.Dir(exe)
	tried := []string{filepath.Join(dir, AgentName), filepath.Join(dir, "..", "share", "cvm", AgentName)}
	for _, p := range tried {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", fmt.Errorf("the guest agent %s is not in %s (install it with scripts/install.sh, or set $CVM_AGENT)", AgentName, strings.Join(tried, " or "))
}

// CleanupVMSandbox releases what a dead shim's microVM left. The VMM runs
// with a parent-death signal, so it died with the shim; nothing else is
// left outside the bundle.
func CleanupVMSandbox(ctx context.Context, bundle string) error { return nil }

// VMConfig configures the microVM sandbox.
type VMConfig struct {
	Engine engine.Engine
	Kernel *kernel.Kernel
	// Init is the guest /init: the agent (cvm-agent), which the pod-mode
	// launch configuration in the initramfs puts in pod mode.
	Init    string
	Cmdline string // default "console=ttyS0 panic=-1 quiet"
	VCPUs   int    // default 1
	Memory  uint64 // bytes; default 512 MiB
	// Format of the root file system images; default ext4.
	Format rootimage.Format
	// BootTimeout bounds the boot up to the link; default 3 minutes.
	BootTimeout time.Duration
	// HotplugSlots is how many disks can be hot-plugged at once on the
	// qemu engine (containers after the pod's first): 0 means
	// DefaultHotplugSlots, negative none. Other engines have none yet.
	HotplugSlots int
}

// NewVM returns a constructor for Options.NewSandbox: one microVM per pod,
// kept in <bundle of the pod's first task>/vm. The VM boots when the first
// container's root file system is known (Rootfs), with that root as its
// disk (/dev/vda). Later containers' roots are hot-plugged disks (qemu
// engine; see hotplug.go); on an engine without hot-plug they fail with
// NotImplemented.
func NewVM(cfg VMConfig) func(ctx context.Context, bundle, podID string) (Sandbox, error) {
	return func(ctx context.Context, bundle, podID string) (Sandbox, error) {
		if cfg.Engine == nil || cfg.Kernel == nil || cfg.Init == "" {
			return nil, fmt.Errorf("shim: VM sandbox for pod %q: engine, kernel and init are required", podID)
		}
		dir := filepath.Join(bundle, "vm")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("shim: VM state directory: %w", err)
		}
		return &vmSandbox{cfg: cfg, pod: podID, dir: dir}, nil
	}
}

type vmSandbox struct {
	cfg VMConfig
	pod string
	dir string

	mu     sync.Mutex
	h      engine.Handle // guarded by mu; nil until boot
	sess   *link.Session
	client *ttrpc.Client
	c      agentv1.ContainersClient
	diskOf string   // container whose root is the VM's disk
	hp     *hotplug // nil: no hot-plug
	hpDir  string   // the QMP socket and QEMU wrapper, until boot connected
}

// Containers returns the agent's client; valid once Rootfs booted the VM.
func (v *vmSandbox) Containers() agentv1.ContainersClient {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.c == nil {
		return notBooted{}
	}
	return v.c
}

// Rootfs makes the image of dir and, for the pod's first container, boots
// the VM with it as /dev/vda.
func (v *vmSandbox) Rootfs(ctx context.Context, id, dir string) (*agentv1.ContainerRootfs, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.h != nil && v.hp == nil {
		return nil, fmt.Errorf("shim: pod %q: container %q needs a second disk, and the %s engine cannot hot-plug disks: %w",
			v.pod, id, v.cfg.Engine.Name(), errdefs.ErrNotImplemented)
	}
	format := v.cfg.Format
	if format == "" {
		format = rootimage.EXT4
	}
	img := filepath.Join(v.dir, id+"."+string(format))
	if err := rootimage.Make(ctx, format, dir, img); err != nil {
		return nil, err
	}
	if v.h != nil {
		serial, err := v.hp.add(id, img)
		if err != nil {
			os.Remove(img)
			return nil, fmt.Errorf("shim: pod %q: hot-plug the root disk of container %q: %w", v.pod, id, err)
		}
		return &agentv1.ContainerRootfs{Source: &agentv1.ContainerRootfs_Block{
			Block: &agentv1.BlockRootfs{Serial: serial, Fstype: string(format)}}}, nil
	}
	if err := v.boot(ctx, img); err != nil {
		os.Remove(img)
		return nil, err
	}
	v.diskOf = id
	return &agentv1.ContainerRootfs{Source: &agentv1.ContainerRootfs_Block{
		Block: &agentv1.BlockRootfs{Device: "/dev/vda", Fstype: string(format)}}}, nil
}

// boot starts the VM and connects to the Containers service.
// Preconditions: v.mu held, v.h nil.
func (v *vmSandbox) boot(ctx context.Context, disk string) (err error) {
	initrd := filepath.Join(v.dir, "initrd")
	b, err := PodInitramfs(v.cfg.Kernel, v.cfg.Init, &launchconfig.Config{Version: launchconfig.Version, Mode: launchconfig.ModePod, TEE: launchconfig.TEENone})
	if err != nil {
		return err
	}
	if err := os.WriteFile(initrd, b, 0o600); err != nil {
		return fmt.Errorf("shim: initramfs: %w", err)
	}
	// Unix socket paths are limited to 108 bytes; bundles are deep.
	sockDir, err := os.MkdirTemp("", "cvm-link-")
	if err != nil {
		return fmt.Errorf("shim: link socket: %w", err)
	}
	defer os.RemoveAll(sockDir) // the link is connected once Link returns
	m := engine.Machine{
		Kernel: v.cfg.Kernel.Path, Initrd: initrd, Cmdline: cmpOr(v.cfg.Cmdline, "console=ttyS0 panic=-1 quiet"),
		VCPUs: max(v.cfg.VCPUs, 1), Memory: cmpOr(v.cfg.Memory, 512<<20), Disk: disk,
		LinkSocket: filepath.Join(sockDir, "link"),
		ConsoleLog: filepath.Join(v.dir, "console.log"), EngineLog: filepath.Join(v.dir, "engine.log"),
	}
	eng := v.cfg.Engine
	if q, ok := eng.(*engine.QEMU); ok && v.cfg.HotplugSlots >= 0 {
		if v.hpDir, err = os.MkdirTemp("", "cvm-hp-"); err != nil {
			return fmt.Errorf("shim: hot-plug directory: %w", err)
		}
		if eng, v.hp, err = wrapQEMU(q, v.hpDir, cmpOr(v.cfg.HotplugSlots, DefaultHotplugSlots)); err != nil {
			return err
		}
	}
	defer func() {
		if err != nil && v.hpDir != "" {
			os.RemoveAll(v.hpDir)
			v.hp, v.hpDir = nil, ""
		}
	}()
	h, err := eng.Start(context.WithoutCancel(ctx), m)
	if err != nil {
		return fmt.Errorf("shim: start the microVM of pod %q: %w", v.pod, err)
	}
	defer func() {
		if err != nil {
			h.Kill()
			h.Wait()
		}
	}()
	bctx, cancel := context.WithTimeout(ctx, cmpOr(v.cfg.BootTimeout, 3*time.Minute))
	defer cancel()
	conn, err := h.Link(bctx)
	if err != nil {
		return fmt.Errorf("shim: microVM of pod %q: link: %w (console: %s)", v.pod, err, m.ConsoleLog)
	}
	sess, err := link.Host(conn)
	if err != nil {
		conn.Close()
		return fmt.Errorf("shim: microVM of pod %q: %w", v.pod, err)
	}
	stream, err := sess.Open(link.KindTTRPC)
	if err != nil {
		sess.Close()
		return fmt.Errorf("shim: microVM of pod %q: open the ttrpc stream: %w", v.pod, err)
	}
	if v.hp != nil {
		// Connect now: then the socket and wrapper are not needed any
		// more, and nothing is left in the temporary directory if the
		// shim is killed.
		err := v.hp.connect(bctx, h.Exited())
		os.RemoveAll(v.hpDir)
		v.hpDir = ""
		if err != nil {
			sess.Close()
			return fmt.Errorf("shim: microVM of pod %q: %w", v.pod, err)
		}
	}
	go acceptGuestStreams(sess, filepath.Join(v.dir, "agent.log"))
	v.h, v.sess = h, sess
	v.client = ttrpc.NewClient(stream)
	v.c = agentv1.NewContainersClient(v.client)
	return nil
}

// ReleaseRootfs unplugs the container's disk (if it was hot-plugged) and
// removes its image, once the guest unmounted it.
func (v *vmSandbox) ReleaseRootfs(ctx context.Context, id string) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	var errs []error
	if v.hp != nil && v.h != nil {
		if _, err := v.hp.remove(id); err != nil {
			errs = append(errs, fmt.Errorf("shim: pod %q: unplug the root disk of container %q: %w", v.pod, id, err))
		}
	}
	format := cmpOr(v.cfg.Format, rootimage.EXT4)
	// QEMU may still hold the file open: unlinking it is fine.
	if err := os.Remove(filepath.Join(v.dir, id+"."+string(format))); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Close stops the VM.
func (v *vmSandbox) Close(ctx context.Context) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.h == nil {
		return nil
	}
	v.client.Close()
	v.sess.Close()
	v.h.Kill()
	v.h.Wait()
	v.h = nil
	if v.hp != nil {
		v.hp.close()
	}
	return nil
}

// acceptGuestStreams serves the streams the agent opens: its log goes to
// logPath; anything else (kbs, psp: a plain pod has no broker) is closed.
func acceptGuestStreams(sess *link.Session, logPath string) {
	for {
		kind, c, err := sess.Accept()
		if err != nil {
			return
		}
		if kind != link.KindLog {
			c.Close()
			continue
		}
		go func() {
			defer c.Close()
			f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
			if err != nil {
				io.Copy(io.Discard, c)
				return
			}
			defer f.Close()
			io.Copy(f, c)
		}()
	}
}

// PodInitramfs is the pod-mode initramfs (cpio newc): the agent as /init,
// cfg (a pod-mode launch configuration) as /etc/cvm/launch.json, the
// modules of launchconfig.PodModules with their load order, the usual
// empty directories.
func PodInitramfs(k *kernel.Kernel, init string, cfg *launchconfig.Config) ([]byte, error) {
	if !cfg.IsPod() {
		return nil, fmt.Errorf("shim: the pod initramfs needs a pod-mode launch configuration, not mode %q", cfg.Mode)
	}
	conf, err := cfg.Marshal()
	if err != nil {
		return nil, fmt.Errorf("shim: pod launch configuration: %w", err)
	}
	mods, err := k.Modules(launchconfig.PodModules(cfg.TEE))
	if err != nil {
		return nil, fmt.Errorf("shim: kernel %s modules: %w", k.Release, err)
	}
	initBin, err := os.ReadFile(init)
	if err != nil {
		return nil, fmt.Errorf("shim: guest init: %w", err)
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
		return nil, fmt.Errorf("shim: initramfs: %w", err)
	}
	var b bytes.Buffer
	if _, err := a.WriteTo(&b); err != nil {
		return nil, fmt.Errorf("shim: initramfs: %w", err)
	}
	return b.Bytes(), nil
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// notBooted answers for a sandbox whose VM has not booted: every call
// fails with FailedPrecondition.
type notBooted struct{ agentv1.ContainersClient }

var errNotBooted = fmt.Errorf("shim: the pod's microVM has not booted: %w", errdefs.ErrFailedPrecondition)

func (notBooted) Create(context.Context, *agentv1.CreateContainerRequest) (*agentv1.CreateContainerResponse, error) {
	return nil, errNotBooted
}
func (notBooted) Start(context.Context, *agentv1.StartProcessRequest) (*agentv1.StartProcessResponse, error) {
	return nil, errNotBooted
}
func (notBooted) Output(context.Context, *agentv1.ProcessOutputRequest) (agentv1.Containers_OutputClient, error) {
	return nil, errNotBooted
}
func (notBooted) WriteStdin(context.Context, *agentv1.WriteStdinRequest) (*agentv1.WriteStdinResponse, error) {
	return nil, errNotBooted
}
func (notBooted) CloseStdin(context.Context, *agentv1.CloseStdinRequest) (*agentv1.CloseStdinResponse, error) {
	return nil, errNotBooted
}
func (notBooted) Signal(context.Context, *agentv1.SignalProcessRequest) (*agentv1.SignalProcessResponse, error) {
	return nil, errNotBooted
}
func (notBooted) Wait(context.Context, *agentv1.WaitProcessRequest) (*agentv1.WaitProcessResponse, error) {
	return nil, errNotBooted
}
func (notBooted) Pids(context.Context, *agentv1.ContainerPidsRequest) (*agentv1.ContainerPidsResponse, error) {
	return nil, errNotBooted
}
func (notBooted) Stats(context.Context, *agentv1.ContainerStatsRequest) (*agentv1.ContainerStatsResponse, error) {
	return nil, errNotBooted
}
func (notBooted) Remove(context.Context, *agentv1.RemoveContainerRequest) (*agentv1.RemoveContainerResponse, error) {
	return &agentv1.RemoveContainerResponse{}, nil // nothing was created
}

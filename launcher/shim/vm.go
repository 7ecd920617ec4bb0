package shim

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/attestation/sim"

	"github.com/greatjail/cvm/guest-agent/launchconfig"
	"github.com/greatjail/cvm/guest-agent/link"
	"github.com/greatjail/cvm/internal/guesttext"
	"github.com/greatjail/cvm/launcher"
	"github.com/greatjail/cvm/launcher/engine"
	"github.com/greatjail/cvm/launcher/kernel"
	"github.com/greatjail/cvm/launcher/shim/rootimage"
	agentv1 "github.com/greatjail/cvm/proto/cvm/agent/v1"
)

// AgentName is the guest agent binary's file name.
const AgentName = "cvm-agent"

// ErrDenied is wrapped by the error of a confidential pod's first Create
// when the key broker denied the pod's attestation.
var ErrDenied = errors.New("the key broker denied the pod")

// NewVMSandbox is the shipped binary's sandbox constructor: a microVM per
// pod on the engine the options name (engine.Select; default qemu, KVM
// when /dev/kvm works, TCG otherwise; builtin needs /dev/kvm), with
// the settings of the task's runtime options (ParseRuntimeOptions: the
// node's defaults), overridden by the pod's annotations (VMOptions), else
// the installed defaults: the kernel is kernel.Default()
// (PREFIX/share/cvm), the agent FindAgent(). A pod with io.cvm.tee sim,
// snp or tdx is confidential: its VM attests to the key broker before its
// first container is created.
func NewVMSandbox(ctx context.Context, r SandboxRequest) (Sandbox, error) {
	podID := r.PodID
	node, err := ParseRuntimeOptions(r.Options)
	if err != nil {
		return nil, err
	}
	ann, err := bundleVMOptions(r.Bundle)
	if err != nil {
		return nil, err
	}
	o := node.Merge(ann)
	if err := o.checkConfidential(); err != nil {
		return nil, fmt.Errorf("pod %q: %w", podID, err)
	}
	var conf *Confidential
	if o.TEE != "" && o.TEE != launchconfig.TEENone {
		if conf, err = o.confidential(); err != nil {
			return nil, fmt.Errorf("shim: pod %q: %w", podID, err)
		}
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
	choice, err := selectEngine(o.Engine, nil)
	if err != nil {
		return nil, fmt.Errorf("shim: pod %q: %w", podID, err)
	}
	return NewVM(VMConfig{Engine: choice.Engine, Kernel: k, Init: agent,
		VCPUs: o.VCPUs, Memory: o.Memory, Format: o.Format, Confidential: conf})(ctx, r.Bundle, podID)
}

// selectEngine is engine.Select of name ("" is DefaultEngine) with an
// error that names the option and annotation that chose it. kvm probes
// /dev/kvm; nil means engine.ProbeKVM.
func selectEngine(name string, kvm func() error) (engine.Choice, error) {
	name = cmpOr(name, DefaultEngine)
	if name == EngineBuiltin {
		// engine.Select's own message names the launcher's flag.
		if kvm == nil {
			kvm = engine.ProbeKVM
		}
		if err := kvm(); err != nil {
			return engine.Choice{}, fmt.Errorf("the builtin engine needs a usable /dev/kvm: %w (set the runtime option engine or the annotation %s to %s or %s)",
				err, AnnotationEngine, EngineQEMU, EngineAuto)
		}
		return engine.Select(name, func() error { return nil })
	}
	c, err := engine.Select(name, kvm)
	if err != nil {
		return engine.Choice{}, fmt.Errorf("engine %q (runtime option engine, annotation %s): want %s, %s or %s: %w",
			name, AnnotationEngine, EngineQEMU, EngineBuiltin, EngineAuto, err)
	}
	return c, nil
}

// confidential loads the files a confidential pod's options name.
func (o VMOptions) confidential() (*Confidential, error) {
	ca, err := launcher.ReadCA(o.KBSCA)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", AnnotationKBSCA, err)
	}
	c := &Confidential{TEE: o.TEE, KBS: o.KBS, KBSCAPEM: ca, Resource: o.Resource}
	if o.TEE == attestation.TEESim {
		if c.Sim, err = sim.Load(o.SimDir); err != nil {
			return nil, fmt.Errorf("%s %s: %w", AnnotationSimDir, o.SimDir, err)
		}
	}
	return c, nil
}

// FindAgent returns the guest agent binary as the launcher finds it
// (launcher.FindAgent): $CVM_AGENT, else next to the running executable,
// else <exe dir>/../share/cvm/cvm-agent (the installed layout).
func FindAgent() (string, error) { return launcher.FindAgent(os.Getenv("CVM_AGENT")) }

// findAgentFrom is launcher.AgentFrom, named for the shim's tests.
var findAgentFrom = launcher.AgentFrom

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
	// HotplugSlots is how many disks can be hot-plugged at once
	// (containers after the pod's first) on the qemu and builtin
	// engines: 0 means DefaultHotplugSlots, negative none. Other engines
	// have none.
	HotplugSlots int
	// Confidential, when set, makes the pod confidential: its measured
	// launch configuration names the TEE, the broker's CA and the
	// resource; the host serves the guest's kbs (and, tee sim, psp)
	// streams; and the VM attests (Agent.Launch) before the first
	// container is created.
	Confidential *Confidential
	// LaunchTimeout bounds a confidential pod's attestation; default 5
	// minutes.
	LaunchTimeout time.Duration
}

// Confidential is a confidential pod's attestation setup.
type Confidential struct {
	// TEE is sim, snp or tdx.
	TEE attestation.TEE
	// KBS is the key broker, HOST:PORT as the host reaches it; its host
	// part is the TLS server name the guest checks.
	KBS string
	// KBSCAPEM is the broker's CA (launcher.ReadCA), pinned by the guest.
	KBSCAPEM []byte
	// Resource is what the guest fetches to prove the broker accepted it.
	Resource string
	// Sim is the simulated TEE that signs the guest's reports (tee sim).
	Sim *sim.Authority
}

// PodLaunchConfig is the measured launch configuration of a pod: plain
// when c is nil.
func PodLaunchConfig(c *Confidential) *launchconfig.Config {
	cfg := &launchconfig.Config{Version: launchconfig.Version, Mode: launchconfig.ModePod, TEE: launchconfig.TEENone}
	if c != nil {
		cfg.TEE, cfg.KBSCAPEM, cfg.Resource = c.TEE, string(c.KBSCAPEM), c.Resource
	}
	return cfg
}

// PodMeasurement is the launch measurement of a pod VM (the simulated
// TEE's MEASUREMENT, what the broker's reference values must hold): the
// plan digest of kernel k, the pod initramfs (init, cfg), the kernel
// command line, vcpus, memory and its slots disk hot-plug slots, computed
// as for `cvm launch` (launcher.PodPlanDigest).
func PodMeasurement(k *kernel.Kernel, init string, cfg *launchconfig.Config, cmdline string, vcpus int, memory uint64, slots int) ([48]byte, []byte, error) {
	initrd, err := PodInitramfs(k, init, cfg)
	if err != nil {
		return [48]byte{}, nil, err
	}
	kraw, err := os.ReadFile(k.Path)
	if err != nil {
		return [48]byte{}, nil, fmt.Errorf("shim: kernel: %w", err)
	}
	d, err := launcher.PodPlanDigest(kraw, initrd, cmdline, vcpus, memory, slots)
	if err != nil {
		return [48]byte{}, nil, fmt.Errorf("shim: pod measurement: %w", err)
	}
	return d, initrd, nil
}

// The defaults of a pod VM.
const (
	DefaultPodVCPUs  = launcher.DefaultVCPUs
	DefaultPodMemory = launcher.DefaultMemory
)

// NewVM returns a constructor for Options.NewSandbox: one microVM per pod,
// kept in <bundle of the pod's first task>/vm. The VM boots when the first
// container's root file system is known (Rootfs), with that root as its
// disk (/dev/vda). Later containers' roots are hot-plugged disks (qemu
// and builtin engines; see hotplug.go); on an engine without hot-plug
// they fail with NotImplemented.
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
	hpDir  string   // holds the QMP socket until boot connected
	lh     *launcher.LinkHost
	alog   *os.File // agent.log
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
		fi, err := os.Stat(img)
		if err != nil {
			os.Remove(img)
			return nil, fmt.Errorf("shim: pod %q: root disk of container %q: %w", v.pod, id, err)
		}
		serial, err := v.hp.add(ctx, id, img)
		if err != nil {
			os.Remove(img)
			return nil, fmt.Errorf("shim: pod %q: hot-plug the root disk of container %q: %w", v.pod, id, err)
		}
		// The size lets the guest tell this disk from the one a reused
		// slot held before (rootimage.Make pads to whole 4 KiB blocks,
		// so both engines show exactly this many bytes).
		return &agentv1.ContainerRootfs{Source: &agentv1.ContainerRootfs_Block{
			Block: &agentv1.BlockRootfs{Serial: serial, Size: uint64(fi.Size()), Fstype: string(format)}}}, nil
	}
	if err := v.boot(ctx, img); err != nil {
		os.Remove(img)
		return nil, err
	}
	v.diskOf = id
	return &agentv1.ContainerRootfs{Source: &agentv1.ContainerRootfs_Block{
		Block: &agentv1.BlockRootfs{Device: "/dev/vda", Fstype: string(format)}}}, nil
}

// boot starts the VM, connects to the Containers service and, for a
// confidential pod, attests.
// Preconditions: v.mu held, v.h nil.
func (v *vmSandbox) boot(ctx context.Context, disk string) (err error) {
	cmdline := cmpOr(v.cfg.Cmdline, launchconfig.Cmdline)
	vcpus, memory := cmpOr(v.cfg.VCPUs, DefaultPodVCPUs), cmpOr(v.cfg.Memory, DefaultPodMemory)
	conf := v.cfg.Confidential
	initrd := filepath.Join(v.dir, "initrd")
	var b []byte
	var digest [48]byte
	if conf != nil {
		if digest, b, err = PodMeasurement(v.cfg.Kernel, v.cfg.Init, PodLaunchConfig(conf), cmdline, vcpus, memory, v.slots()); err != nil {
			return err
		}
		// For the operator: what the broker must know.
		os.WriteFile(filepath.Join(v.dir, "measurement"), []byte(hex.EncodeToString(digest[:])+"\n"), 0o600)
	} else if b, err = PodInitramfs(v.cfg.Kernel, v.cfg.Init, PodLaunchConfig(nil)); err != nil {
		return err
	}
	if err := os.WriteFile(initrd, b, 0o600); err != nil {
		return fmt.Errorf("shim: initramfs: %w", err)
	}
	host := launcher.HostOptions{}
	if conf != nil {
		host.KBS = conf.KBS
		if conf.TEE == attestation.TEESim {
			if conf.Sim == nil {
				return fmt.Errorf("shim: pod %q: tee sim needs the simulated TEE (Confidential.Sim)", v.pod)
			}
			if host.PSP, err = launcher.SimPSP(conf.Sim, digest); err != nil {
				return fmt.Errorf("shim: pod %q: %w", v.pod, err)
			}
		}
	}
	// Unix socket paths are limited to 108 bytes; bundles are deep.
	sockDir, err := os.MkdirTemp("", "cvm-link-")
	if err != nil {
		return fmt.Errorf("shim: link socket: %w", err)
	}
	defer os.RemoveAll(sockDir) // the link is connected once Link returns
	m := engine.Machine{
		Kernel: v.cfg.Kernel.Path, Initrd: initrd, Cmdline: cmdline,
		VCPUs: vcpus, Memory: memory, Disk: disk,
		LinkSocket: filepath.Join(sockDir, "link"),
		ConsoleLog: filepath.Join(v.dir, "console.log"), EngineLog: filepath.Join(v.dir, "engine.log"),
	}
	if v.cfg.HotplugSlots >= 0 {
		switch v.cfg.Engine.(type) {
		case *engine.QEMU:
			if v.hpDir, err = os.MkdirTemp("", "cvm-hp-"); err != nil {
				return fmt.Errorf("shim: hot-plug directory: %w", err)
			}
			m.QMPSocket = filepath.Join(v.hpDir, "qmp")
			m.HotplugPorts = v.slots()
			v.hp = newHotplug(m.QMPSocket, m.HotplugPorts)
		case engine.Builtin, *engine.Builtin:
			// Slots the Handle fills (engine.DiskHotplug); v.hp is set
			// once the VM started.
			m.HotplugPorts = v.slots()
		}
	}
	defer func() {
		if err != nil {
			if v.hpDir != "" {
				os.RemoveAll(v.hpDir)
			}
			v.hp, v.hpDir = nil, ""
		}
	}()
	alog, err := os.OpenFile(filepath.Join(v.dir, "agent.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("shim: agent log: %w", err)
	}
	host.AgentLog = alog
	h, err := v.cfg.Engine.Start(context.WithoutCancel(ctx), m)
	if err != nil {
		alog.Close()
		return fmt.Errorf("shim: start the microVM of pod %q: %w", v.pod, err)
	}
	if dh, ok := h.(engine.DiskHotplug); ok && v.hp == nil && m.HotplugPorts > 0 {
		v.hp = newEngineHotplug(dh, m.HotplugPorts)
	}
	var sess *link.Session
	var lh *launcher.LinkHost
	defer func() {
		if err != nil {
			h.Kill()
			h.Wait()
			if sess != nil {
				sess.Close()
			}
			if lh != nil {
				lh.Wait()
			}
			alog.Close()
		}
	}()
	bctx, cancel := context.WithTimeout(ctx, cmpOr(v.cfg.BootTimeout, 3*time.Minute))
	defer cancel()
	conn, err := h.Link(bctx)
	if err != nil {
		return fmt.Errorf("shim: microVM of pod %q: link: %w (console: %s)", v.pod, err, m.ConsoleLog)
	}
	if sess, err = link.Host(conn); err != nil {
		conn.Close()
		return fmt.Errorf("shim: microVM of pod %q: %w", v.pod, err)
	}
	// The streams live as long as the VM (Close ends the session).
	lh = launcher.ServeLink(context.WithoutCancel(ctx), sess, host)
	stream, err := sess.Open(link.KindTTRPC)
	if err != nil {
		return fmt.Errorf("shim: microVM of pod %q: open the ttrpc stream: %w", v.pod, err)
	}
	client := ttrpc.NewClient(stream)
	defer func() {
		if err != nil {
			client.Close()
		}
	}()
	if v.hp != nil && v.hp.dh == nil {
		// Connect now: then the socket is not needed any more, and
		// nothing is left in the temporary directory if the shim is
		// killed.
		err := v.hp.connect(bctx, h.Exited())
		os.RemoveAll(v.hpDir)
		v.hpDir = ""
		if err != nil {
			return fmt.Errorf("shim: microVM of pod %q: %w", v.pod, err)
		}
	}
	if conf != nil {
		if err := v.attest(ctx, agentv1.NewAgentClient(client), lh, digest); err != nil {
			return v.ifStopped(err, h, launcher.StopGrace, "attestation", m.ConsoleLog)
		}
	}
	v.h, v.sess, v.lh, v.alog = h, sess, lh, alog
	v.client = client
	v.c = agentv1.NewContainersClient(client)
	return nil
}

// attest has the agent attest to the broker (Agent.Launch): the gate of
// a confidential pod's containers.
func (v *vmSandbox) attest(ctx context.Context, agent agentv1.AgentClient, lh *launcher.LinkHost, digest [48]byte) error {
	conf := v.cfg.Confidential
	server, _, err := net.SplitHostPort(conf.KBS)
	if err != nil {
		return fmt.Errorf("shim: pod %q: key broker %q: %w", v.pod, conf.KBS, err)
	}
	lctx, cancel := context.WithTimeout(ctx, cmpOr(v.cfg.LaunchTimeout, 5*time.Minute))
	defer cancel()
	_, err = agent.Launch(lctx, &agentv1.LaunchRequest{KbsServerName: server})
	if err == nil {
		return nil
	}
	st, _ := status.FromError(err)
	switch st.Code() {
	case codes.PermissionDenied:
		return fmt.Errorf("shim: pod %q: %w at %s (tee %s, measurement %x: is it among the broker's reference values, and may it fetch resource %q?): %w",
			v.pod, ErrDenied, conf.KBS, conf.TEE, digest, conf.Resource, errdefs.ErrPermissionDenied)
	case codes.Unavailable:
		if kerr, reached := lh.KBSState(); kerr != nil {
			return fmt.Errorf("shim: pod %q: the key broker %s is unreachable: %w: %w", v.pod, conf.KBS, kerr, errdefs.ErrUnavailable)
		} else if reached {
			return fmt.Errorf("shim: pod %q: the guest reached %s but could not open a session with the key broker there (is the CA the broker's?): %s: %w",
				v.pod, conf.KBS, guestMessage(st), errdefs.ErrUnavailable)
		}
		return fmt.Errorf("shim: pod %q: the key broker %s is unavailable: %s: %w", v.pod, conf.KBS, guestMessage(st), errdefs.ErrUnavailable)
	}
	return fmt.Errorf("shim: pod %q: attestation: %s", v.pod, guestMessage(st))
}

// ifStopped returns err, or, if the guest of h stops within grace, an
// error saying so (how it ended, its console's tail from consoleLog)
// that wraps err. The link breaks just before the engine is reaped;
// without this, a guest that crashed reads as "ttrpc: closed".
func (v *vmSandbox) ifStopped(err error, h engine.Handle, grace time.Duration, during, consoleLog string) error {
	if !launcher.StoppedWithin(h, grace) {
		return err
	}
	return fmt.Errorf("shim: pod %q: the microVM stopped during %s (%s)%s: %w",
		v.pod, during, launcher.StopReason(h), launcher.ConsoleTail(consoleLog), err)
}

// guestMessage is a status message that came from the guest, escaped and
// bounded for the host's logs and errors.
func guestMessage(st *status.Status) string { return guesttext.Line(st.Message(), 512) }

// ReleaseRootfs unplugs the container's disk (if it was hot-plugged) and
// removes its image, once the guest unmounted it.
func (v *vmSandbox) ReleaseRootfs(ctx context.Context, id string) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	var errs []error
	if v.hp != nil && v.h != nil {
		if _, err := v.hp.remove(ctx, id); err != nil {
			errs = append(errs, fmt.Errorf("shim: pod %q: unplug the root disk of container %q: %w", v.pod, id, err))
		}
	}
	format := cmpOr(v.cfg.Format, rootimage.EXT4)
	// QEMU may still hold the file open (a disk the guest did not
	// release): unlinking it is fine.
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
	v.lh.Wait()
	v.alog.Close()
	if v.hp != nil {
		v.hp.close()
	}
	return nil
}

// PodInitramfs is the pod-mode initramfs: launcher.PodInitramfs (the agent
// as /init, cfg as /etc/cvm/launch.json, the pod modules).
func PodInitramfs(k *kernel.Kernel, init string, cfg *launchconfig.Config) ([]byte, error) {
	b, err := launcher.PodInitramfs(k, init, cfg)
	if err != nil {
		return nil, fmt.Errorf("shim: %w", err)
	}
	return b, nil
}

// slots is how many disk hot-plug slots the pod VM gets: HotplugSlots
// (0: DefaultHotplugSlots, negative: none) on the qemu and builtin
// engines, none on others. The pod's measurement counts them.
func (v *vmSandbox) slots() int {
	if v.cfg.HotplugSlots < 0 {
		return 0
	}
	switch v.cfg.Engine.(type) {
	case *engine.QEMU, engine.Builtin, *engine.Builtin:
		return cmpOr(v.cfg.HotplugSlots, DefaultHotplugSlots)
	}
	return 0
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

package vmm

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"sync"

	"github.com/greatjail/cvm/vmm/acpi"
	"github.com/greatjail/cvm/vmm/devices"
	"github.com/greatjail/cvm/vmm/kvm"
	"github.com/greatjail/cvm/vmm/plan"
	"github.com/greatjail/cvm/vmm/virtio"
	"github.com/greatjail/cvm/vmm/vsock"
)

// guestCID is the vsock context ID of the guest.
const guestCID = 3

// stopper records the first reason the VM stops and cancels the vCPUs.
type stopper struct {
	once   sync.Once
	reason string
	err    error
	cancel context.CancelFunc
}

func (s *stopper) stop(reason string, err error) {
	s.once.Do(func() {
		s.reason, s.err = reason, err
		s.cancel()
	})
}

// Run validates cfg, boots the guest and blocks until it powers off or
// resets, ctx ends, or KVM fails. When ctx ends, the Result has
// ReasonCanceled and the error wraps ctx.Err(). Every resource Run
// acquires is released before it returns: stopping kicks every vCPU out
// of KVM_RUN (kvm.VCPU.Kick), so none can keep the VM alive.
func Run(ctx context.Context, cfg Config) (res *Result, err error) {
	p, wins, err := validate(cfg)
	if err != nil {
		return nil, err
	}
	// undo holds the KVM objects and guest RAM; devUndo the devices'
	// files and sockets.
	var undo, devUndo cleanup
	defer func() {
		cerr := errors.Join(devUndo.run(), undo.run())
		if cerr != nil && err == nil {
			err = fmt.Errorf("vmm: teardown: %w", cerr)
		}
	}()

	path := cfg.KVMPath
	if path == "" {
		path = DefaultKVMPath
	}
	sys, err := kvm.Open(path)
	if err != nil {
		return nil, fmt.Errorf("vmm: open %s: %w", path, err)
	}
	undo.push(sys.Close)

	ram, err := kvm.Mmap(int(p.MemorySize))
	if err != nil {
		return nil, fmt.Errorf("vmm: guest memory: %w", err)
	}
	undo.push(func() error { return kvm.Munmap(ram) })
	mem := NewMemory(ram)

	vm, err := sys.CreateVM()
	if err != nil {
		return nil, fmt.Errorf("vmm: create VM: %w", err)
	}
	undo.push(vm.Close)
	if err := setupVM(vm, mem); err != nil {
		return nil, err
	}
	if err := loadPlan(mem, p); err != nil {
		return nil, err
	}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	st := &stopper{cancel: cancel}

	pio, mmio, err := buildBuses(cfg, wins, vm, mem, st, &devUndo)
	if err != nil {
		return nil, err
	}

	cpuid, err := sys.SupportedCPUID()
	if err != nil {
		return nil, fmt.Errorf("vmm: supported CPUID: %w", err)
	}
	vcpus := make([]*kvm.VCPU, cfg.VCPUs)
	for i := range vcpus {
		c, err := vm.CreateVCPU(i)
		if err != nil {
			return nil, fmt.Errorf("vmm: create vCPU %d: %w", i, err)
		}
		vcpus[i] = c
		if err := c.SetCPUID(cpuidFor(cpuid, i)); err != nil {
			return nil, fmt.Errorf("vmm: vCPU %d: %w", i, err)
		}
		if err := c.SetMSRs(BootMSRs()); err != nil {
			return nil, fmt.Errorf("vmm: vCPU %d: boot MSRs: %w", i, err)
		}
	}
	if err := setupBSP(vcpus[0], p.BSP); err != nil {
		return nil, err
	}
	seccomp := cfg.Seccomp
	// The guest has its copy of the kernel and initrd now: drop ours (the
	// plan's blobs and cfg's bytes, once the caller no longer holds them)
	// and hand the heap back, so the VMM's own footprint is what it keeps
	// for running the guest.
	p, cfg = nil, Config{}
	debug.FreeOSMemory()
	if seccomp {
		if err := LockDown(); err != nil {
			return nil, err
		}
	}

	var wg sync.WaitGroup
	done := make(chan struct{})
	for _, c := range vcpus {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := c.RunLoop(runCtx, func(e kvm.Exit) (bool, error) {
				if runCtx.Err() != nil {
					return true, nil
				}
				return handleExit(c, e, pio, mmio, st)
			})
			if err != nil && runCtx.Err() == nil {
				st.stop("", fmt.Errorf("vmm: vCPU %d%s: %w", c.ID(), ripOf(c), err))
			}
		}()
	}
	go func() { wg.Wait(); close(done) }()

	<-runCtx.Done()
	st.stop(ReasonCanceled, nil) // no-op unless ctx itself ended
	// Every RunLoop kicks its vCPU when runCtx ends, so this wait is short.
	<-done
	res = &Result{Reason: st.reason}
	if st.err != nil {
		return nil, st.err
	}
	if st.reason == ReasonCanceled {
		return res, fmt.Errorf("vmm: run: %w", context.Cause(ctx))
	}
	return res, nil
}

// setupVM registers RAM and creates the KVM-side platform.
func setupVM(vm *kvm.VM, mem *Memory) error {
	if err := vm.SetTSSAddr(TSSAddr); err != nil {
		return fmt.Errorf("vmm: set TSS address: %w", err)
	}
	if err := vm.SetIdentityMapAddr(IdentityMapAddr); err != nil {
		return fmt.Errorf("vmm: set identity map address: %w", err)
	}
	if err := vm.CreateIRQChip(); err != nil {
		return fmt.Errorf("vmm: create irqchip: %w", err)
	}
	if err := vm.CreatePIT2(); err != nil {
		return fmt.Errorf("vmm: create PIT: %w", err)
	}
	for i, r := range mem.Regions() {
		if err := vm.SetUserMemoryRegion(uint32(i), r.GPA, mem.mem[r.Offset:r.Offset+r.Size], 0); err != nil {
			return fmt.Errorf("vmm: memory slot %d at %#x: %w", i, r.GPA, err)
		}
	}
	return nil
}

// loadPlan copies the plan's blobs into guest RAM (fresh RAM is zero, so
// Zero blobs need nothing).
func loadPlan(mem *Memory, p *plan.Plan) error {
	for _, b := range p.Blobs {
		if b.Type == plan.Zero || len(b.Data) == 0 {
			continue
		}
		if err := mem.WriteAt(b.Data, b.GPA); err != nil {
			return fmt.Errorf("vmm: load %s: %w", b.Name, err)
		}
	}
	return nil
}

// buildBuses creates the devices and registers them on the port and MMIO
// buses. Resources the devices own go on undo.
func buildBuses(cfg Config, wins []Window, vm *kvm.VM, mem *Memory, st *stopper, undo *cleanup) (*Bus, *Bus, error) {
	pulse := func(irq uint32) func(bool) {
		return func(level bool) {
			if level {
				_ = vm.IRQLine(irq, true)
				_ = vm.IRQLine(irq, false)
			}
		}
	}
	console := cfg.Console
	if console == nil {
		console = io.Discard
	}
	pio, mmio := &Bus{}, &Bus{}
	reboot := func() { st.stop(ReasonReboot, nil) }
	poweroff := func() { st.stop(ReasonPowerOff, nil) }
	regs := []struct {
		name       string
		base, size uint64
		dev        BusDevice
	}{
		{"COM1", devices.COM1Base, 8, devices.NewSerial(console, pulse(devices.COM1IRQ))},
		{"i8042", devices.I8042Base, 5, devices.NewI8042(reboot)},
		{"acpi-sleep", acpi.DefaultSleepPort, 1, sleepPort{poweroff: poweroff, reset: reboot}},
	}
	for _, r := range regs {
		if err := pio.Register(r.name, r.base, r.size, r.dev); err != nil {
			return nil, nil, err
		}
	}
	for _, w := range wins {
		var t *virtio.MMIO
		irq := pulse(w.IRQ)
		switch w.Kind {
		case KindBlock:
			d := cfg.Disks[w.Disk]
			f, err := openDisk(d)
			if err != nil {
				return nil, nil, fmt.Errorf("vmm: %w", err)
			}
			undo.push(f.Close)
			blk, err := devices.NewBlock(f, devices.BlockOptions{ReadOnly: d.ReadOnly, ID: fmt.Sprintf("vd%c", 'a'+w.Disk%26)})
			if err != nil {
				return nil, nil, fmt.Errorf("vmm: disk %s: %w", d.Path, err)
			}
			t = virtio.NewMMIO(blk, mem, irq)
			blk.Attach(t)
		case KindSlot:
			blk := devices.NewEmptyBlock()
			t = virtio.NewMMIO(blk, mem, irq)
			blk.Attach(t)
			s := cfg.Slots[w.Disk]
			if err := s.bind(blk); err != nil {
				return nil, nil, err
			}
			undo.push(s.stop)
		case KindRNG:
			r := devices.NewRNG(rand.Reader)
			t = virtio.NewMMIO(r, mem, irq)
			r.Attach(t)
		case KindVsock:
			v, err := vsock.New(vsock.Config{GuestCID: guestCID, UDSPath: cfg.VsockUDS})
			if err != nil {
				return nil, nil, fmt.Errorf("vmm: vsock %s: %w", cfg.VsockUDS, err)
			}
			undo.push(v.Close)
			t = virtio.NewMMIO(v, mem, irq)
			v.SetSignal(t.SignalUsed)
		}
		if err := mmio.Register(w.Name, w.Base, w.Size, t); err != nil {
			return nil, nil, err
		}
	}
	return pio, mmio, nil
}

// handleExit serves one vCPU exit.
func handleExit(c *kvm.VCPU, e kvm.Exit, pio, mmio *Bus, st *stopper) (bool, error) {
	switch e.Reason {
	case kvm.ExitIO:
		n := int(e.IO.Size)
		for i := 0; i < int(e.IO.Count) && (i+1)*n <= len(e.IO.Data); i++ {
			p := e.IO.Data[i*n : (i+1)*n]
			if e.IO.Direction == kvm.IOOut {
				pio.Write(uint64(e.IO.Port), p)
			} else {
				pio.Read(uint64(e.IO.Port), p)
			}
		}
		return false, nil
	case kvm.ExitMMIO:
		if e.MMIO.IsWrite {
			mmio.Write(e.MMIO.Addr, e.MMIO.Data)
		} else {
			mmio.Read(e.MMIO.Addr, e.MMIO.Data)
		}
		return false, nil
	case kvm.ExitIntr: // a signal interrupted KVM_RUN: just re-enter
		return false, nil
	case kvm.ExitShutdown: // triple fault: a PC resets
		st.stop(ReasonReboot, nil)
		return true, nil
	case kvm.ExitSystemEvent:
		switch e.SystemEvent.Type {
		case 1:
			st.stop(ReasonPowerOff, nil)
		case 2:
			st.stop(ReasonReboot, nil)
		default:
			st.stop("", fmt.Errorf("vmm: vCPU %d: guest system event %d (crash)%s", c.ID(), e.SystemEvent.Type, ripOf(c)))
		}
		return true, nil
	}
	err := fmt.Errorf("vmm: vCPU %d: unexpected exit %s%s", c.ID(), e, ripOf(c))
	st.stop("", err)
	return true, err
}

// ripOf names the vCPU's instruction pointer for error messages.
func ripOf(c *kvm.VCPU) string {
	r, err := c.Regs()
	if err != nil {
		return ""
	}
	return fmt.Sprintf(" at guest RIP %#x", r.RIP)
}

// cpuidFor copies the supported leaves and sets the APIC ID of vCPU id.
func cpuidFor(base *kvm.CPUID, id int) *kvm.CPUID {
	c := &kvm.CPUID{Entries: append([]kvm.CPUIDEntry(nil), base.Entries...)}
	for i := range c.Entries {
		e := &c.Entries[i]
		switch e.Function {
		case 1:
			e.EBX = e.EBX&0x00ffffff | uint32(id)<<24
			e.ECX |= 1 << 31 // hypervisor present
		case 0xb, 0x1f:
			e.EDX = uint32(id)
		}
	}
	return c
}

func segment(s plan.Segment) kvm.Segment {
	return kvm.Segment{
		Base: s.Base, Limit: s.Limit, Selector: s.Selector, Type: s.Type,
		Present: s.Present, DPL: s.DPL, DB: s.DB, S: s.S, L: s.L, G: s.G, AVL: s.AVL,
		Unusable: !s.Present,
	}
}

// setupBSP loads the plan's boot vCPU state.
func setupBSP(c *kvm.VCPU, st plan.VCPUState) error {
	sr, err := c.Sregs()
	if err != nil {
		return fmt.Errorf("vmm: vCPU 0: %w", err)
	}
	sr.CS, sr.DS, sr.ES, sr.FS, sr.GS, sr.SS = segment(st.CS), segment(st.DS), segment(st.ES), segment(st.FS), segment(st.GS), segment(st.SS)
	sr.TR, sr.LDT = segment(st.TR), segment(st.LDT)
	sr.GDT = kvm.DTable{Base: st.GDT.Base, Limit: st.GDT.Limit}
	sr.IDT = kvm.DTable{Base: st.IDT.Base, Limit: st.IDT.Limit}
	sr.CR0, sr.CR3, sr.CR4, sr.EFER = st.CR0, st.CR3, st.CR4, st.EFER
	if err := c.SetSregs(sr); err != nil {
		return fmt.Errorf("vmm: vCPU 0: %w", err)
	}
	rflags := st.RFLAGS
	if rflags == 0 {
		rflags = 2 // bit 1 is reserved and always set
	}
	if err := c.SetRegs(kvm.Regs{RIP: st.RIP, RSP: st.RSP, RBP: st.RBP, RSI: st.RSI, RBX: st.RBX, RFLAGS: rflags}); err != nil {
		return fmt.Errorf("vmm: vCPU 0: %w", err)
	}
	if err := c.SetFPU(kvm.FPU{FCW: 0x37f, MXCSR: 0x1f80}); err != nil {
		return fmt.Errorf("vmm: vCPU 0: %w", err)
	}
	return nil
}

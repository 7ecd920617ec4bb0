package kvm

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// VCPU is a virtual CPU and its shared kvm_run area. It must be used by
// one goroutine locked to its OS thread; see the package documentation.
type VCPU struct {
	id int
	h  handle

	mu     sync.Mutex // serialises Close and Kick; Run must not race with Close
	run    []byte     // kvm_run mapping; nil once closed
	closed bool

	// tid is the OS thread running RunLoop, 0 when none; Kick signals it.
	tid atomic.Int32
}

// kickSignal interrupts KVM_RUN on a vCPU thread. The Go runtime uses
// SIGURG for its own preemption requests and tolerates spurious ones (a
// program must too: see os/signal), so sending it never disturbs the
// process, and it makes KVM_RUN return EINTR like the runtime's own.
const kickSignal = unix.SIGURG

// Kick makes the vCPU leave the guest promptly: a Run in progress, or the
// next one, returns an ExitIntr exit. It sets kvm_run.immediate_exit
// (KVM_CAP_IMMEDIATE_EXIT) and signals the thread running RunLoop, so
// there is no window in which the kick is lost: a thread about to enter
// KVM_RUN sees the flag, one inside it gets the signal. Kick may be
// called from any goroutine, any number of times, also after Close.
func (c *VCPU) Kick() {
	c.mu.Lock()
	if c.run != nil {
		atomicStoreByte(&c.run[runImmediateExit], 1)
	}
	c.mu.Unlock()
	if tid := c.tid.Load(); tid != 0 {
		// ESRCH means the thread is gone, so it is not in KVM_RUN.
		_ = unix.Tgkill(unix.Getpid(), int(tid), kickSignal)
	}
}

// ID is the vCPU index given to [VM.CreateVCPU].
func (c *VCPU) ID() int { return c.id }

// Close unmaps the kvm_run area and closes the vCPU. It is idempotent.
// Precondition: Run is not executing.
func (c *VCPU) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	var errs []error
	if err := unix.Munmap(c.run); err != nil {
		errs = append(errs, fmt.Errorf("kvm: vcpu %d: unmap kvm_run: %w", c.id, err))
	}
	c.run = nil
	if err := c.h.close(); err != nil {
		errs = append(errs, fmt.Errorf("kvm: close vcpu %d: %w", c.id, err))
	}
	return errors.Join(errs...)
}

func (c *VCPU) errorf(op string, err error) error {
	return fmt.Errorf("kvm: vcpu %d: %s: %w", c.id, op, err)
}

// Regs returns the general-purpose registers (KVM_GET_REGS).
func (c *VCPU) Regs() (Regs, error) {
	var r kvmRegs
	if _, err := c.h.ioctlPtr(ioctlGetRegs, ptr(&r)); err != nil {
		return Regs{}, c.errorf("get regs", err)
	}
	return Regs(r), nil
}

// SetRegs sets the general-purpose registers (KVM_SET_REGS).
func (c *VCPU) SetRegs(regs Regs) error {
	r := kvmRegs(regs)
	if _, err := c.h.ioctlPtr(ioctlSetRegs, ptr(&r)); err != nil {
		return c.errorf("set regs", err)
	}
	return nil
}

// Sregs returns the special registers (KVM_GET_SREGS).
func (c *VCPU) Sregs() (Sregs, error) {
	var r kvmSregs
	if _, err := c.h.ioctlPtr(ioctlGetSregs, ptr(&r)); err != nil {
		return Sregs{}, c.errorf("get sregs", err)
	}
	return sregsFromRaw(r), nil
}

// SetSregs sets the special registers (KVM_SET_SREGS).
func (c *VCPU) SetSregs(s Sregs) error {
	r := sregsToRaw(s)
	if _, err := c.h.ioctlPtr(ioctlSetSregs, ptr(&r)); err != nil {
		return c.errorf("set sregs", err)
	}
	return nil
}

// FPU returns the x87/SSE state (KVM_GET_FPU).
func (c *VCPU) FPU() (FPU, error) {
	var r kvmFPU
	if _, err := c.h.ioctlPtr(ioctlGetFPU, ptr(&r)); err != nil {
		return FPU{}, c.errorf("get fpu", err)
	}
	return fpuFromRaw(r), nil
}

// SetFPU sets the x87/SSE state (KVM_SET_FPU). Linux boot expects
// FCW 0x37f and MXCSR 0x1f80.
func (c *VCPU) SetFPU(f FPU) error {
	r := fpuToRaw(f)
	if _, err := c.h.ioctlPtr(ioctlSetFPU, ptr(&r)); err != nil {
		return c.errorf("set fpu", err)
	}
	return nil
}

// SetCPUID sets the CPUID leaves the guest sees (KVM_SET_CPUID2). Start
// from [System.SupportedCPUID].
func (c *VCPU) SetCPUID(cpuid *CPUID) error {
	if cpuid == nil {
		return c.errorf("set cpuid", fmt.Errorf("nil CPUID: %w", ErrInvalid))
	}
	buf, _, raw := cpuidBuffer(len(cpuid.Entries))
	cpuidToRaw(cpuid, raw)
	if _, err := c.h.ioctlPtr(ioctlSetCPUID2, wordsPtr(buf)); err != nil {
		return c.errorf(fmt.Sprintf("set cpuid (%d entries)", len(cpuid.Entries)), err)
	}
	return nil
}

// SetMSRs writes model-specific registers (KVM_SET_MSRS). If KVM rejects
// one, the error names it; the ones before it were written.
func (c *VCPU) SetMSRs(msrs []MSR) error {
	if len(msrs) == 0 {
		return nil
	}
	buf, raw := msrBuffer(len(msrs))
	for i, m := range msrs {
		raw[i] = kvmMSREntry{index: m.Index, data: m.Data}
	}
	n, err := c.h.ioctlPtr(ioctlSetMSRs, wordsPtr(buf))
	if err != nil {
		return c.errorf("set msrs", err)
	}
	if int(n) < len(msrs) {
		return c.errorf("set msrs", fmt.Errorf("msr %#x rejected after %d of %d: %w", msrs[n].Index, n, len(msrs), ErrInvalid))
	}
	return nil
}

// MSRs reads the model-specific registers with the given indices
// (KVM_GET_MSRS).
func (c *VCPU) MSRs(indices ...uint32) ([]MSR, error) {
	if len(indices) == 0 {
		return nil, nil
	}
	buf, raw := msrBuffer(len(indices))
	for i, idx := range indices {
		raw[i].index = idx
	}
	n, err := c.h.ioctlPtr(ioctlGetMSRs, wordsPtr(buf))
	if err != nil {
		return nil, c.errorf("get msrs", err)
	}
	if int(n) < len(indices) {
		return nil, c.errorf("get msrs", fmt.Errorf("msr %#x unreadable after %d of %d: %w", indices[n], n, len(indices), ErrInvalid))
	}
	out := make([]MSR, len(indices))
	for i, r := range raw {
		out[i] = MSR{Index: r.index, Data: r.data}
	}
	return out, nil
}

// Run enters the guest until it exits to userspace (KVM_RUN) and decodes
// the exit. It re-enters by itself when a signal interrupts KVM_RUN
// (EINTR), which the Go runtime's preemption signals do routinely, and
// when KVM answers EAGAIN (an application processor woken while still
// waiting for its startup IPI). After [VCPU.Kick] it returns an ExitIntr
// exit instead, once per kick. The caller must be locked to its OS
// thread; [VCPU.RunLoop] does that.
//
// For ExitIO with IOIn and for MMIO reads, fill the Exit's Data before
// calling Run again: KVM completes the guest instruction from it.
func (c *VCPU) Run() (Exit, error) {
	if c.run == nil {
		return Exit{}, c.errorf("run", ErrClosed)
	}
	for {
		_, err := c.h.ioctl(ioctlRun, 0)
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
			if c.takeKick() {
				return Exit{Reason: ExitIntr}, nil
			}
			continue
		}
		if err != nil {
			return Exit{}, c.errorf("run", err)
		}
		e, err := decodeExit(c.run)
		if err != nil {
			return Exit{}, c.errorf("run", err)
		}
		if e.Reason == ExitIntr && !c.takeKick() {
			continue
		}
		return e, nil
	}
}

// takeKick reports whether a kick is pending and clears it.
func (c *VCPU) takeKick() bool {
	if atomicLoadByte(&c.run[runImmediateExit]) == 0 {
		return false
	}
	atomicStoreByte(&c.run[runImmediateExit], 0)
	return true
}

// RunLoop locks the calling goroutine to its OS thread and runs the vCPU,
// passing each exit to handler, until handler asks to stop or fails, Run
// fails, or ctx is done. When ctx ends, RunLoop kicks the vCPU
// ([VCPU.Kick]), so it returns promptly even while the guest runs without
// exiting or sits halted in the kernel; handler sees ExitIntr only for
// kicks from elsewhere. It returns nil when handler stops the loop, and
// ctx.Err() (wrapped) when the context ended it.
func (c *VCPU) RunLoop(ctx context.Context, handler func(Exit) (stop bool, err error)) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	c.tid.Store(int32(unix.Gettid()))
	defer c.tid.Store(0)
	stopKick := context.AfterFunc(ctx, c.Kick)
	defer stopKick()
	for {
		if err := ctx.Err(); err != nil {
			return c.errorf("run loop", err)
		}
		e, err := c.Run()
		if err != nil {
			return err
		}
		if e.Reason == ExitIntr && ctx.Err() != nil {
			continue // our own kick: the check above returns
		}
		stop, err := handler(e)
		if err != nil {
			return c.errorf(fmt.Sprintf("handle %s exit", e.Reason), err)
		}
		if stop {
			return nil
		}
	}
}

// RunningIoctls are the ioctl request numbers a VMM issues once its VM
// is set up and running: KVM_RUN, KVM_IRQ_LINE (interrupts from device
// models) and KVM_GET_REGS (the guest RIP in error messages). A seccomp
// allowlist installed after set-up can admit ioctl with these only.
func RunningIoctls() []uint64 {
	return []uint64{uint64(ioctlRun), uint64(ioctlIRQLine), uint64(ioctlGetRegs)}
}

// Package kvm provides typed bindings to the Linux KVM API (/dev/kvm).
//
// A [System] is the open /dev/kvm device; it creates a [VM], which owns
// memory slots, the in-kernel interrupt controller and PIT, and creates
// each [VCPU]. Guest memory comes from [Mmap] and is owned by the caller.
// Every raw kernel structure layout and ioctl number lives in
// abi_linux.go; the rest of the package speaks in Go types.
//
// # Ownership
//
// Each handle is closed by whoever created it. [VM.Close] also closes the
// vCPUs created from that VM that are still open, so a single deferred
// vm.Close releases everything except guest memory. Closing the [System]
// does not affect VMs created from it. Guest memory registered with
// [VM.SetUserMemoryRegion] must stay mapped until the VM and all its vCPUs
// are closed; only then call [Munmap].
//
// # Concurrency
//
// System and VM methods may be called from several goroutines at once;
// the kernel serialises them, and a Close racing with an ioctl cannot let
// the descriptor be reused under it (later calls return [ErrClosed]). A VM
// must not be closed while one of its vCPUs is running, because VM.Close
// also closes the vCPUs.
//
// A VCPU is used by one goroutine at a time, and that goroutine must stay
// locked to its OS thread (runtime.LockOSThread) for the vCPU's life: KVM
// binds the vCPU to the thread that runs it, and moving it is slow.
// [VCPU.RunLoop] does the locking itself. [VCPU.Close] must not be called
// while [VCPU.Run] is executing; stop the loop first (cancel its context
// and let the guest exit) and close afterwards.
//
// The [Exit] returned by Run holds slices into the vCPU's shared kvm_run
// page: they are valid only until the next Run and must not be retained.
//
// # Interrupting a vCPU
//
// [VCPU.Kick] forces a vCPU out of KVM_RUN from any goroutine: it sets
// kvm_run.immediate_exit and sends SIGURG to the thread running the vCPU
// (the signal the Go runtime itself uses to preempt goroutines, so a
// spurious one is harmless). RunLoop kicks its vCPU when its context ends,
// so cancelling the context stops a vCPU that is running guest code
// without exits, halted in the kernel, or an application processor still
// waiting for its startup IPI.
//
// # Test tiers
//
// Unit tests (ioctl numbers, struct layouts, exit decoding) need no
// /dev/kvm. Tests that run guests skip with a "tier kvm:" reason when
// /dev/kvm is absent or inaccessible.
package kvm

// Package vmm runs a Linux guest on KVM: it turns a Config into a launch
// plan (vmm/loader with ACPI tables from vmm/acpi), maps guest memory, loads
// the plan, wires the legacy devices (COM1, the i8042 reset line, the ACPI
// sleep/reset port) on an I/O port bus and the virtio-mmio devices (block,
// entropy, vsock) on an MMIO bus, and runs one goroutine per vCPU until the
// guest powers off or resets, the context ends, or KVM fails.
//
// Each vCPU starts with the CPUID leaves KVM supports (APIC ID and the
// hypervisor bit set per vCPU) and Firecracker's boot MSRs (BootMSRs). With
// Config.Seccomp, Run confines the process to the system calls a running
// VMM makes (LockDown, SeccompPolicy) once the VM is set up, after handing
// its copies of the kernel and initrd back to the OS.
//
// Validate checks everything that can be checked without KVM, so that bad
// input fails with a message naming the problem before any guest starts.
//
// # Concurrency
//
// Run blocks until the VM stops. Each vCPU runs on its own goroutine locked
// to its OS thread; the buses are safe for concurrent use by those threads
// (registration happens before the vCPUs start), and each device guards its
// own state (see vmm/devices, vmm/virtio, vmm/vsock). Bus, Memory and
// Validate may be used from any goroutine.
//
// # Stopping
//
// When the guest powers off or resets, KVM fails, or the context ends, Run
// cancels the vCPUs' context, and each vCPU loop kicks its vCPU out of
// KVM_RUN (kvm.VCPU.Kick: immediate_exit plus a signal to its thread), so
// even a vCPU that would never exit again (an application processor still
// waiting for its startup IPI, one the guest parked before powering off)
// stops. Run then closes the VM and unmaps guest memory before returning.
package vmm

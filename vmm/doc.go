// Package vmm runs a Linux guest on KVM: it turns a Config into a launch
// plan (vmm/loader with ACPI tables from vmm/acpi), maps guest memory, loads
// the plan, wires the legacy devices (COM1, the i8042 reset line, the ACPI
// sleep/reset port) on an I/O port bus and the virtio-mmio devices (block,
// entropy, vsock) on an MMIO bus, and runs one goroutine per vCPU until the
// guest powers off or resets, the context ends, or KVM fails.
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
// The vmm/kvm package has no way to kick a vCPU out of KVM_RUN, so a vCPU
// is stopped when it next exits to userspace. A vCPU that never exits again
// (an application processor still waiting for its SIPI, or one the guest
// parked before powering off) keeps its thread, and Run then leaves the VM
// descriptors and guest memory to the process exit; Result.Leaked says so.
package vmm

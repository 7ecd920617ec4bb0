// Package acpi builds the ACPI tables a microVM guest needs to find its
// hardware without MP tables or command-line device lists: an RSDP
// (revision 2), an XSDT, a hardware-reduced FADT (revision 6), a MADT with
// one enabled local APIC per vCPU and one IOAPIC, and a DSDT that describes
// each virtio-mmio device as a LNRO0005 device with its MMIO window and
// interrupt, each 16550 UART as a PNP0501 device (as Firecracker does for
// COM1), and the \_S5 object Linux needs to power off.
//
// The layout follows Firecracker: the RSDP lives at [RSDPAddr] (also to be
// passed in boot_params.acpi_rsdp_addr), the other tables are packed at a
// caller-chosen base. [Build] only produces bytes and guest-physical
// addresses; the caller copies [Tables.Blobs] into guest memory and marks
// that range reserved (or ACPI) in the e820 map.
//
// Power-off and reset use the FADT's hardware-reduced sleep control/status
// and reset registers, which live in I/O port space. A VMM emulates them by
// watching port writes: a byte write of [PowerOffValue] to the sleep control
// port means "power off", a byte write of [ResetValue] to the reset port
// means "reset"; every other write is ignored and reads return zero. (Before
// writing PowerOffValue, Linux writes 0x80, WAK_STS, to the sleep status
// register to clear it; with the default ports that is the same port. After
// the power-off write it polls the status register for WAK_STS, so the VMM
// must stop the vCPUs rather than expect the guest to halt.) Linux offers
// ACPI power-off on a hardware-reduced platform only when \_S5 exists and
// both sleep registers are set, which Build always provides.
//
// The package contains only pure functions over values; everything is safe
// for concurrent use.
package acpi

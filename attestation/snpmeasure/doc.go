// Package snpmeasure computes the expected AMD SEV-SNP launch digest (the
// MEASUREMENT field of an attestation report) of a guest started by a VMM
// from an OVMF firmware image, optionally with a measured direct-boot kernel.
//
// The launch digest is a SHA-384 hash chain. It starts at 48 zero bytes and,
// for every page the VMM hands to the AMD secure processor with
// SNP_LAUNCH_UPDATE, becomes SHA-384 of a 0x70-byte PAGE_INFO record: the
// current digest, SHA-384 of the page contents (normal and VMSA pages only,
// zero otherwise), the record length, the page type and the guest physical
// address (SEV-SNP firmware ABI, PAGE_INFO structure). With QEMU and OVMF the
// pages are, in order:
//
//  1. every 4 KiB page of the firmware file, mapped so that it ends at 4 GiB
//     (NORMAL pages);
//  2. the sections of the OVMF "SEV metadata" (edk2
//     OvmfPkg/ResetVector/X64/OvmfSevMetadata.asm), in table order: zero pages,
//     the secrets page, the CPUID page (measured last for EC2), and the
//     SNP_KERNEL_HASHES page, which is a NORMAL page holding the SEV hashes
//     table when a kernel is given and a zero page otherwise;
//  3. one VMSA page per vCPU (the SEV-ES save area of AMD APM vol. 2 table
//     B-4), the boot processor first, then the application processors, which
//     start at the EIP given by the firmware's SEV-ES reset block.
//
// The SEV hashes table (QEMU target/i386/sev.c) holds SHA-256 digests of the
// kernel file, the initrd file and the NUL-terminated command line. The
// firmware checks the blobs it receives over fw_cfg against it, so the launch
// digest covers them transitively. Only OVMF AmdSevX64 builds reserve the
// table; LaunchDigest refuses a kernel for other builds (ErrNoHashesTable),
// because their digest would not cover it.
//
// The algorithm and all constants follow virtee/sev-snp-measure v0.0.13
// (commit 8f2b337: sevsnpmeasure/{gctx,guest,ovmf,sev_hashes,vmsa,vcpu_types}.py),
// whose output is recorded in the reference vectors under
// testdata/measure/snp-*.json. The project's research note
// on launch measurements (sections 0 and 1) lists the remaining sources.
//
// The package is pure computation: it reads no files and touches no hardware.
package snpmeasure

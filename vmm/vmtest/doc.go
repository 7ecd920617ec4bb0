// Package vmtest holds the VM test tier of the builtin VMM: real Debian
// cloud kernels (6.12 and 6.1) booted with `cvm vm run`, directly where
// /dev/kvm is hardware-backed, otherwise inside the nested QEMU test host of
// internal/testhost. It has tests only; `make test-vm` runs them.
package vmtest

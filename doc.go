// Package cvm is the root of the cvm module: confidential microVMs with
// hardware attestation and a key broker. It holds no code, only the
// repository-wide tests (one package doc per package; what each binary may
// link). See README.md and docs/design.md.
package cvm

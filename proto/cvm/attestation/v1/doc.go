// Package attestationv1 holds the generated Go code for the
// cvm.attestation.v1 protobuf messages: Evidence and Claims. The .proto file
// beside it is the source; regenerate with `make proto`.
package attestationv1

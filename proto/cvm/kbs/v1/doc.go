// Package kbsv1 holds the generated Go code for the cvm.kbs.v1 key broker
// protocol: the Broker (guest), Admin and Audit services. The .proto file
// beside it is the source; regenerate with `make proto`.
package kbsv1

// Package vmtest runs the containerd shim's microVM path for real: the
// guest agent (cmd/cvm-agent) in pod mode as the guest's /init, serving
// the Containers ttrpc service on the link, driven first directly from the
// test, then through the shipped containerd-shim-cvm-v2 under a real
// containerd (docs/containerd.md). The tests boot QEMU (TCG where there is
// no KVM). Nothing here is shipped.
package vmtest

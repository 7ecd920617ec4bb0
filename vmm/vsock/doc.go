// Package vsock is a userspace virtio-vsock device (virtio 1.2 §5.10,
// device ID 19) with Firecracker's hybrid Unix-socket muxer on the host
// side, so a guest's AF_VSOCK stream sockets work without /dev/vhost-vsock.
//
// Host side, as in Firecracker's docs/vsock.md:
//
//   - A host process connects to the Unix socket Config.UDSPath and sends
//     "CONNECT <port>\n". The device sends a REQUEST to the guest's port;
//     when the guest answers with RESPONSE, the host process gets
//     "OK <host port>\n" and bytes then flow both ways. A malformed CONNECT
//     line, a timeout, or a refusal by the guest closes the connection.
//   - A guest connection to CID 2 (the host), port P, is connected to the
//     Unix socket UDSPath + "_" + P; if nothing listens there the guest gets
//     RST.
//
// Only stream sockets (type 1) exist. The event queue is never used (there
// is no snapshot restore to announce with TRANSPORT_RESET). Flow control is virtio-vsock's credit
// scheme: the device never sends the guest more than the guest's advertised
// buf_alloc minus what it has not yet forwarded, and it advertises a 64 KiB
// buffer per connection itself; a guest that overruns it gets RST.
//
// Everything read from the tx queue is hostile. Packets that are short,
// claim a payload longer than the chain or than 64 KiB, carry a source CID
// other than the guest's, or have an unknown type or op are dropped or
// answered with RST; they never panic the device.
//
// # Concurrency
//
// One mutex (Device.mu) guards all device and connection state and the rx
// and tx queues. Queue work happens in two places: in Notify (the vCPU
// thread, under the transport's lock; tx packets are parsed and dispatched,
// rx buffers are filled), and in the connection goroutines when host data or
// a host event arrives (rx buffers are filled). Neither blocks on I/O while
// holding the mutex.
//
// Lock order: the transport's register lock (virtio.MMIO calls Notify,
// Activate and Reset with it held), then Device.mu, then the transport's
// signal lock (the function given to SetSignal, normally MMIO.SignalUsed,
// is called with Device.mu held).
//
// Goroutines, all started by the Device and all waited for by Close:
//
//   - the accept loop, one per Device; it exits when Close closes the
//     listener.
//   - per connection, one reader: it does the handshake (reads the CONNECT
//     line, or dials UDSPath_P for a guest connection), then copies host
//     bytes towards the guest, within the guest's credit. It exits on a read
//     error, which teardown causes by closing the socket.
//   - per connection, one writer: it copies guest bytes, buffered by the
//     tx path, to the host socket. It exits when the connection is torn down
//     (its done channel is closed) or a write fails.
//
// A host connection whose CONNECT line does not arrive within 2 s, or whose
// REQUEST the guest does not answer within 2 s, is closed (the latter with
// RST to the guest).
//
// A connection is torn down (socket closed, done channel closed, removed
// from the maps) under the mutex by whoever notices the end first: a guest
// RST or SHUTDOWN, a host EOF followed by the guest's RST, an I/O error, a
// driver reset, or Close.
package vsock

// Package devices holds the VMM's device models: the legacy port-I/O devices
// a Linux guest needs to boot and stop (a 16550A UART and a minimal i8042
// keyboard controller used only for reset) and the virtio devices that sit on
// the virtio-mmio transport (entropy and block).
//
// Everything a guest can write (port stores, descriptor chains, request
// headers) is treated as hostile: a malformed request gets an error status
// or DEVICE_NEEDS_RESET, never a panic, and never file I/O outside the
// backing file's advertised capacity.
//
// Concurrency: Serial and I8042 are safe for concurrent use by vCPU threads
// and the VMM. The virtio devices (RNG, Block) are driven by their
// virtio.MMIO, which calls every Device method with its register lock held,
// so they need no lock of their own; they do their work synchronously inside
// Notify, on the vCPU thread that kicked the queue. That keeps them simple at
// the cost of blocking that vCPU for the duration of the I/O.
package devices

import (
	"errors"

	"github.com/greatjail/cvm/vmm/virtio"
)

// ErrInvalid is wrapped by constructor errors about bad arguments (an
// oversized block device ID, a file too small to hold one sector).
var ErrInvalid = errors.New("invalid argument")

// Signaler is how a virtio device interrupts its driver. *virtio.MMIO
// implements it; the VMM passes the transport to the device's Attach after
// virtio.NewMMIO, before the guest runs.
type Signaler interface {
	SignalUsed()
	SetNeedsReset()
}

var _ Signaler = (*virtio.MMIO)(nil)

// nopSignaler is used until Attach is called.
type nopSignaler struct{}

func (nopSignaler) SignalUsed()    {}
func (nopSignaler) SetNeedsReset() {}

// serve pops every available chain of q, hands it to handle, and pushes it
// back with the byte count handle returns. handle reports false when the
// chain is too broken to answer (no status byte, guest memory failing); the
// chain is still returned, and the device asks for a reset. A malformed
// chain or ring stops the loop and asks for a reset too. Finally the driver
// is interrupted if it wants to be.
func serve(q *virtio.Queue, m virtio.Memory, s Signaler, handle func(*virtio.Chain) (uint32, bool)) {
	served := false
	for {
		c, err := q.Pop(m)
		if err != nil {
			s.SetNeedsReset()
			break
		}
		if c == nil {
			break
		}
		n, ok := handle(c)
		if !ok {
			s.SetNeedsReset()
		}
		if err := q.Push(m, c.Head, n); err != nil {
			s.SetNeedsReset()
			break
		}
		served = true
	}
	if served {
		signalIfNeeded(s, m, q)
	}
}

// signalIfNeeded raises the used-buffer interrupt when the driver wants one,
// and asks for a reset when the rings cannot be read.
func signalIfNeeded(s Signaler, m virtio.Memory, q *virtio.Queue) {
	need, err := q.NeedsNotify(m)
	if err != nil {
		s.SetNeedsReset()
		return
	}
	if need {
		s.SignalUsed()
	}
}

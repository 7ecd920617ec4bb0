package devices

import (
	"io"
	"sync"
)

// COM1 is the conventional base port and interrupt line of the first UART.
const (
	COM1Base = 0x3f8
	COM1IRQ  = 4
)

// UART register offsets from the base port.
const (
	uartRBR = 0 // receive buffer (read, DLAB=0); THR on write; DLL with DLAB=1
	uartIER = 1 // interrupt enable (DLAB=0); DLM with DLAB=1
	uartIIR = 2 // interrupt identification (read); FCR on write
	uartLCR = 3
	uartMCR = 4
	uartLSR = 5
	uartMSR = 6
	uartSCR = 7
)

// Register bits.
const (
	ierRDI  = 0x01 // received data available
	ierTHRI = 0x02 // transmitter holding register empty
	ierMask = 0x0f // the bits a 16550A implements

	iirNoInt = 0x01
	iirTHRI  = 0x02
	iirRDI   = 0x04
	iirFIFO  = 0xc0 // FIFOs enabled: what makes Linux say "16550A"

	fcrEnable  = 0x01
	fcrClearRX = 0x02

	lcrDLAB = 0x80

	mcrDTR  = 0x01
	mcrRTS  = 0x02
	mcrOUT1 = 0x04
	mcrOUT2 = 0x08
	mcrLoop = 0x10
	mcrMask = 0x1f

	lsrDR   = 0x01
	lsrTHRE = 0x20
	lsrTEMT = 0x40

	msrCTS = 0x10
	msrDSR = 0x20
	msrRI  = 0x40
	msrDCD = 0x80
)

// SerialInputMax is how many received bytes Serial buffers for the guest.
const SerialInputMax = 4096

// Serial is a 16550A UART on port I/O. Transmission is instantaneous: a byte
// written to THR goes straight to the output writer and the transmitter is
// always empty (LSR THRE and TEMT set). Input the VMM passes to Receive is
// buffered up to SerialInputMax bytes and read by the guest through RBR.
//
// It is safe for concurrent use by vCPU threads (Read, Write) and an input
// goroutine (Receive).
type Serial struct {
	// mu guards every field below and serializes calls to out and irq.
	mu  sync.Mutex
	out io.Writer
	irq func(level bool)

	ier, lcr, mcr, scr uint8
	dll, dlm           uint8
	fifo               bool // FCR enable bit
	thrPending         bool // THR-empty interrupt pending until IIR read or THR write
	rx                 []byte
	level              bool // last level passed to irq
}

// NewSerial returns a UART in its power-on state. Bytes the guest transmits
// are written to out one at a time; write errors are dropped, since the
// guest has no way to learn of them. irq sets the interrupt line (IRQ 4 for
// COM1): it is called when the level changes, with the UART's lock held, so
// it must not call back into the Serial. irq may be nil.
func NewSerial(out io.Writer, irq func(level bool)) *Serial {
	if out == nil {
		out = io.Discard
	}
	return &Serial{out: out, irq: irq, dll: 12} // divisor 12: 9600 baud
}

// Receive queues input for the guest and raises the interrupt if the guest
// enabled it. It returns how many bytes of p fit in the buffer; the caller
// may retry the rest later.
func (s *Serial) Receive(p []byte) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := min(len(p), SerialInputMax-len(s.rx))
	s.rx = append(s.rx, p[:n]...)
	s.update()
	return n
}

// Read handles a port load of len(p) bytes at off = port - base. Only the
// first byte carries a register; wider loads read zeros above it.
func (s *Serial) Read(off uint64, p []byte) {
	clear(p)
	if len(p) == 0 || off > uartSCR {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p[0] = s.readReg(off)
	s.update()
}

// Write handles a port store at off = port - base. Only p[0] is used.
func (s *Serial) Write(off uint64, p []byte) {
	if len(p) == 0 || off > uartSCR {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writeReg(off, p[0])
	s.update()
}

// Preconditions: s.mu held.
func (s *Serial) readReg(off uint64) uint8 {
	dlab := s.lcr&lcrDLAB != 0
	switch off {
	case uartRBR:
		if dlab {
			return s.dll
		}
		if len(s.rx) == 0 {
			return 0
		}
		b := s.rx[0]
		s.rx = s.rx[1:]
		if len(s.rx) == 0 {
			s.rx = nil // let the backing array go
		}
		return b
	case uartIER:
		if dlab {
			return s.dlm
		}
		return s.ier
	case uartIIR:
		iir := s.iir()
		if iir&^iirFIFO == iirTHRI {
			s.thrPending = false // reading IIR acknowledges THR empty
		}
		return iir
	case uartLCR:
		return s.lcr
	case uartMCR:
		return s.mcr
	case uartLSR:
		lsr := uint8(lsrTHRE | lsrTEMT)
		if len(s.rx) > 0 {
			lsr |= lsrDR
		}
		return lsr
	case uartMSR:
		return s.msr()
	default: // uartSCR
		return s.scr
	}
}

// Preconditions: s.mu held.
func (s *Serial) writeReg(off uint64, v uint8) {
	dlab := s.lcr&lcrDLAB != 0
	switch off {
	case uartRBR:
		if dlab {
			s.dll = v
			return
		}
		if s.mcr&mcrLoop != 0 {
			if len(s.rx) < SerialInputMax {
				s.rx = append(s.rx, v)
			}
		} else {
			_, _ = s.out.Write([]byte{v})
		}
		s.thrPending = true // transmitted at once: THR is empty again
	case uartIER:
		if dlab {
			s.dlm = v
			return
		}
		old := s.ier
		s.ier = v & ierMask
		if changed := old ^ s.ier; changed&ierTHRI != 0 {
			// Enabling the THR interrupt while THR is empty (always)
			// raises it at once, as on real hardware.
			s.thrPending = s.ier&ierTHRI != 0
		}
	case uartIIR: // FCR
		s.fifo = v&fcrEnable != 0
		if v&fcrClearRX != 0 {
			s.rx = nil
		}
	case uartLCR:
		s.lcr = v
	case uartMCR:
		s.mcr = v & mcrMask
	case uartLSR, uartMSR:
		// Read-only on a 16550A.
	default: // uartSCR
		s.scr = v
	}
}

// msr reports the modem lines: in loopback mode the MCR outputs wired back
// to the inputs (Linux's probe checks this), otherwise a connected,
// ready modem. There are never delta bits. Preconditions: s.mu held.
func (s *Serial) msr() uint8 {
	if s.mcr&mcrLoop == 0 {
		return msrDCD | msrDSR | msrCTS
	}
	var m uint8
	if s.mcr&mcrRTS != 0 {
		m |= msrCTS
	}
	if s.mcr&mcrDTR != 0 {
		m |= msrDSR
	}
	if s.mcr&mcrOUT1 != 0 {
		m |= msrRI
	}
	if s.mcr&mcrOUT2 != 0 {
		m |= msrDCD
	}
	return m
}

// iir returns the highest-priority pending interrupt. Preconditions: s.mu
// held.
func (s *Serial) iir() uint8 {
	id := uint8(iirNoInt)
	switch {
	case s.ier&ierRDI != 0 && len(s.rx) > 0:
		id = iirRDI
	case s.ier&ierTHRI != 0 && s.thrPending:
		id = iirTHRI
	}
	if s.fifo {
		id |= iirFIFO
	}
	return id
}

// update drives the interrupt line from the pending interrupts. Linux's 8250
// driver gates the line with MCR OUT2 on PCs, but a virtual line that obeys
// IER alone is what Firecracker and QEMU give it. Preconditions: s.mu held.
func (s *Serial) update() {
	level := s.iir()&iirNoInt == 0
	if level != s.level {
		s.level = level
		if s.irq != nil {
			s.irq(level)
		}
	}
}

package acpi

import (
	"errors"
	"fmt"
)

// This file holds a small AML (ACPI Machine Language) encoder: just the
// opcodes a DSDT describing virtio-mmio devices needs. References are to the
// ACPI 6.5 specification, chapter 20 ("ACPI Machine Language Specification")
// and section 6.4 (resource descriptors).

// AML opcodes and prefixes.
const (
	amlZeroOp        = 0x00
	amlOneOp         = 0x01
	amlNameOp        = 0x08
	amlBytePrefix    = 0x0a
	amlWordPrefix    = 0x0b
	amlDWordPrefix   = 0x0c
	amlStringPrefix  = 0x0d
	amlQWordPrefix   = 0x0e
	amlScopeOp       = 0x10
	amlBufferOp      = 0x11
	amlPackageOp     = 0x12
	amlExtOpPrefix   = 0x5b
	amlDeviceOp      = 0x82 // after amlExtOpPrefix
	amlRootChar      = '\\'
	amlMaxPkgLength  = 1<<28 - 1
	amlPkgLengthMax1 = 1<<6 - 1
	amlPkgLengthMax2 = 1<<12 - 1
	amlPkgLengthMax3 = 1<<20 - 1
)

// Resource descriptor tags (ACPI 6.5 section 6.4).
const (
	resMemory32Fixed = 0x86 // large item, type 0x06
	resExtInterrupt  = 0x89 // large item, type 0x09
	resIO            = 0x47 // small item, type 0x08, length 7
	resEndTag        = 0x79 // small item, type 0x0f, length 1
)

// pnp0501 is EisaId("PNP0501"), a 16550A-compatible UART: the letters
// compressed to 5 bits each ('P'-0x40 = 0x10, 'N'-0x40 = 0x0e) and the
// product number 0x0501, stored big-endian, so as a little-endian integer
// the bytes are 41 d0 05 01.
const pnp0501 = 0x0105d041

// Extended interrupt descriptor flag bits (ACPI 6.5 section 6.4.3.6).
const (
	// Bit 2 (active low), 3 (shared) and 4 (wake capable) stay clear.
	intConsumer = 1 << 0
	intEdge     = 1 << 1
)

// errAMLTooLong is returned when an object exceeds the largest PkgLength.
var errAMLTooLong = errors.New("aml: object longer than 2^28-1 bytes")

// pkgLength encodes n as an AML PkgLength (ACPI 6.5 section 20.2.4): one byte
// for n < 64, otherwise a lead byte holding the byte count in bits 7:6 and
// the low nibble of n in bits 3:0, followed by the remaining bits of n, least
// significant byte first. n is the value to encode, which for a package
// includes the PkgLength bytes themselves; see [amlPackage].
func pkgLength(n int) ([]byte, error) {
	switch {
	case n < 0 || n > amlMaxPkgLength:
		return nil, fmt.Errorf("%w: %d", errAMLTooLong, n)
	case n <= amlPkgLengthMax1:
		return []byte{byte(n)}, nil
	}
	follow := 1
	if n > amlPkgLengthMax2 {
		follow = 2
	}
	if n > amlPkgLengthMax3 {
		follow = 3
	}
	out := []byte{byte(follow<<6) | byte(n&0xf)}
	for rest := n >> 4; len(out) <= follow; rest >>= 8 {
		out = append(out, byte(rest))
	}
	return out, nil
}

// amlPackage returns op, then a PkgLength covering itself and body, then
// body: the shape of every variable-length AML term.
func amlPackage(op []byte, body []byte) ([]byte, error) {
	// The PkgLength counts its own bytes, so its size depends on itself:
	// take the smallest encoding whose capacity holds body plus the
	// encoding.
	for size := 1; size <= 4; size++ {
		n := len(body) + size
		enc, err := pkgLength(n)
		if err != nil {
			return nil, err
		}
		if len(enc) == size {
			out := make([]byte, 0, len(op)+n)
			out = append(out, op...)
			out = append(out, enc...)
			return append(out, body...), nil
		}
	}
	return nil, fmt.Errorf("%w: body of %d bytes", errAMLTooLong, len(body))
}

// amlInteger encodes v as the shortest AML integer: ZeroOp, OneOp, or a
// Byte/Word/DWord/QWord constant.
func amlInteger(v uint64) []byte {
	switch {
	case v == 0:
		return []byte{amlZeroOp}
	case v == 1:
		return []byte{amlOneOp}
	case v <= 0xff:
		return []byte{amlBytePrefix, byte(v)}
	case v <= 0xffff:
		return []byte{amlWordPrefix, byte(v), byte(v >> 8)}
	case v <= 0xffffffff:
		return []byte{amlDWordPrefix, byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)}
	}
	out := []byte{amlQWordPrefix}
	for i := range 8 {
		out = append(out, byte(v>>(8*i)))
	}
	return out
}

// amlString encodes s as a null-terminated AML string. s must be ASCII
// without NUL, which callers guarantee.
func amlString(s string) []byte {
	out := append([]byte{amlStringPrefix}, s...)
	return append(out, 0)
}

// validNameSeg reports whether s is a valid 4-character AML NameSeg: a
// leading A-Z or '_', then A-Z, 0-9 or '_'.
func validNameSeg(s string) bool {
	if len(s) != 4 {
		return false
	}
	for i := range len(s) {
		c := s[i]
		switch {
		case c >= 'A' && c <= 'Z', c == '_':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// amlName encodes Name(seg, obj). seg must be a valid NameSeg; an optional
// leading '\' makes it absolute.
func amlName(seg string, obj []byte) []byte {
	out := append([]byte{amlNameOp}, seg...)
	return append(out, obj...)
}

// amlScope encodes Scope(path){body}.
func amlScope(path string, body []byte) ([]byte, error) {
	return amlPackage([]byte{amlScopeOp}, append([]byte(path), body...))
}

// amlDevice encodes Device(seg){body}.
func amlDevice(seg string, body []byte) ([]byte, error) {
	return amlPackage([]byte{amlExtOpPrefix, amlDeviceOp}, append([]byte(seg), body...))
}

// amlBuffer encodes Buffer(){data}, with the size as an AML integer.
func amlBuffer(data []byte) ([]byte, error) {
	body := append(amlInteger(uint64(len(data))), data...)
	return amlPackage([]byte{amlBufferOp}, body)
}

// amlPackageOf encodes Package(){elems...}; each element is an already
// encoded data object. At most 255 elements.
func amlPackageOf(elems ...[]byte) ([]byte, error) {
	if len(elems) > 0xff {
		return nil, fmt.Errorf("aml: package of %d elements, at most 255", len(elems))
	}
	body := []byte{byte(len(elems))}
	for _, e := range elems {
		body = append(body, e...)
	}
	return amlPackage([]byte{amlPackageOp}, body)
}

// memory32Fixed encodes a Memory32Fixed(ReadWrite, base, size) descriptor.
func memory32Fixed(base, size uint32) []byte {
	return []byte{
		resMemory32Fixed, 9, 0, // tag, length 9
		1, // read-write
		byte(base), byte(base >> 8), byte(base >> 16), byte(base >> 24),
		byte(size), byte(size >> 8), byte(size >> 16), byte(size >> 24),
	}
}

// ioPorts encodes an IO(Decode16, port, port, 1, n) descriptor: n ports at a
// fixed address.
func ioPorts(port uint16, n byte) []byte {
	return []byte{
		resIO,
		1,                           // decodes 16 address bits
		byte(port), byte(port >> 8), // minimum base
		byte(port), byte(port >> 8), // maximum base
		1, // alignment
		n, // length
	}
}

// extInterrupt encodes an Interrupt(flags){irq} descriptor with one
// interrupt number.
func extInterrupt(flags byte, irq uint32) []byte {
	return []byte{
		resExtInterrupt, 6, 0, // tag, length 6
		flags,
		1, // one interrupt
		byte(irq), byte(irq >> 8), byte(irq >> 16), byte(irq >> 24),
	}
}

// resourceTemplate encodes ResourceTemplate(){descs...}: a Buffer holding
// the descriptors and an end tag whose checksum byte makes the descriptor
// bytes sum to zero.
func resourceTemplate(descs ...[]byte) ([]byte, error) {
	var data []byte
	for _, d := range descs {
		data = append(data, d...)
	}
	data = append(data, resEndTag)
	data = append(data, -sum8(data))
	return amlBuffer(data)
}

// sum8 returns the byte sum of b modulo 256.
func sum8(b []byte) byte {
	var s byte
	for _, c := range b {
		s += c
	}
	return s
}

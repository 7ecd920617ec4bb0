package vsock

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
)

// Sentinel errors; errors from this package wrap one of them.
var (
	// ErrBadPacket: a guest tx packet that is short, too long, from the
	// wrong CID, or of an unknown type or op.
	ErrBadPacket = errors.New("bad vsock packet")
	// ErrBadConnect: a host connection's first line is not
	// "CONNECT <port>\n".
	ErrBadConnect = errors.New("bad CONNECT line")
	// ErrPathInUse: Config.UDSPath names something that is not a socket.
	ErrPathInUse = errors.New("uds path exists and is not a socket")
	// ErrClosed: the device was closed.
	ErrClosed = errors.New("vsock device closed")
)

// Protocol constants (virtio 1.2 §5.10.6).
const (
	// HostCID is the CID the guest uses to reach the host.
	HostCID = 2
	// HeaderSize is the size of struct virtio_vsock_hdr.
	HeaderSize = 44
	// MaxPayload bounds one packet's payload, as in Firecracker.
	MaxPayload = 64 << 10

	typeStream = 1

	opRequest       = 1
	opResponse      = 2
	opRST           = 3
	opShutdown      = 4
	opRW            = 5
	opCreditUpdate  = 6
	opCreditRequest = 7

	shutdownRcv  = 1
	shutdownSend = 2

	// maxConnectLine bounds "CONNECT 4294967295\n" with room to spare.
	maxConnectLine = 32
)

// header is struct virtio_vsock_hdr, little-endian on the wire.
type header struct {
	SrcCID, DstCID   uint64
	SrcPort, DstPort uint32
	Len              uint32
	Type, Op         uint16
	Flags            uint32
	BufAlloc, FwdCnt uint32
}

func (h *header) encode(b []byte) {
	le := binary.LittleEndian
	le.PutUint64(b[0:], h.SrcCID)
	le.PutUint64(b[8:], h.DstCID)
	le.PutUint32(b[16:], h.SrcPort)
	le.PutUint32(b[20:], h.DstPort)
	le.PutUint32(b[24:], h.Len)
	le.PutUint16(b[28:], h.Type)
	le.PutUint16(b[30:], h.Op)
	le.PutUint32(b[32:], h.Flags)
	le.PutUint32(b[36:], h.BufAlloc)
	le.PutUint32(b[40:], h.FwdCnt)
}

func decodeHeader(b []byte) header {
	le := binary.LittleEndian
	return header{
		SrcCID: le.Uint64(b[0:]), DstCID: le.Uint64(b[8:]),
		SrcPort: le.Uint32(b[16:]), DstPort: le.Uint32(b[20:]),
		Len: le.Uint32(b[24:]), Type: le.Uint16(b[28:]), Op: le.Uint16(b[30:]),
		Flags: le.Uint32(b[32:]), BufAlloc: le.Uint32(b[36:]), FwdCnt: le.Uint32(b[40:]),
	}
}

// parsePacket decodes one guest tx packet: b is the chain's readable bytes.
// It checks the header's length and source CID and that the payload lies
// within b and MaxPayload. Type, op and destination are checked by the
// caller, which answers them with RST rather than dropping them; h is valid
// whenever err is nil.
func parsePacket(b []byte, guestCID uint64) (h header, payload []byte, err error) {
	if len(b) < HeaderSize {
		return header{}, nil, fmt.Errorf("vsock: packet of %d bytes, header is %d: %w", len(b), HeaderSize, ErrBadPacket)
	}
	h = decodeHeader(b)
	if h.SrcCID != guestCID {
		return header{}, nil, fmt.Errorf("vsock: packet from cid %d, guest is %d: %w", h.SrcCID, guestCID, ErrBadPacket)
	}
	if h.Len > MaxPayload || uint64(h.Len) > uint64(len(b)-HeaderSize) {
		return header{}, nil, fmt.Errorf("vsock: payload length %d, chain holds %d, limit %d: %w", h.Len, len(b)-HeaderSize, MaxPayload, ErrBadPacket)
	}
	if h.Op != opRW && h.Len != 0 {
		return header{}, nil, fmt.Errorf("vsock: op %d with %d payload bytes: %w", h.Op, h.Len, ErrBadPacket)
	}
	return h, b[HeaderSize : HeaderSize+int(h.Len)], nil
}

// parseConnect parses a host connection's first line, "CONNECT <port>\n"
// with a decimal port of at most 10 digits and nothing else.
func parseConnect(line []byte) (uint32, error) {
	const prefix = "CONNECT "
	s := string(line)
	if len(s) > maxConnectLine || len(s) < len(prefix)+2 || s[:len(prefix)] != prefix || s[len(s)-1] != '\n' {
		return 0, fmt.Errorf("vsock: %q: %w", truncate(s), ErrBadConnect)
	}
	digits := s[len(prefix) : len(s)-1]
	if len(digits) > 10 {
		return 0, fmt.Errorf("vsock: port %q too long: %w", truncate(digits), ErrBadConnect)
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("vsock: port %q not decimal: %w", truncate(digits), ErrBadConnect)
		}
	}
	p, err := strconv.ParseUint(digits, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("vsock: port %q: %w", digits, errors.Join(ErrBadConnect, err))
	}
	return uint32(p), nil
}

func truncate(s string) string {
	if len(s) > maxConnectLine {
		return s[:maxConnectLine] + "..."
	}
	return s
}

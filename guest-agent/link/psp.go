package link

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// Limits of the psp exchange.
const (
	MaxPSPReport    = 4 << 10  // SNP report bytes
	MaxPSPCertTable = 64 << 10 // extended-report certificate table bytes
	MaxPSPMessage   = 4 << 10  // error message bytes
	MaxVMPL         = 3
)

// ErrPSP means a psp request or response is malformed or over a limit.
var ErrPSP = errors.New("link: malformed psp message")

// PSPRequest asks the host's simulated PSP for a report. On the wire: the 64
// bytes of ReportData, then VMPL as a uint32 little-endian.
type PSPRequest struct {
	ReportData [64]byte
	VMPL       uint32
}

// PSPResponse is the host's answer. On the wire: Status as uint32 LE; if 0,
// a uint32 LE length and the report, then a uint32 LE length and the
// certificate table; otherwise a uint32 LE length and Message (UTF-8).
type PSPResponse struct {
	Status    uint32
	Report    []byte
	CertTable []byte
	Message   string
}

// MarshalBinary encodes r.
func (r PSPRequest) MarshalBinary() ([]byte, error) {
	if r.VMPL > MaxVMPL {
		return nil, fmt.Errorf("%w: VMPL %d is over %d", ErrPSP, r.VMPL, MaxVMPL)
	}
	b := make([]byte, 0, 68)
	b = append(b, r.ReportData[:]...)
	return binary.LittleEndian.AppendUint32(b, r.VMPL), nil
}

// ReadPSPRequest reads and checks one request.
func ReadPSPRequest(rd io.Reader) (PSPRequest, error) {
	var buf [68]byte
	var r PSPRequest
	if _, err := io.ReadFull(rd, buf[:]); err != nil {
		return r, fmt.Errorf("%w: request: %w", ErrPSP, err)
	}
	copy(r.ReportData[:], buf[:64])
	r.VMPL = binary.LittleEndian.Uint32(buf[64:])
	if r.VMPL > MaxVMPL {
		return PSPRequest{}, fmt.Errorf("%w: request: VMPL %d is over %d", ErrPSP, r.VMPL, MaxVMPL)
	}
	return r, nil
}

// MarshalBinary encodes r, refusing fields over the limits.
func (r PSPResponse) MarshalBinary() ([]byte, error) {
	b := binary.LittleEndian.AppendUint32(nil, r.Status)
	if r.Status != 0 {
		if len(r.Message) > MaxPSPMessage {
			return nil, fmt.Errorf("%w: message of %d bytes, limit %d", ErrPSP, len(r.Message), MaxPSPMessage)
		}
		b = binary.LittleEndian.AppendUint32(b, uint32(len(r.Message)))
		return append(b, r.Message...), nil
	}
	if len(r.Report) > MaxPSPReport {
		return nil, fmt.Errorf("%w: report of %d bytes, limit %d", ErrPSP, len(r.Report), MaxPSPReport)
	}
	if len(r.CertTable) > MaxPSPCertTable {
		return nil, fmt.Errorf("%w: certificate table of %d bytes, limit %d", ErrPSP, len(r.CertTable), MaxPSPCertTable)
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(r.Report)))
	b = append(b, r.Report...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(r.CertTable)))
	return append(b, r.CertTable...), nil
}

// ReadPSPResponse reads and checks one response. A length over its limit
// fails before anything of that size is allocated.
func ReadPSPResponse(rd io.Reader) (*PSPResponse, error) {
	status, err := readUint32(rd, "status")
	if err != nil {
		return nil, err
	}
	r := &PSPResponse{Status: status}
	if status != 0 {
		msg, err := readBytes(rd, "message", MaxPSPMessage)
		if err != nil {
			return nil, err
		}
		if !utf8.Valid(msg) {
			return nil, fmt.Errorf("%w: message is not UTF-8", ErrPSP)
		}
		r.Message = string(msg)
		return r, nil
	}
	if r.Report, err = readBytes(rd, "report", MaxPSPReport); err != nil {
		return nil, err
	}
	if r.CertTable, err = readBytes(rd, "certificate table", MaxPSPCertTable); err != nil {
		return nil, err
	}
	return r, nil
}

func readUint32(rd io.Reader, what string) (uint32, error) {
	var b [4]byte
	if _, err := io.ReadFull(rd, b[:]); err != nil {
		return 0, fmt.Errorf("%w: %s: %w", ErrPSP, what, err)
	}
	return binary.LittleEndian.Uint32(b[:]), nil
}

func readBytes(rd io.Reader, what string, limit int) ([]byte, error) {
	n, err := readUint32(rd, what+" length")
	if err != nil {
		return nil, err
	}
	if n > uint32(limit) {
		return nil, fmt.Errorf("%w: %s of %d bytes, limit %d", ErrPSP, what, n, limit)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(rd, b); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrPSP, what, err)
	}
	return b, nil
}

// AnswerPSP serves one psp stream on the host: it reads the request, calls
// sign and writes its response. A sign error becomes a response with
// status 1 and the error's text as the message (cut to MaxPSPMessage).
func AnswerPSP(rw io.ReadWriter, sign func(PSPRequest) (report, certTable []byte, err error)) error {
	req, err := ReadPSPRequest(rw)
	if err != nil {
		return err
	}
	var resp PSPResponse
	report, certs, err := sign(req)
	if err != nil {
		msg := err.Error()
		if len(msg) > MaxPSPMessage {
			msg = msg[:MaxPSPMessage]
		}
		msg = strings.ToValidUTF8(msg, "")
		resp = PSPResponse{Status: 1, Message: msg}
	} else {
		resp = PSPResponse{Report: report, CertTable: certs}
	}
	b, err := resp.MarshalBinary()
	if err != nil {
		b, _ = PSPResponse{Status: 1, Message: err.Error()}.MarshalBinary()
	}
	_, err = rw.Write(b)
	return err
}

// RequestPSP sends req on a psp stream and reads the response. A response
// with a non-zero status becomes an error carrying the host's message.
func RequestPSP(rw io.ReadWriter, req PSPRequest) (report, certTable []byte, err error) {
	b, err := req.MarshalBinary()
	if err != nil {
		return nil, nil, err
	}
	if _, err := rw.Write(b); err != nil {
		return nil, nil, fmt.Errorf("link: psp request: %w", err)
	}
	resp, err := ReadPSPResponse(rw)
	if err != nil {
		return nil, nil, err
	}
	if resp.Status != 0 {
		return nil, nil, fmt.Errorf("link: the host's psp refused (status %d): %s", resp.Status, resp.Message)
	}
	return resp.Report, resp.CertTable, nil
}

package link

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestPSPRoundTrip(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	var rd [64]byte
	rd[0], rd[63] = 1, 2
	var got PSPRequest
	go AnswerPSP(b, func(r PSPRequest) ([]byte, []byte, error) {
		got = r
		return []byte("report"), []byte("certs"), nil
	})
	report, certs, err := RequestPSP(a, PSPRequest{ReportData: rd, VMPL: 1})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"report", "certs"}, []string{string(report), string(certs)}); diff != "" {
		t.Errorf("response (-want +got):\n%s", diff)
	}
	if got != (PSPRequest{ReportData: rd, VMPL: 1}) {
		t.Errorf("host saw request %+v", got)
	}
}

func TestPSPRefusal(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go AnswerPSP(b, func(PSPRequest) ([]byte, []byte, error) {
		return nil, nil, errors.New("no authority " + strings.Repeat("x", 2*MaxPSPMessage))
	})
	_, _, err := RequestPSP(a, PSPRequest{})
	if err == nil || !strings.Contains(err.Error(), "no authority") {
		t.Errorf("RequestPSP = %v, want the host's message", err)
	}
}

func le(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

func TestReadPSPResponseLimits(t *testing.T) {
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	tests := []struct {
		name string
		in   []byte
		want *PSPResponse
	}{
		{"ok", cat(le(0), le(2), []byte("rr"), le(1), []byte("c")), &PSPResponse{Report: []byte("rr"), CertTable: []byte("c")}},
		{"ok-max", cat(le(0), le(MaxPSPReport), make([]byte, MaxPSPReport), le(0)), &PSPResponse{Report: make([]byte, MaxPSPReport), CertTable: []byte{}}},
		{"error", cat(le(7), le(3), []byte("bad")), &PSPResponse{Status: 7, Message: "bad"}},
		{"report-too-big", cat(le(0), le(MaxPSPReport+1)), nil},
		{"certs-too-big", cat(le(0), le(0), le(MaxPSPCertTable+1)), nil},
		{"message-too-big", cat(le(1), le(MaxPSPMessage+1)), nil},
		{"huge-length", cat(le(0), le(0xffffffff)), nil},
		{"message-not-utf8", cat(le(1), le(1), []byte{0xff}), nil},
		{"short-report", cat(le(0), le(4), []byte("ab")), nil},
		{"missing-certs", cat(le(0), le(0)), nil},
		{"empty", nil, nil},
	}
	for _, tt := range tests {
		got, err := ReadPSPResponse(bytes.NewReader(tt.in))
		if tt.want == nil {
			if !errors.Is(err, ErrPSP) {
				t.Errorf("%s: ReadPSPResponse = %+v, %v; want ErrPSP", tt.name, got, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tt.name, diff)
		}
	}
}

func TestMarshalPSPResponseLimits(t *testing.T) {
	for _, r := range []PSPResponse{
		{Report: make([]byte, MaxPSPReport+1)},
		{CertTable: make([]byte, MaxPSPCertTable+1)},
		{Status: 1, Message: strings.Repeat("x", MaxPSPMessage+1)},
	} {
		if _, err := r.MarshalBinary(); !errors.Is(err, ErrPSP) {
			t.Errorf("MarshalBinary(%d/%d/%d bytes) = %v, want ErrPSP", len(r.Report), len(r.CertTable), len(r.Message), err)
		}
	}
}

func TestReadPSPRequest(t *testing.T) {
	good := append(make([]byte, 64), le(3)...)
	if r, err := ReadPSPRequest(bytes.NewReader(good)); err != nil || r.VMPL != 3 {
		t.Errorf("ReadPSPRequest(VMPL 3) = %+v, %v", r, err)
	}
	for name, in := range map[string][]byte{
		"vmpl-4": append(make([]byte, 64), le(4)...),
		"short":  make([]byte, 67),
	} {
		if _, err := ReadPSPRequest(bytes.NewReader(in)); !errors.Is(err, ErrPSP) {
			t.Errorf("%s: %v, want ErrPSP", name, err)
		}
	}
	if _, err := (PSPRequest{VMPL: 4}).MarshalBinary(); !errors.Is(err, ErrPSP) {
		t.Errorf("MarshalBinary(VMPL 4) = %v, want ErrPSP", err)
	}
}

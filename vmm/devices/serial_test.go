package devices

import (
	"bytes"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func in(s *Serial, off uint64) byte {
	var p [1]byte
	s.Read(off, p[:])
	return p[0]
}

func out(s *Serial, off uint64, v byte) { s.Write(off, []byte{v}) }

func TestSerialTransmit(t *testing.T) {
	var w bytes.Buffer
	s := NewSerial(&w, nil)
	for _, c := range []byte("hello") {
		if lsr := in(s, uartLSR); lsr&(lsrTHRE|lsrTEMT) != lsrTHRE|lsrTEMT {
			t.Fatalf("LSR = %#x before THR write, want THRE|TEMT set", lsr)
		}
		out(s, uartRBR, c)
	}
	if got, want := w.String(), "hello"; got != want {
		t.Errorf("output = %q, want %q", got, want)
	}
	if lsr := in(s, uartLSR); lsr != lsrTHRE|lsrTEMT {
		t.Errorf("LSR = %#x, want %#x", lsr, lsrTHRE|lsrTEMT)
	}
}

func TestSerialDLAB(t *testing.T) {
	var w bytes.Buffer
	s := NewSerial(&w, nil)
	out(s, uartIER, 0x05)
	out(s, uartLCR, lcrDLAB|0x03)
	out(s, uartRBR, 0x01) // DLL: 115200 baud
	out(s, uartIER, 0x00) // DLM
	got := []byte{in(s, uartRBR), in(s, uartIER)}
	out(s, uartLCR, 0x03)
	got = append(got, in(s, uartIER), in(s, uartLCR))
	if diff := cmp.Diff([]byte{0x01, 0x00, 0x05, 0x03}, got); diff != "" {
		t.Errorf("DLL, DLM, IER, LCR (-want +got):\n%s", diff)
	}
	if w.Len() != 0 {
		t.Errorf("divisor writes reached the output: %q", w.String())
	}
}

func TestSerialReceive(t *testing.T) {
	var levels []bool
	s := NewSerial(nil, func(l bool) { levels = append(levels, l) })
	if n := s.Receive([]byte("ab")); n != 2 {
		t.Fatalf("Receive = %d, want 2", n)
	}
	if len(levels) != 0 {
		t.Fatalf("interrupt raised with IER clear: %v", levels)
	}
	out(s, uartIER, ierRDI)
	if iir := in(s, uartIIR); iir != iirRDI {
		t.Errorf("IIR = %#x, want %#x", iir, iirRDI)
	}
	var got []byte
	for in(s, uartLSR)&lsrDR != 0 {
		got = append(got, in(s, uartRBR))
	}
	if string(got) != "ab" {
		t.Errorf("received %q, want %q", got, "ab")
	}
	if iir := in(s, uartIIR); iir != iirNoInt {
		t.Errorf("IIR after draining = %#x, want %#x", iir, iirNoInt)
	}
	if diff := cmp.Diff([]bool{true, false}, levels); diff != "" {
		t.Errorf("interrupt levels (-want +got):\n%s", diff)
	}
	if n := s.Receive(make([]byte, SerialInputMax+10)); n != SerialInputMax {
		t.Errorf("Receive of an oversized input = %d, want %d", n, SerialInputMax)
	}
}

func TestSerialRegisters(t *testing.T) {
	tests := []struct {
		name   string
		writes [][2]byte // offset, value
		read   uint64
		want   byte
	}{
		{"scratch round trip", [][2]byte{{uartSCR, 0xa5}}, uartSCR, 0xa5},
		{"IER keeps 4 bits", [][2]byte{{uartIER, 0xff}}, uartIER, 0x0f},
		{"IIR idle", nil, uartIIR, iirNoInt},
		{"IIR with FIFOs is 16550A", [][2]byte{{uartIIR, fcrEnable}}, uartIIR, iirFIFO | iirNoInt},
		{"THR interrupt on enable", [][2]byte{{uartIER, ierTHRI}}, uartIIR, iirTHRI},
		{"loopback MSR", [][2]byte{{uartMCR, mcrLoop | 0x0a}}, uartMSR, 0x90},
		{"MSR idle", nil, uartMSR, msrDCD | msrDSR | msrCTS},
		{"loopback data", [][2]byte{{uartMCR, mcrLoop}, {uartRBR, 'x'}}, uartRBR, 'x'},
		{"FCR clears RX", [][2]byte{{uartMCR, mcrLoop}, {uartRBR, 'x'}, {uartIIR, fcrClearRX}}, uartLSR, lsrTHRE | lsrTEMT},
		{"LSR read-only", [][2]byte{{uartLSR, 0}}, uartLSR, lsrTHRE | lsrTEMT},
		{"beyond the registers", [][2]byte{{8, 1}}, 8, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewSerial(nil, nil)
			for _, w := range tt.writes {
				out(s, uint64(w[0]), w[1])
			}
			if got := in(s, tt.read); got != tt.want {
				t.Errorf("register %d = %#x, want %#x", tt.read, got, tt.want)
			}
		})
	}
}

// TestSerialTHRInterrupt follows Linux's TX interrupt handling: the THR
// interrupt is raised on enable, cleared by reading IIR, raised again by
// each transmitted byte.
func TestSerialTHRInterrupt(t *testing.T) {
	var levels []bool
	s := NewSerial(nil, func(l bool) { levels = append(levels, l) })
	out(s, uartIER, ierTHRI)
	got := []byte{in(s, uartIIR), in(s, uartIIR)}
	out(s, uartRBR, 'a')
	got = append(got, in(s, uartIIR), in(s, uartIIR))
	if diff := cmp.Diff([]byte{iirTHRI, iirNoInt, iirTHRI, iirNoInt}, got); diff != "" {
		t.Errorf("IIR reads (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]bool{true, false, true, false}, levels); diff != "" {
		t.Errorf("interrupt levels (-want +got):\n%s", diff)
	}
}

func TestI8042Reset(t *testing.T) {
	calls := 0
	k := NewI8042(func() { calls++ })
	k.Write(0, []byte{i8042CmdReset}) // data port: no effect
	k.Write(i8042Command, []byte{0xd1})
	if calls != 0 {
		t.Fatalf("reset called %d times before the reset command", calls)
	}
	var st [1]byte
	st[0] = 0xff
	k.Read(i8042Command, st[:])
	if st[0] != 0 {
		t.Errorf("status = %#x, want 0", st[0])
	}
	k.Write(i8042Command, []byte{i8042CmdReset})
	k.Write(i8042Command, []byte{i8042CmdReset})
	k.Write(i8042Command, nil)
	if calls != 1 {
		t.Errorf("reset called %d times, want 1", calls)
	}
}

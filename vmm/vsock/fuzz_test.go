package vsock

import (
	"fmt"
	"testing"
)

// FuzzPacket feeds arbitrary bytes to the device as one guest tx chain,
// split over up to three descriptors. The device must not panic, must
// return the chain, and must stay usable.
func FuzzPacket(f *testing.F) {
	enc := func(h header, payload string) []byte {
		h.Len = uint32(len(payload))
		b := make([]byte, HeaderSize+len(payload))
		h.encode(b)
		copy(b[HeaderSize:], payload)
		return b
	}
	f.Add(enc(guestHdr(opRequest, 1, 2), ""), uint8(0), uint8(0))
	f.Add(enc(guestHdr(opRW, 1, 2), "data"), uint8(10), uint8(44))
	f.Add(enc(guestHdr(opRST, 1, 2), ""), uint8(1), uint8(2))
	f.Add(enc(guestHdr(opCreditRequest, 1, 2), ""), uint8(0), uint8(0))
	f.Add(enc(header{SrcCID: 3, DstCID: 2, Type: 2, Op: 9}, ""), uint8(0), uint8(0))
	f.Add([]byte{1, 2, 3}, uint8(1), uint8(2))

	d, _ := newTestDevice(f)
	drv := newDriver(f, d)
	f.Fuzz(func(t *testing.T, raw []byte, s1, s2 uint8) {
		drv.t = t // report through this input's T, not the F
		if len(raw) > HeaderSize+MaxPayload+16 {
			raw = raw[:HeaderSize+MaxPayload+16]
		}
		a, b := int(s1), int(s2)
		if a > b {
			a, b = b, a
		}
		var splits []int
		for _, s := range []int{a, b} {
			if s > 0 && s < len(raw) && (len(splits) == 0 || s > splits[len(splits)-1]) {
				splits = append(splits, s)
			}
		}
		d.mu.Lock()
		before := d.txq.UsedIdx()
		d.mu.Unlock()
		drv.sendRaw(raw, splits...)
		d.mu.Lock()
		after, broken := uint16(0), d.txq == nil
		if !broken {
			after = d.txq.UsedIdx()
		}
		d.mu.Unlock()
		if broken || after != before+1 {
			t.Fatalf("tx chain not returned (queue broken %v, used %d -> %d)", broken, before, after)
		}
		for { // drain replies so rx buffers stay available
			if _, ok := drv.tryRecv(); !ok {
				break
			}
		}
	})
}

// FuzzConnectLine checks that parseConnect never panics and that what it
// accepts is exactly a canonical-enough "CONNECT <port>\n".
func FuzzConnectLine(f *testing.F) {
	for _, s := range []string{"CONNECT 1234\n", "CONNECT 4294967295\n", "CONNECT 4294967296\n", "CONNECT -1\n", "CONNECT \n", "OK 5\n", "CONNECT 0001\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		port, err := parseConnect(line)
		if err != nil {
			return
		}
		back, err := parseConnect(fmt.Appendf(nil, "CONNECT %d\n", port))
		if err != nil || back != port {
			t.Fatalf("accepted %q as %d, but its canonical form parses to %d, %v", line, port, back, err)
		}
		if len(line) > maxConnectLine {
			t.Fatalf("accepted %d-byte line", len(line))
		}
	})
}

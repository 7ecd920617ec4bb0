package devices

import (
	"bytes"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRNG(t *testing.T) {
	src := make([]byte, 200)
	for i := range src {
		src[i] = byte(i * 7)
	}
	dev := NewRNG(bytes.NewReader(src))
	d := newTestDriver(t, dev)
	if got := d.r(regDeviceID); got != TypeRNG {
		t.Fatalf("DeviceID = %d, want %d", got, TypeRNG)
	}
	// Two chains: 16 bytes in one buffer, then 8+24 in two (the readable
	// buffer in front is ignored).
	h0 := d.addChain(buf{drvData, 16, true})
	h1 := d.addChain(buf{drvData + 0x100, 4, false}, buf{drvData + 0x200, 8, true}, buf{drvData + 0x300, 24, true})
	got := d.kick()
	if diff := cmp.Diff([]usedElem{{uint32(h0), 16}, {uint32(h1), 32}}, got); diff != "" {
		t.Fatalf("used ring (-want +got):\n%s", diff)
	}
	var filled []byte
	filled = append(filled, d.mem[drvData:drvData+16]...)
	filled = append(filled, d.mem[drvData+0x200:drvData+0x208]...)
	filled = append(filled, d.mem[drvData+0x300:drvData+0x318]...)
	if diff := cmp.Diff(src[:48], filled); diff != "" {
		t.Errorf("entropy in guest buffers (-want +got):\n%s", diff)
	}
	if d.irqs == 0 {
		t.Error("no interrupt after used buffers")
	}

	// The source runs dry: the request gets what there was.
	h2 := d.addChain(buf{drvData + 0x400, 1024, true})
	if diff := cmp.Diff([]usedElem{{uint32(h2), 200 - 48}}, d.kick()); diff != "" {
		t.Errorf("used ring with a short source (-want +got):\n%s", diff)
	}
	if d.needsReset() {
		t.Error("NEEDS_RESET after well-formed requests")
	}
}

func TestRNGBadChain(t *testing.T) {
	d := newTestDriver(t, NewRNG(bytes.NewReader(make([]byte, 64))))
	d.addChain(buf{drvMem + 0x1000, 16, true}) // outside guest memory
	if got := d.kick(); len(got) != 0 {
		t.Errorf("used ring = %v, want nothing", got)
	}
	if !d.needsReset() {
		t.Error("no NEEDS_RESET after a chain outside guest memory")
	}
}

// TestRNGReset checks that after a driver reset the device no longer
// touches the old queue.
func TestRNGReset(t *testing.T) {
	d := newTestDriver(t, NewRNG(bytes.NewReader(make([]byte, 64))))
	d.addChain(buf{drvData, 16, true})
	d.w(regStatus, 0)
	if got := d.kick(); len(got) != 0 {
		t.Errorf("used ring after reset = %v, want nothing", got)
	}
}

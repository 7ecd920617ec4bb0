package vmm

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/greatjail/cvm/vmm/kvm"
)

// handleExit routes port and MMIO exits to the buses (rep I/O element by
// element) and maps shutdown and system events to stop reasons. The cases
// here never touch the vCPU, so a nil one stands in.
func TestHandleExit(t *testing.T) {
	var log []string
	var pio, mmio Bus
	if err := pio.Register("com", 0x3f8, 8, recorder{"com", &log}); err != nil {
		t.Fatal(err)
	}
	if err := mmio.Register("v0", 0xc0000000, 0x1000, recorder{"v0", &log}); err != nil {
		t.Fatal(err)
	}
	in := make([]byte, 4)
	exits := []kvm.Exit{
		{Reason: kvm.ExitIO, IO: kvm.IOExit{Direction: kvm.IOOut, Size: 1, Port: 0x3f8, Count: 2, Data: []byte{'h', 'i'}}},
		{Reason: kvm.ExitIO, IO: kvm.IOExit{Direction: kvm.IOIn, Size: 2, Port: 0x3fa, Count: 2, Data: in}},
		{Reason: kvm.ExitIO, IO: kvm.IOExit{Direction: kvm.IOIn, Size: 1, Port: 0x80, Count: 1, Data: make([]byte, 1)}},
		{Reason: kvm.ExitMMIO, MMIO: kvm.MMIOExit{Addr: 0xc0000070, IsWrite: true, Data: make([]byte, 4)}},
		{Reason: kvm.ExitMMIO, MMIO: kvm.MMIOExit{Addr: 0xc0001000, Data: make([]byte, 4)}},
		{Reason: kvm.ExitIntr},
	}
	st := &stopper{cancel: func() {}}
	for _, e := range exits {
		if stop, err := handleExit(nil, e, &pio, &mmio, st); stop || err != nil {
			t.Fatalf("exit %v: stop=%v err=%v", e.Reason, stop, err)
		}
	}
	if d := cmp.Diff([]string{"com write", "com write", "com read", "com read", "v0 write"}, log); d != "" {
		t.Errorf("device log (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]byte{2, 3, 2, 3}, in); d != "" {
		t.Errorf("rep in data (-want +got):\n%s", d)
	}
	if st.reason != "" {
		t.Errorf("stopped early: %q", st.reason)
	}

	for _, tc := range []struct {
		e    kvm.Exit
		want string
	}{
		{kvm.Exit{Reason: kvm.ExitShutdown}, ReasonReboot},
		{kvm.Exit{Reason: kvm.ExitSystemEvent, SystemEvent: kvm.SystemEventExit{Type: 1}}, ReasonPowerOff},
		{kvm.Exit{Reason: kvm.ExitSystemEvent, SystemEvent: kvm.SystemEventExit{Type: 2}}, ReasonReboot},
	} {
		ctx, cancel := context.WithCancel(context.Background())
		st := &stopper{cancel: cancel}
		stop, err := handleExit(nil, tc.e, &pio, &mmio, st)
		if !stop || err != nil || st.reason != tc.want || ctx.Err() == nil {
			t.Errorf("%v: stop=%v err=%v reason=%q canceled=%v; want stop with %q", tc.e.Reason, stop, err, st.reason, ctx.Err() != nil, tc.want)
		}
	}
}

func TestCPUIDFor(t *testing.T) {
	base := &kvm.CPUID{Entries: []kvm.CPUIDEntry{
		{Function: 1, EBX: 0xff123456},
		{Function: 0xb, Index: 1, EDX: 0},
		{Function: 0x40000000, EBX: 0x4b4d564b},
	}}
	got := cpuidFor(base, 3)
	want := []kvm.CPUIDEntry{
		{Function: 1, EBX: 0x03123456, ECX: 1 << 31},
		{Function: 0xb, Index: 1, EDX: 3},
		{Function: 0x40000000, EBX: 0x4b4d564b},
	}
	if d := cmp.Diff(want, got.Entries); d != "" {
		t.Errorf("cpuid (-want +got):\n%s", d)
	}
	if base.Entries[0].EBX != 0xff123456 {
		t.Error("base CPUID modified")
	}
}

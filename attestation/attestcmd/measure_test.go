package attestcmd

import (
	"errors"
	"strings"
	"testing"
)

// TestMeasureTDXUsage checks the option combinations MeasureTDX refuses
// before reading any file.
func TestMeasureTDXUsage(t *testing.T) {
	tests := []struct {
		name string
		o    MeasureTDXOptions
		want string
	}{
		{"initrd without kernel", MeasureTDXOptions{Firmware: "fw", Initrd: "i"}, "need --kernel"},
		{"cmdline without kernel", MeasureTDXOptions{Firmware: "fw", Cmdline: "c"}, "need --kernel"},
		{"memory without kernel", MeasureTDXOptions{Firmware: "fw", MemorySize: 1 << 30}, "need --kernel"},
		{"stub without kernel", MeasureTDXOptions{Firmware: "fw", Stub: "cc"}, "need --kernel"},
		{"kernel without mode", MeasureTDXOptions{Firmware: "fw", Kernel: "k", Stub: "cc"}, "--ovmf-measures"},
		{"bad mode", MeasureTDXOptions{Firmware: "fw", Kernel: "k", KernelImage: "x", Stub: "cc"}, "--ovmf-measures"},
		{"kernel without stub", MeasureTDXOptions{Firmware: "fw", Kernel: "k", KernelImage: "raw"}, "--stub-measures"},
		{"bad stub", MeasureTDXOptions{Firmware: "fw", Kernel: "k", KernelImage: "raw", Stub: "tcg2"}, "--stub-measures"},
		{"patched initrd without memory", MeasureTDXOptions{Firmware: "fw", Kernel: "k", Initrd: "i", KernelImage: "patched", Stub: "cc"}, "--memory"},
		{"no firmware", MeasureTDXOptions{}, "--firmware"},
	}
	for _, tc := range tests {
		_, err := MeasureTDX(tc.o)
		if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: MeasureTDX() error = %v, want ErrUsage mentioning %q", tc.name, err, tc.want)
		}
	}
}

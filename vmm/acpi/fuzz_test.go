package acpi

import (
	"errors"
	"fmt"
	"testing"
)

// FuzzBuild builds tables from arbitrary configs: Build must never panic,
// must reject a config only with ErrInvalidConfig, and every table set it
// returns must pass checkTables.
func FuzzBuild(f *testing.F) {
	f.Add(4, uint32(0), uint32(0), uint64(testBase), uint8(3), uint64(0xc0000000), uint64(0x1000), uint64(0x1000), uint32(5), "V", uint16(0), "", "")
	f.Add(255, uint32(0xfec10000), uint32(0xfee10000), uint64(0x100000), uint8(24), uint64(0xd0000000), uint64(0x200), uint64(0x200), uint32(0), "A_", uint16(0x600), "ABCDEF", "12345678")
	f.Add(0, uint32(0), uint32(0), uint64(0), uint8(2), uint64(0xfffff000), uint64(0x2000), uint64(0), uint32(23), "v", uint16(1), "toolongid", "x")
	f.Add(1, uint32(0xfee00000), uint32(0xfee00000), ^uint64(0), uint8(1), ^uint64(0), uint64(1), uint64(1), uint32(24), "", uint16(0xffff), "\x00", "\xff")
	f.Fuzz(func(t *testing.T, vcpus int, ioapic, lapic uint32, base uint64, ndev uint8,
		devBase, devSize, stride uint64, irq uint32, prefix string, port uint16, oem, table string) {
		// The serial port reuses port, and irq-1 so it clashes with a
		// device's IRQ only when irq is 0 (wrapping).
		cfg := Config{
			VCPUs:            vcpus,
			IOAPICAddr:       ioapic,
			LAPICAddr:        lapic,
			SleepControlPort: port,
			SleepStatusPort:  port + 1,
			ResetPort:        port + 2,
			OEMID:            oem,
			OEMTableID:       table,
			Serials:          []Serial{{Name: "COM1", Port: port, IRQ: irq - 1}},
		}
		for i := range int(ndev % 32) {
			name := fmt.Sprintf("%s%03d", prefix, i)
			if len(name) > 4 {
				name = name[len(name)-4:]
			}
			cfg.Devices = append(cfg.Devices, Device{
				Name: name,
				Base: devBase + uint64(i)*stride,
				Size: devSize,
				IRQ:  irq + uint32(i),
			})
		}
		tb, err := Build(cfg, base)
		if err != nil {
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("Build() error %v does not wrap ErrInvalidConfig", err)
			}
			return
		}
		if err := checkTables(tb, vcpus); err != nil {
			t.Fatal(err)
		}
	})
}

package vmm

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/greatjail/cvm/vmm/loader"
)

func TestValidate(t *testing.T) {
	kernel := realKernel(t)
	disk := diskFile(t, 1<<20)
	dir := t.TempDir()
	good := func() Config {
		return Config{Kernel: kernel, Cmdline: "console=ttyS0", MemorySize: 256 << 20, VCPUs: 2}
	}
	tests := []struct {
		name    string
		mod     func(*Config)
		wantIs  error    // nil: only ErrInvalidConfig
		wantMsg []string // substrings of the message; none: Validate passes
	}{
		{name: "ok", mod: func(*Config) {}},
		{name: "ok with devices", mod: func(c *Config) {
			c.Disks = []Disk{{Path: disk}, {Path: disk, ReadOnly: true}}
			c.RNG = true
			c.VsockUDS = filepath.Join(dir, "v.sock")
		}},
		{name: "no kernel", mod: func(c *Config) { c.Kernel = nil }, wantMsg: []string{"no kernel image"}},
		{name: "corrupt kernel", mod: func(c *Config) { c.Kernel = []byte("MZ garbage, not a kernel at all") },
			wantIs: loader.ErrFormat, wantMsg: []string{"kernel:", "not a valid kernel image"}},
		{name: "memory too small", mod: func(c *Config) { c.MemorySize = 16 << 20; c.Initrd = make([]byte, 8<<20) },
			wantIs: loader.ErrTooSmall, wantMsg: []string{"guest memory of 16M is too small", "initrd (8388608 bytes)"}},
		{name: "memory not page multiple", mod: func(c *Config) { c.MemorySize = 256<<20 + 1 }, wantMsg: []string{"multiple of 4096"}},
		{name: "memory too large", mod: func(c *Config) { c.MemorySize = 2 << 40 }, wantMsg: []string{"memory size 2048G: at most 1024G"}},
		{name: "zero vcpus", mod: func(c *Config) { c.VCPUs = 0 }, wantMsg: []string{"0 vCPUs: must be 1..255"}},
		{name: "too many vcpus", mod: func(c *Config) { c.VCPUs = 256 }, wantMsg: []string{"256 vCPUs"}},
		{name: "missing disk", mod: func(c *Config) { c.Disks = []Disk{{Path: filepath.Join(dir, "nope.img")}} },
			wantIs: fs.ErrNotExist, wantMsg: []string{"disk " + filepath.Join(dir, "nope.img")}},
		{name: "disk is a directory", mod: func(c *Config) { c.Disks = []Disk{{Path: dir, ReadOnly: true}} },
			wantMsg: []string{"disk " + dir, "not a regular file"}},
		{name: "disk too small", mod: func(c *Config) { c.Disks = []Disk{{Path: diskFile(t, 100)}} },
			wantMsg: []string{"100 bytes, smaller than one 512-byte sector"}},
		{name: "vsock dir missing", mod: func(c *Config) { c.VsockUDS = filepath.Join(dir, "no", "v.sock") },
			wantIs: fs.ErrNotExist, wantMsg: []string{"vsock socket " + filepath.Join(dir, "no", "v.sock")}},
		{name: "too many devices", mod: func(c *Config) {
			for range 20 {
				c.Disks = append(c.Disks, Disk{Path: disk})
			}
		}, wantMsg: []string{"20 virtio devices: at most 19"}},
		{name: "ok with slots", mod: func(c *Config) {
			c.Disks = []Disk{{Path: disk}}
			c.Slots = []*DiskSlot{NewDiskSlot(), NewDiskSlot()}
		}},
		{name: "nil slot", mod: func(c *Config) { c.Slots = []*DiskSlot{NewDiskSlot(), nil} }, wantMsg: []string{"disk slot 1 is nil"}},
		{name: "slots with seccomp", mod: func(c *Config) { c.Slots = []*DiskSlot{NewDiskSlot()}; c.Seccomp = true },
			wantMsg: []string{"1 disk slots with Seccomp"}},
		{name: "too many slots", mod: func(c *Config) {
			c.Disks, c.RNG = []Disk{{Path: disk}}, true
			for range 18 {
				c.Slots = append(c.Slots, NewDiskSlot())
			}
		}, wantMsg: []string{"20 virtio devices: at most 19"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := good()
			tc.mod(&c)
			err := Validate(c)
			if len(tc.wantMsg) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate passed, want an error")
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("error %v does not wrap ErrInvalidConfig", err)
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("error %v does not wrap %v", err, tc.wantIs)
			}
			for _, m := range tc.wantMsg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not contain %q", err, m)
				}
			}
		})
	}
}

// A read-only image opened for writing fails, and the same image passes
// with ReadOnly. Root bypasses file modes, so the case is skipped there.
func TestValidateReadOnlyDisk(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("running as root: file modes do not deny root")
	}
	kernel := realKernel(t)
	p := diskFile(t, 4096)
	if err := os.Chmod(p, 0o444); err != nil {
		t.Fatal(err)
	}
	c := Config{Kernel: kernel, MemorySize: 256 << 20, VCPUs: 1, Disks: []Disk{{Path: p}}}
	if err := Validate(c); !errors.Is(err, fs.ErrPermission) {
		t.Errorf("rw open of a 0444 image: %v, want permission error", err)
	}
	c.Disks[0].ReadOnly = true
	if err := Validate(c); err != nil {
		t.Errorf("ro open: %v", err)
	}
}

func TestFormatSize(t *testing.T) {
	for n, want := range map[uint64]string{256 << 20: "256M", 1 << 30: "1G", 4096: "4K", 100: "100 bytes", 3<<20 + 1: "3145729 bytes"} {
		if got := FormatSize(n); got != want {
			t.Errorf("FormatSize(%d) = %q, want %q", n, got, want)
		}
	}
}

package containers

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestFindDisk(t *testing.T) {
	sys := t.TempDir()
	for name, d := range map[string]struct{ serial, size string }{
		"vda":   {"", "2048\n"},
		"vdb":   {"cvm-disk-1\n", "2048\n"},
		"vdc":   {"cvm-disk-2", "8"},
		"vdd":   {"cvm-disk-4", "0\n"}, // an emptied hot-plug slot whose capacity change arrived last
		"vde":   {"cvm-disk-5", "-"},   // no size file
		"vdf":   {"cvm-disk-6", "x\n"}, // an unreadable size
		"loop0": {"-", "0\n"},
	} {
		os.MkdirAll(filepath.Join(sys, name), 0o755)
		if d.serial != "-" {
			os.WriteFile(filepath.Join(sys, name, "serial"), []byte(d.serial), 0o644)
		}
		if d.size != "-" {
			os.WriteFile(filepath.Join(sys, name, "size"), []byte(d.size), 0o644)
		}
	}
	tests := []struct {
		serial, want string
		bad          bool
	}{
		{"cvm-disk-1", "vdb", false},
		{"cvm-disk-2", "vdc", false},
		{"cvm-disk-3", "", false},
		{"cvm-disk-4", "", false},
		{"cvm-disk-5", "", false},
		{"cvm-disk-6", "", false},
		{"", "", true},
		{"../../etc", "", true},
		{"abcdefghijklmnopqrstu", "", true}, // 21 bytes
	}
	for _, tt := range tests {
		got, err := FindDisk(sys, tt.serial)
		if (err != nil) != tt.bad || got != tt.want {
			t.Errorf("FindDisk(%q) = %q, %v; want %q, error %v", tt.serial, got, err, tt.want, tt.bad)
		}
		if tt.bad && !errors.Is(err, ErrInvalid) {
			t.Errorf("FindDisk(%q) = %v, want ErrInvalid", tt.serial, err)
		}
	}
}

// TestWaitDisk: a disk that appears later (as a hot-plugged one does) is
// found once its sysfs entry and device node exist and its size is above
// zero; one that never appears is NotFound.
func TestWaitDisk(t *testing.T) {
	sys, dev := t.TempDir(), t.TempDir()
	m, err := New(Options{Dir: t.TempDir(), SysBlock: sys, DevDir: dev, DiskWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(100 * time.Millisecond)
		os.MkdirAll(filepath.Join(sys, "vdb"), 0o755)
		os.WriteFile(filepath.Join(sys, "vdb", "size"), []byte("0\n"), 0o644)
		os.WriteFile(filepath.Join(sys, "vdb", "serial"), []byte("cvm-disk-1"), 0o644)
		os.WriteFile(filepath.Join(dev, "vdb"), nil, 0o600)
		time.Sleep(100 * time.Millisecond)
		os.WriteFile(filepath.Join(sys, "vdb", "size"), []byte("2048\n"), 0o644)
	}()
	got, err := m.waitDisk(context.Background(), "cvm-disk-1")
	if err != nil || got != filepath.Join(dev, "vdb") {
		t.Errorf("waitDisk = %q, %v; want %s", got, err, filepath.Join(dev, "vdb"))
	}
	m.diskWait = 100 * time.Millisecond
	if _, err := m.waitDisk(context.Background(), "cvm-disk-9"); !errors.Is(err, ErrNotFound) {
		t.Errorf("waitDisk of a missing disk = %v, want ErrNotFound", err)
	}
	// Exactly one root source.
	if err := m.Create(context.Background(), "c", []byte(`{"process":{"args":["/x"],"cwd":"/"}}`),
		Rootfs{Device: "/dev/vdb", Serial: "cvm-disk-1", FSType: "ext4"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Create with a device and a serial = %v, want ErrInvalid", err)
	}
}

func FuzzFindDisk(f *testing.F) {
	sys := f.TempDir()
	os.MkdirAll(filepath.Join(sys, "vdb"), 0o755)
	os.WriteFile(filepath.Join(sys, "vdb", "serial"), []byte("cvm-disk-1"), 0o644)
	os.WriteFile(filepath.Join(sys, "vdb", "size"), []byte("8\n"), 0o644)
	f.Add("cvm-disk-1")
	f.Add("../vdb")
	f.Add("")
	f.Fuzz(func(t *testing.T, serial string) {
		name, err := FindDisk(sys, serial)
		if err == nil && name != "" && name != "vdb" {
			t.Fatalf("FindDisk(%q) = %q", serial, name)
		}
	})
}

package containers

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
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
		serial string
		size   uint64
		want   string
		bad    bool
	}{
		{"cvm-disk-1", 0, "vdb", false},
		{"cvm-disk-1", 2048 * 512, "vdb", false},
		{"cvm-disk-1", 8 * 512, "", false}, // the slot still shows another disk's capacity
		{"cvm-disk-2", 0, "vdc", false},
		{"cvm-disk-2", 8 * 512, "vdc", false},
		{"cvm-disk-3", 0, "", false},
		{"cvm-disk-4", 0, "", false},
		{"cvm-disk-5", 0, "", false},
		{"cvm-disk-6", 0, "", false},
		{"cvm-disk-1", 1000, "", true}, // not whole sectors
		{"", 0, "", true},
		{"../../etc", 0, "", true},
		{"abcdefghijklmnopqrstu", 0, "", true}, // 21 bytes
	}
	for _, tt := range tests {
		got, err := FindDisk(sys, tt.serial, tt.size)
		if (err != nil) != tt.bad || got != tt.want {
			t.Errorf("FindDisk(%q, %d) = %q, %v; want %q, error %v", tt.serial, tt.size, got, err, tt.want, tt.bad)
		}
		if tt.bad && !errors.Is(err, ErrInvalid) {
			t.Errorf("FindDisk(%q, %d) = %v, want ErrInvalid", tt.serial, tt.size, err)
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
	got, err := m.waitDisk(context.Background(), "cvm-disk-1", 0)
	if err != nil || got != filepath.Join(dev, "vdb") {
		t.Errorf("waitDisk = %q, %v; want %s", got, err, filepath.Join(dev, "vdb"))
	}

	// A reused slot: the new serial shows while the capacity is still
	// the previous disk's; only the size the host sent tells them apart.
	os.MkdirAll(filepath.Join(sys, "vdc"), 0o755)
	os.WriteFile(filepath.Join(sys, "vdc", "size"), []byte("4096\n"), 0o644)
	os.WriteFile(filepath.Join(sys, "vdc", "serial"), []byte("cvm-disk-2"), 0o644)
	os.WriteFile(filepath.Join(dev, "vdc"), nil, 0o600)
	changed := make(chan struct{})
	go func() {
		time.Sleep(200 * time.Millisecond)
		os.WriteFile(filepath.Join(sys, "vdc", "size"), []byte("16\n"), 0o644)
		close(changed)
	}()
	got, err = m.waitDisk(context.Background(), "cvm-disk-2", 16*512)
	select {
	case <-changed:
	default:
		t.Errorf("waitDisk took the reused slot before its capacity changed")
	}
	if err != nil || got != filepath.Join(dev, "vdc") {
		t.Errorf("waitDisk of the reused slot = %q, %v; want %s", got, err, filepath.Join(dev, "vdc"))
	}

	m.diskWait = 100 * time.Millisecond
	if _, err := m.waitDisk(context.Background(), "cvm-disk-9", 0); !errors.Is(err, ErrNotFound) {
		t.Errorf("waitDisk of a missing disk = %v, want ErrNotFound", err)
	}
	if _, err := m.waitDisk(context.Background(), "cvm-disk-2", 8*512); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "4096 bytes") {
		t.Errorf("waitDisk of a disk of another size = %v, want ErrNotFound naming the size", err)
	}
	// Exactly one root source.
	if err := m.Create(context.Background(), "c", []byte(`{"process":{"args":["/x"],"cwd":"/"}}`),
		Rootfs{Device: "/dev/vdb", Serial: "cvm-disk-1", FSType: "ext4"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Create with a device and a serial = %v, want ErrInvalid", err)
	}
	if err := m.Create(context.Background(), "c", []byte(`{"process":{"args":["/x"],"cwd":"/"}}`),
		Rootfs{Device: "/dev/vdb", Size: 4096, FSType: "ext4"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Create with a size but no serial = %v, want ErrInvalid", err)
	}
}

func FuzzFindDisk(f *testing.F) {
	sys := f.TempDir()
	os.MkdirAll(filepath.Join(sys, "vdb"), 0o755)
	os.WriteFile(filepath.Join(sys, "vdb", "serial"), []byte("cvm-disk-1"), 0o644)
	os.WriteFile(filepath.Join(sys, "vdb", "size"), []byte("8\n"), 0o644)
	f.Add("cvm-disk-1", uint64(0))
	f.Add("cvm-disk-1", uint64(4096))
	f.Add("../vdb", uint64(512))
	f.Add("", uint64(1))
	f.Fuzz(func(t *testing.T, serial string, size uint64) {
		name, err := FindDisk(sys, serial, size)
		if err == nil && name != "" && (name != "vdb" || size != 0 && size != 4096) {
			t.Fatalf("FindDisk(%q, %d) = %q", serial, size, name)
		}
	})
}

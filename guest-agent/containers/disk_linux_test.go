package containers

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestFlushDiskNotABlockDevice(t *testing.T) {
	d := t.TempDir()
	file := filepath.Join(d, "vdb")
	os.WriteFile(file, make([]byte, 4096), 0o600)
	if err := FlushDisk(file); !errors.Is(err, ErrInvalid) {
		t.Errorf("FlushDisk(regular file) = %v, want ErrInvalid", err)
	}
	if err := FlushDisk(filepath.Join(d, "vdc")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("FlushDisk(missing) = %v, want fs.ErrNotExist", err)
	}
	if err := FlushDisk("/dev/null"); !errors.Is(err, ErrInvalid) {
		t.Errorf("FlushDisk(/dev/null) = %v, want ErrInvalid (a character device)", err)
	}
}

// TestFlushDiskLoop shows on a loop device what FlushDisk is for: the
// device's page cache keeps a block after the medium under it changed
// (here: the loop device's backing file written behind its back, as a
// hot-plug slot gets a new image), and FlushDisk makes the next read see
// the new bytes. It needs root and a free loop device.
func TestFlushDiskLoop(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (to bind a loop device)")
	}
	backing := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(backing, bytes.Repeat([]byte{'a'}, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	dev := bindLoop(t, backing)

	read := func() []byte {
		t.Helper()
		f, err := os.Open(dev)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		b := make([]byte, 4096)
		if _, err := f.ReadAt(b, 0); err != nil {
			t.Fatal(err)
		}
		return b
	}
	if got := read(); got[0] != 'a' {
		t.Fatalf("first read through %s = %q..., want the backing file's a", dev, got[:4])
	}
	bf, err := os.OpenFile(backing, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bf.WriteAt(bytes.Repeat([]byte{'b'}, 4096), 0); err != nil {
		t.Fatal(err)
	}
	bf.Close()
	if got := read(); got[0] == 'a' {
		t.Logf("%s served the cached block after the change, as expected", dev)
	} else {
		t.Logf("%s read the change without a flush (nothing was cached): the case FlushDisk guards against did not arise", dev)
	}
	if err := FlushDisk(dev); err != nil {
		t.Fatal(err)
	}
	if got := read(); !bytes.Equal(got, bytes.Repeat([]byte{'b'}, 4096)) {
		t.Errorf("read through %s after FlushDisk = %q..., want the new bytes", dev, got[:4])
	}
}

// bindLoop binds a free loop device to file and returns its node; the
// binding is undone when the test ends.
func bindLoop(t *testing.T, file string) string {
	t.Helper()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("needs /dev/loop-control: %v", err)
	}
	defer ctl.Close()
	back, err := os.OpenFile(file, os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	// Another process may take the free device first: try again.
	for range 5 {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			t.Fatalf("LOOP_CTL_GET_FREE: %v", err)
		}
		dev := fmt.Sprintf("/dev/loop%d", n)
		f, err := os.OpenFile(dev, os.O_RDONLY, 0)
		if errors.Is(err, fs.ErrNotExist) {
			t.Skipf("needs the node %s of a free loop device (this /dev has no node for it)", dev)
		}
		if err != nil {
			t.Fatal(err)
		}
		err = unix.IoctlSetInt(int(f.Fd()), unix.LOOP_SET_FD, int(back.Fd()))
		if errors.Is(err, unix.EBUSY) {
			f.Close()
			continue
		}
		if err != nil {
			f.Close()
			t.Fatalf("%s: LOOP_SET_FD: %v", dev, err)
		}
		t.Cleanup(func() {
			if err := unix.IoctlSetInt(int(f.Fd()), unix.LOOP_CLR_FD, 0); err != nil {
				t.Errorf("%s: LOOP_CLR_FD: %v", dev, err)
			}
			f.Close()
		})
		return dev
	}
	t.Fatal("no free loop device after 5 attempts")
	return ""
}

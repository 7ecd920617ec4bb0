package containers

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// MaxSerial is the longest disk serial: virtio-blk's VIRTIO_BLK_ID_BYTES.
const MaxSerial = 20

// FindDisk returns the name (e.g. "vdb") of the block device in sysBlock
// (normally /sys/block) whose serial file holds serial and whose size file
// holds a positive sector count, exactly size bytes unless size is 0, or
// "" if none does yet. The builtin VMM's hot-plug slots are virtio-blk
// devices whose medium is swapped in, and the guest may read the new
// serial (GET_ID, asked on every read) before it has processed the
// configuration change that brings the new capacity: until then the
// device shows 0 sectors (an emptied slot) or, if the slot was emptied
// and refilled before the guest looked, the previous disk's capacity,
// which only size tells apart.
func FindDisk(sysBlock, serial string, size uint64) (string, error) {
	if err := validSerial(serial); err != nil {
		return "", err
	}
	if size%512 != 0 {
		return "", fmt.Errorf("%w: disk serial %q: size %d is not a whole number of 512-byte sectors", ErrInvalid, serial, size)
	}
	entries, err := os.ReadDir(sysBlock)
	if err != nil {
		return "", fmt.Errorf("containers: block devices: %w", err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(sysBlock, e.Name(), "serial"))
		if err != nil {
			continue // no serial (not virtio-blk), or gone
		}
		if strings.TrimRight(string(b), "\n\x00 ") != serial {
			continue
		}
		if n := sectors(filepath.Join(sysBlock, e.Name(), "size")); n > 0 && (size == 0 || n == size/512) {
			return e.Name(), nil
		}
	}
	return "", nil
}

// sectors returns the sector count in the sysfs size file at path, or 0
// if it cannot be read.
func sectors(path string) uint64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// blkFlsBuf is BLKFLSBUF (linux/fs.h: _IO(0x12, 97)), which golang.org/x/sys
// does not name.
const blkFlsBuf = 0x1261

// FlushDisk writes back and drops the cached pages of the block device
// node dev (ioctl BLKFLSBUF), so that the next reads come from the device.
// A hot-plug slot of the builtin VMM keeps its device node while its
// medium changes: without this, a new image could be read through the
// previous image's cached blocks. A node that is not a block device is an
// error.
func FlushDisk(dev string) error {
	f, err := os.OpenFile(dev, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("containers: flush the buffers of %s: %w", dev, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("containers: flush the buffers of %s: %w", dev, err)
	}
	if fi.Mode()&os.ModeDevice == 0 || fi.Mode()&os.ModeCharDevice != 0 {
		return fmt.Errorf("%w: flush the buffers of %s: not a block device (%v)", ErrInvalid, dev, fi.Mode().Type())
	}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), blkFlsBuf, 0); errno != 0 {
		return fmt.Errorf("containers: flush the buffers of %s: BLKFLSBUF: %w", dev, errno)
	}
	return nil
}

func validSerial(s string) error {
	if s == "" || len(s) > MaxSerial {
		return fmt.Errorf("%w: disk serial %q: empty or over %d bytes", ErrInvalid, s, MaxSerial)
	}
	for _, r := range s {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Errorf("%w: disk serial %q: %q is outside [A-Za-z0-9._-]", ErrInvalid, s, r)
		}
	}
	return nil
}

// waitDisk waits (up to m.diskWait) for the disk with serial (and size,
// unless 0: see FindDisk) and its device node, and returns the node's
// path.
func (m *Manager) waitDisk(ctx context.Context, serial string, size uint64) (string, error) {
	deadline := time.Now().Add(m.diskWait)
	for {
		name, err := FindDisk(m.sysBlock, serial, size)
		if err != nil {
			return "", err
		}
		if name != "" {
			dev := filepath.Join(m.devDir, name)
			if _, err := os.Stat(dev); err == nil {
				return dev, nil
			}
		}
		if time.Now().After(deadline) {
			what := ""
			if size > 0 {
				what = fmt.Sprintf(" and %d bytes", size)
			}
			return "", fmt.Errorf("%w: no disk with serial %q%s in %s after %v", ErrNotFound, serial, what, m.sysBlock, m.diskWait)
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("containers: waiting for the disk with serial %q: %w", serial, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

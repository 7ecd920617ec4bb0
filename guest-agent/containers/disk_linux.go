package containers

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// MaxSerial is the longest disk serial: virtio-blk's VIRTIO_BLK_ID_BYTES.
const MaxSerial = 20

// FindDisk returns the name (e.g. "vdb") of the block device in sysBlock
// (normally /sys/block) whose serial file holds serial, or "" if none
// does yet.
func FindDisk(sysBlock, serial string) (string, error) {
	if err := validSerial(serial); err != nil {
		return "", err
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
		if strings.TrimRight(string(b), "\n\x00 ") == serial {
			return e.Name(), nil
		}
	}
	return "", nil
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

// waitDisk waits (up to m.diskWait) for the disk with serial and its
// device node, and returns the node's path.
func (m *Manager) waitDisk(ctx context.Context, serial string) (string, error) {
	deadline := time.Now().Add(m.diskWait)
	for {
		name, err := FindDisk(m.sysBlock, serial)
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
			return "", fmt.Errorf("%w: no disk with serial %q in %s after %v", ErrNotFound, serial, m.sysBlock, m.diskWait)
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("containers: waiting for the disk with serial %q: %w", serial, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

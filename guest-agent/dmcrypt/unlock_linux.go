package dmcrypt

import (
	"errors"
	"fmt"
	"os"

	"github.com/greatjail/cvm/guest-agent/luks2"
	"golang.org/x/sys/unix"
)

// Volume is an unlocked, mounted LUKS2 volume.
type Volume struct {
	// Name is the device-mapper name, Device its node
	// (/dev/mapper/<name>), Mountpoint where the ext4 file system is.
	Name, Device, Mountpoint string
}

// Unlock opens the LUKS2 volume on device with volumeKey and mounts its
// ext4 file system read-write at mountpoint (created if missing):
//
//  1. parse the LUKS2 header of device (untrusted: the host wrote it);
//  2. check volumeKey against the header's digest: a wrong key returns an
//     error wrapping luks2.ErrWrongKey, and nothing is mapped;
//  3. map the data segment with dm-crypt as /dev/mapper/<name>;
//  4. mount it.
//
// On failure everything done so far is undone. Close the Volume to
// unmount and remove the mapping. The caller keeps (and clears) volumeKey.
func Unlock(device string, volumeKey []byte, name, mountpoint string) (*Volume, error) {
	f, err := os.Open(device)
	if err != nil {
		return nil, fmt.Errorf("dmcrypt: opening the disk: %w", err)
	}
	h, err := luks2.Parse(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("dmcrypt: the LUKS2 header of %s: %w", device, err)
	}
	if err := h.CheckKey(volumeKey); err != nil {
		return nil, fmt.Errorf("dmcrypt: %s: %w", device, err)
	}
	if h.DeviceSize == 0 {
		return nil, fmt.Errorf("dmcrypt: %s: cannot tell the size of the device", device)
	}
	length, err := h.Segment.DataSectors(h.DeviceSize)
	if err != nil {
		return nil, fmt.Errorf("dmcrypt: %s: %w", device, err)
	}
	if length == 0 {
		return nil, fmt.Errorf("dmcrypt: %s: the data segment is empty", device)
	}
	dev, err := Open(name, device, volumeKey, h.Segment.Offset/luks2.SectorSize, length, h.Segment.Encryption)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(mountpoint, 0o755); err != nil {
		return nil, errors.Join(fmt.Errorf("dmcrypt: making mount point %s: %w", mountpoint, err), Close(name))
	}
	if err := unix.Mount(dev, mountpoint, "ext4", 0, ""); err != nil {
		return nil, errors.Join(fmt.Errorf("dmcrypt: mounting %s (ext4) at %s: %w", dev, mountpoint, err), Close(name))
	}
	return &Volume{Name: name, Device: dev, Mountpoint: mountpoint}, nil
}

// Close unmounts the file system and removes the mapping.
func (v *Volume) Close() error {
	if err := unix.Unmount(v.Mountpoint, 0); err != nil {
		return fmt.Errorf("dmcrypt: unmounting %s: %w", v.Mountpoint, err)
	}
	return Close(v.Name)
}

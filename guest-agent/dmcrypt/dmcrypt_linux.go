package dmcrypt

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// controlPath is the device-mapper control device.
const controlPath = "/dev/mapper/control"

// control issues device-mapper ioctls. The real one is the control
// device; tests use a fake kernel.
type control interface {
	// ioctl runs req with buf (a dm_ioctl header and its data) in and out.
	ioctl(req uintptr, buf []byte) error
	Close() error
}

type fileControl struct{ f *os.File }

func (c fileControl) ioctl(req uintptr, buf []byte) error {
	raw, err := c.f.SyscallConn()
	if err != nil {
		return err
	}
	var errno unix.Errno
	if err := raw.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, req, uintptr(unsafe.Pointer(&buf[0])))
	}); err != nil {
		return err
	}
	if errno != 0 {
		return errno
	}
	return nil
}

func (c fileControl) Close() error { return c.f.Close() }

// openControl opens /dev/mapper/control, making the node first from
// /sys/class/misc/device-mapper/dev when it is missing (no udev, and a
// devtmpfs mounted before dm_mod was loaded may lack it).
func openControl() (control, error) {
	f, err := os.OpenFile(controlPath, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		devFile := "/sys/class/misc/device-mapper/dev"
		b, rerr := os.ReadFile(devFile)
		if rerr != nil {
			return nil, fmt.Errorf("dmcrypt: %w: %s: %v; %s: %v", ErrNoDeviceMapper, controlPath, err, devFile, rerr)
		}
		maj, min, perr := parseMajMin(strings.TrimSpace(string(b)))
		if perr != nil {
			return nil, fmt.Errorf("dmcrypt: %s: %w", devFile, perr)
		}
		if err := os.MkdirAll(filepath.Dir(controlPath), 0o755); err != nil {
			return nil, fmt.Errorf("dmcrypt: making %s: %w", filepath.Dir(controlPath), err)
		}
		if err := unix.Mknod(controlPath, unix.S_IFCHR|0o600, int(unix.Mkdev(maj, min))); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("dmcrypt: mknod %s (char %d:%d): %w", controlPath, maj, min, err)
		}
		f, err = os.OpenFile(controlPath, os.O_RDWR, 0)
	}
	if errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO) {
		// The node exists but no driver backs it.
		return nil, fmt.Errorf("dmcrypt: %w: opening %s: %w", ErrNoDeviceMapper, controlPath, err)
	}
	if err != nil {
		return nil, fmt.Errorf("dmcrypt: opening %s: %w", controlPath, err)
	}
	return fileControl{f}, nil
}

func parseMajMin(s string) (uint32, uint32, error) {
	a, b, ok := strings.Cut(s, ":")
	maj, err1 := strconv.ParseUint(a, 10, 32)
	min, err2 := strconv.ParseUint(b, 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("not a major:minor device number: %q", s)
	}
	return uint32(maj), uint32(min), nil
}

// mapper does the device-mapper work against a control and a /dev
// directory; the package functions use the real ones.
type mapper struct {
	ctl    control
	devDir string // "/dev"
	// mknod makes a block device node; replaced in tests.
	mknod func(path string, dev uint64) error
}

func realMknod(path string, dev uint64) error {
	return unix.Mknod(path, unix.S_IFBLK|0o600, int(dev))
}

// Open maps backing (a path such as /dev/vda, or "major:minor") through
// dm-crypt with the given cipher (e.g. aes-xts-plain64) and key: the new
// device's sector i is backing's sector offsetSectors+i, for lengthSectors
// sectors of 512 bytes. It creates the device node /dev/mapper/<name> and
// returns its path. The key is passed to the kernel in hex in the table;
// every buffer holding it is cleared before Open returns, and the kernel is
// asked (DM_SECURE_DATA_FLAG) to wipe its copies. On failure nothing is
// left mapped.
func Open(name, backing string, key []byte, offsetSectors, lengthSectors uint64, cipher string) (string, error) {
	ctl, err := openControl()
	if err != nil {
		return "", err
	}
	defer ctl.Close()
	m := mapper{ctl: ctl, devDir: "/dev", mknod: realMknod}
	return m.open(name, backing, key, offsetSectors, lengthSectors, cipher)
}

// Close removes the mapping name and its /dev/mapper node.
func Close(name string) error {
	ctl, err := openControl()
	if err != nil {
		return err
	}
	defer ctl.Close()
	m := mapper{ctl: ctl, devDir: "/dev", mknod: realMknod}
	return m.close(name)
}

// newBuf returns a buffer for a dm ioctl: the header for name and flags,
// data of extra bytes after it.
func newBuf(name string, flags uint32, extra int) []byte {
	size := sizeofIoctl + extra
	if size < 16<<10 {
		size = 16 << 10 // room for the kernel's replies
	}
	buf := make([]byte, size)
	h := dmIoctl{
		version:   [3]uint32{dmVersionMajor, 0, 0},
		dataSize:  uint32(size),
		dataStart: uint32(sizeofIoctl),
		flags:     flags,
	}
	copy(h.name[:], name)
	encodeHeader(buf, &h)
	return buf
}

func (m *mapper) do(req uintptr, buf []byte, what string) (dmIoctl, error) {
	if err := m.ctl.ioctl(req, buf); err != nil {
		var hint string
		var errno unix.Errno
		if errors.As(err, &errno) {
			hint = fmt.Sprintf(" (errno %d %s)", int(errno), unix.ErrnoName(errno))
		}
		return dmIoctl{}, fmt.Errorf("dmcrypt: %s: ioctl %s: %w%s", what, ioctlNames[req], err, hint)
	}
	return decodeHeader(buf), nil
}

func (m *mapper) open(name, backing string, key []byte, offsetSectors, lengthSectors uint64, cipher string) (path string, err error) {
	if err := checkName(name); err != nil {
		return "", err
	}
	if lengthSectors == 0 {
		return "", errors.New("dmcrypt: zero-length mapping")
	}
	params, err := table(cipher, key, backing, offsetSectors)
	if err != nil {
		return "", err
	}
	defer clear(params)

	v, err := m.do(ioctlVersion, newBuf("", 0, 0), "checking the device-mapper version")
	if err != nil {
		return "", err
	}
	if v.version[0] != dmVersionMajor {
		return "", fmt.Errorf("dmcrypt: kernel device-mapper interface version %d.%d.%d, want major %d", v.version[0], v.version[1], v.version[2], dmVersionMajor)
	}

	what := fmt.Sprintf("mapping %s", name)
	created, err := m.do(ioctlDevCreate, newBuf(name, 0, 0), what)
	if err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			if rerr := m.remove(name); rerr != nil {
				err = fmt.Errorf("%w (and undoing: %v)", err, rerr)
			}
		}
	}()

	// DM_TABLE_LOAD: header, one target spec, its NUL-terminated
	// parameters padded to 8 bytes.
	pl := (len(params) + 1 + 7) &^ 7
	buf := newBuf(name, flagSecureData, sizeofTargetSpec+pl)
	defer clear(buf)
	h := decodeHeader(buf)
	h.targetCount = 1
	encodeHeader(buf, &h)
	spec := dmTargetSpec{length: lengthSectors, next: uint32(sizeofTargetSpec + pl)}
	copy(spec.targetType[:], "crypt")
	encodeTargetSpec(buf[sizeofIoctl:], &spec)
	copy(buf[sizeofIoctl+sizeofTargetSpec:], params)
	if _, err := m.do(ioctlTableLoad, buf, what+": loading the crypt table"); err != nil {
		switch {
		case errors.Is(err, unix.ENOENT):
			// dm-crypt: "Error allocating crypto tfm".
			err = fmt.Errorf("%w; the kernel has no implementation of %s (for aes-xts-plain64 load the xts and ecb modules, or aesni_intel)", err, cipher)
		case errors.Is(err, unix.EINVAL):
			err = fmt.Errorf("%w; is the dm_crypt module loaded? (the kernel log says which)", err)
		}
		return "", err
	}
	// DM_DEV_SUSPEND without DM_SUSPEND_FLAG resumes: the loaded table
	// becomes live.
	if _, err := m.do(ioctlDevSusp, newBuf(name, 0, 0), what+": resuming"); err != nil {
		return "", err
	}

	dir := filepath.Join(m.devDir, "mapper")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("dmcrypt: %s: %w", what, err)
	}
	path = filepath.Join(dir, name)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("dmcrypt: %s: removing a stale %s: %w", what, path, err)
	}
	if err := m.mknod(path, created.dev); err != nil {
		return "", fmt.Errorf("dmcrypt: %s: mknod %s (block %d:%d): %w", what, path, unix.Major(created.dev), unix.Minor(created.dev), err)
	}
	return path, nil
}

// remove removes the mapping, retrying briefly while it is busy (a mount
// being torn down).
func (m *mapper) remove(name string) error {
	var err error
	for range 10 {
		_, err = m.do(ioctlDevRemove, newBuf(name, 0, 0), "removing mapping "+name)
		if !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	return err
}

func (m *mapper) close(name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	if err := m.remove(name); err != nil {
		return err
	}
	path := filepath.Join(m.devDir, "mapper", name)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("dmcrypt: removing %s: %w", path, err)
	}
	return nil
}

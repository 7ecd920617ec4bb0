package dmcrypt

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/greatjail/cvm/guest-agent/luks2"
	"golang.org/x/sys/unix"
)

// fakeKernel is a device-mapper control that records requests.
type fakeKernel struct {
	reqs    []string
	bufs    [][]byte // the caller's buffers, by reference
	copies  [][]byte // copies at call time
	fail    map[uintptr]error
	version uint32
}

func (k *fakeKernel) ioctl(req uintptr, buf []byte) error {
	k.reqs = append(k.reqs, ioctlNames[req])
	k.bufs = append(k.bufs, buf)
	k.copies = append(k.copies, bytes.Clone(buf))
	if err := k.fail[req]; err != nil {
		return err
	}
	h := decodeHeader(buf)
	switch req {
	case ioctlVersion:
		h.version = [3]uint32{k.version, 47, 0}
	case ioctlDevCreate:
		h.dev = unix.Mkdev(253, 300)
	}
	encodeHeader(buf, &h)
	return nil
}

func (k *fakeKernel) Close() error { return nil }

type node struct {
	path string
	dev  uint64
}

func newFake(t *testing.T) (*fakeKernel, *mapper, *[]node) {
	k := &fakeKernel{version: 4, fail: map[uintptr]error{}}
	var nodes []node
	m := &mapper{ctl: k, devDir: t.TempDir(), mknod: func(p string, dev uint64) error {
		nodes = append(nodes, node{p, dev})
		return os.WriteFile(p, nil, 0o600)
	}}
	return k, m, &nodes
}

var testKey = bytes.Repeat([]byte{0xab}, 64)

func TestOpenIoctls(t *testing.T) {
	k, m, nodes := newFake(t)
	path, err := m.open("root", "/dev/vda", testKey, 32768, 1000, "aes-xts-plain64")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(m.devDir, "mapper", "root"); path != want {
		t.Errorf("path = %q, want %q", path, want)
	}
	if d := cmp.Diff([]string{"DM_VERSION", "DM_DEV_CREATE", "DM_TABLE_LOAD", "DM_DEV_SUSPEND"}, k.reqs); d != "" {
		t.Errorf("ioctls (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]node{{path, unix.Mkdev(253, 300)}}, *nodes, cmp.AllowUnexported(node{})); d != "" {
		t.Errorf("mknod (-want +got):\n%s", d)
	}
	for i, b := range k.copies {
		h := decodeHeader(b)
		if h.version[0] != 4 || h.dataStart != uint32(sizeofIoctl) || int(h.dataSize) != len(b) {
			t.Errorf("%s: version %v, data_start %d, data_size %d (buffer %d); want 4, %d, the buffer size", k.reqs[i], h.version, h.dataStart, h.dataSize, len(b), sizeofIoctl)
		}
		wantName := "root"
		if i == 0 {
			wantName = ""
		}
		if got := string(bytes.TrimRight(h.name[:], "\x00")); got != wantName {
			t.Errorf("%s: name %q, want %q", k.reqs[i], got, wantName)
		}
	}
	// The table load.
	b := k.copies[2]
	h := decodeHeader(b)
	if h.targetCount != 1 || h.flags != flagSecureData {
		t.Errorf("DM_TABLE_LOAD: target_count %d, flags %#x; want 1, DM_SECURE_DATA_FLAG", h.targetCount, h.flags)
	}
	spec := b[sizeofIoctl : sizeofIoctl+sizeofTargetSpec]
	params, _, _ := bytes.Cut(b[sizeofIoctl+sizeofTargetSpec:], []byte{0})
	wantParams := "aes-xts-plain64 " + strings.Repeat("ab", 64) + " 0 /dev/vda 32768"
	if string(params) != wantParams {
		t.Errorf("table parameters = %q, want %q", params, wantParams)
	}
	var ws dmTargetSpec
	ws.length, ws.next = 1000, uint32(sizeofTargetSpec+(len(wantParams)+1+7)&^7)
	copy(ws.targetType[:], "crypt")
	want := make([]byte, sizeofTargetSpec)
	encodeTargetSpec(want, &ws)
	if !bytes.Equal(spec, want) {
		t.Errorf("target spec = %x, want %x", spec, want)
	}
	// Resume = DM_DEV_SUSPEND without DM_SUSPEND_FLAG.
	if f := decodeHeader(k.copies[3]).flags; f&flagSuspend != 0 {
		t.Errorf("DM_DEV_SUSPEND flags %#x: suspends instead of resuming", f)
	}
	// The key is gone from the buffer once Open returns.
	if bytes.Contains(k.bufs[2], []byte(strings.Repeat("ab", 8))) {
		t.Error("the table-load buffer still holds the hex key after Open")
	}
}

func TestOpenFailures(t *testing.T) {
	tests := []struct {
		name     string
		fail     uintptr
		errno    error
		version  uint32
		wantReqs []string
		wantErr  string
	}{
		{"no version", ioctlVersion, unix.ENOTTY, 4, []string{"DM_VERSION"}, "ioctl DM_VERSION: inappropriate ioctl for device (errno 25 ENOTTY)"},
		{"version 5", 0, nil, 5, []string{"DM_VERSION"}, "interface version 5.47.0, want major 4"},
		{"create exists", ioctlDevCreate, unix.EBUSY, 4, []string{"DM_VERSION", "DM_DEV_CREATE"}, "mapping root: ioctl DM_DEV_CREATE: device or resource busy (errno 16 EBUSY)"},
		{"no crypt target", ioctlTableLoad, unix.EINVAL, 4, []string{"DM_VERSION", "DM_DEV_CREATE", "DM_TABLE_LOAD", "DM_DEV_REMOVE"}, "loading the crypt table: ioctl DM_TABLE_LOAD: invalid argument (errno 22 EINVAL)"},
		{"no xts", ioctlTableLoad, unix.ENOENT, 4, []string{"DM_VERSION", "DM_DEV_CREATE", "DM_TABLE_LOAD", "DM_DEV_REMOVE"}, "no implementation of aes-xts-plain64 (for aes-xts-plain64 load the xts and ecb modules"},
		{"resume fails", ioctlDevSusp, unix.ENXIO, 4, []string{"DM_VERSION", "DM_DEV_CREATE", "DM_TABLE_LOAD", "DM_DEV_SUSPEND", "DM_DEV_REMOVE"}, "resuming: ioctl DM_DEV_SUSPEND"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, m, nodes := newFake(t)
			k.version = tt.version
			if tt.errno != nil {
				k.fail[tt.fail] = tt.errno
			}
			_, err := m.open("root", "/dev/vda", testKey, 32768, 1000, "aes-xts-plain64")
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("open error = %v, want it to contain %q", err, tt.wantErr)
			}
			if tt.errno != nil && !errors.Is(err, tt.errno) {
				t.Errorf("errors.Is(%v, %v) = false", err, tt.errno)
			}
			if d := cmp.Diff(tt.wantReqs, k.reqs); d != "" {
				t.Errorf("ioctls (-want +got):\n%s", d)
			}
			if len(*nodes) != 0 {
				t.Errorf("nodes made on failure: %v", *nodes)
			}
		})
	}
}

func TestOpenRejectsInput(t *testing.T) {
	tests := []struct {
		name, dev, backing, cipher string
		key                        []byte
		length                     uint64
	}{
		{"empty name", "", "/dev/vda", "aes-xts-plain64", testKey, 1},
		{"slash in name", "a/b", "/dev/vda", "aes-xts-plain64", testKey, 1},
		{"dotdot", "..", "/dev/vda", "aes-xts-plain64", testKey, 1},
		{"long name", strings.Repeat("n", 128), "/dev/vda", "aes-xts-plain64", testKey, 1},
		{"space in backing", "root", "/dev/vda 0", "aes-xts-plain64", testKey, 1},
		{"space in cipher", "root", "/dev/vda", "aes-xts-plain64 x", testKey, 1},
		{"no key", "root", "/dev/vda", "aes-xts-plain64", nil, 1},
		{"zero length", "root", "/dev/vda", "aes-xts-plain64", testKey, 0},
	}
	for _, tt := range tests {
		k, m, _ := newFake(t)
		if _, err := m.open(tt.dev, tt.backing, tt.key, 0, tt.length, tt.cipher); err == nil {
			t.Errorf("%s: open succeeded", tt.name)
		}
		if len(k.reqs) != 0 {
			t.Errorf("%s: ioctls issued for invalid input: %v", tt.name, k.reqs)
		}
	}
}

func TestClose(t *testing.T) {
	k, m, _ := newFake(t)
	path, err := m.open("root", "/dev/vda", testKey, 0, 8, "aes-xts-plain64")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.close("root"); err != nil {
		t.Fatal(err)
	}
	if got := k.reqs[len(k.reqs)-1]; got != "DM_DEV_REMOVE" {
		t.Errorf("last ioctl = %s, want DM_DEV_REMOVE", got)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("%s still exists after close (%v)", path, err)
	}
}

func TestTable(t *testing.T) {
	got, err := table("aes-xts-plain64", []byte{0, 1, 0xfe, 0xff}, "253:0", 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	if want := "aes-xts-plain64 0001feff 0 253:0 1099511627776"; string(got) != want {
		t.Errorf("table = %q, want %q", got, want)
	}
}

// formatted writes a LUKS2 image with a data segment of n bytes.
func formatted(t *testing.T, key []byte, n int) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h, err := luks2.Format(f, key, luks2.FormatOptions{KeyslotIterations: 1000, DigestIterations: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := luks2.Encrypt(f, h, key, bytes.NewReader(make([]byte, n))); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestUnlockWrongKey runs anywhere: a wrong key is refused before any
// device-mapper work.
func TestUnlockWrongKey(t *testing.T) {
	img := formatted(t, testKey, 4096)
	mnt := filepath.Join(t.TempDir(), "mnt")
	_, err := Unlock(img, bytes.Repeat([]byte{1}, 64), "cvm-test-wrongkey", mnt)
	if !errors.Is(err, luks2.ErrWrongKey) {
		t.Fatalf("Unlock with a wrong key = %v, want luks2.ErrWrongKey", err)
	}
	if !strings.Contains(err.Error(), img) {
		t.Errorf("error %q does not name the device", err)
	}
	if _, err := os.Stat(mnt); !os.IsNotExist(err) {
		t.Errorf("Unlock with a wrong key made the mount point (%v)", err)
	}
	if _, err := Unlock(filepath.Join(t.TempDir(), "nope"), testKey, "x", mnt); err == nil || !strings.Contains(err.Error(), "opening the disk") {
		t.Errorf("Unlock of a missing device = %v, want an error opening the disk", err)
	}
}

// TestUnlockReal maps and mounts for real. It needs root, device-mapper
// with dm-crypt, mkfs.ext4 and a loop device (dm needs a block device); the
// launcher's end-to-end test in a QEMU guest covers the same path there.
func TestUnlockReal(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mapping and mounting need root")
	}
	ctl, err := openControl()
	if errors.Is(err, ErrNoDeviceMapper) {
		// Unlock with the right key gets past the key check and fails
		// naming what is missing.
		img := formatted(t, testKey, 4096)
		_, uerr := Unlock(img, testKey, "cvm-test", filepath.Join(t.TempDir(), "mnt"))
		if !errors.Is(uerr, ErrNoDeviceMapper) {
			t.Errorf("Unlock without device-mapper = %v, want ErrNoDeviceMapper", uerr)
		}
		t.Skipf("device-mapper is not available on this kernel (%v): the dm-crypt mapping is not exercised here", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	ctl.Close()
	for _, tool := range []string{"mkfs.ext4", "losetup"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (Debian packages e2fsprogs, mount)", tool)
		}
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "hello"), []byte("hello from the disk\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(dir, "plain.ext4")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", root, plain, "8M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	pf, err := os.Open(plain)
	if err != nil {
		t.Fatal(err)
	}
	defer pf.Close()
	img := filepath.Join(dir, "disk.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	h, err := luks2.Format(f, testKey, luks2.FormatOptions{KeyslotIterations: 1000, DigestIterations: 1000})
	if err == nil {
		_, err = luks2.Encrypt(f, h, testKey, pf)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "--find", "--show", img).Output()
	if err != nil {
		t.Fatalf("losetup: %v", err)
	}
	loop := strings.TrimSpace(string(out))
	defer exec.Command("losetup", "-d", loop).Run()
	v, err := Unlock(loop, testKey, "cvm-test-unlock", filepath.Join(dir, "mnt"))
	if err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	got, rerr := os.ReadFile(filepath.Join(v.Mountpoint, "hello"))
	if err := v.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if rerr != nil || string(got) != "hello from the disk\n" {
		t.Errorf("reading the mounted file = %q, %v", got, rerr)
	}
}

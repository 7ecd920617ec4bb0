package dmcrypt

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/greatjail/cvm/guest-agent/luks2"
	"github.com/greatjail/cvm/internal/testhost"
	"github.com/greatjail/cvm/launcher/initramfs"
)

// guestModules are what the test guest loads (with dependencies): the
// virtio-pci disk, device-mapper, dm-crypt and the crypto templates
// aes-xts-plain64 needs (xts over ecb(aes); aes itself is built in, ecb is
// a module in 6.1 and built in in 6.12).
var guestModules = []string{"virtio_pci", "virtio_blk", "dm_mod", "dm_crypt", "xts", "ecb"}

// TestUnlockInGuest is the VM tier: it boots each Debian cloud kernel
// under QEMU (TCG) with an image made by luks2.Format and Encrypt as
// /dev/vda, and testdata/guestinit as /init, which runs Unlock for real
// (wrong key refused, mount, read, write, close, reopen). Back on the host
// the file the guest wrote is read from the image with luks2.Decrypt and
// debugfs, so dm-crypt and this repository's XTS agree in both directions.
func TestUnlockInGuest(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the QEMU guest test")
	}
	root, err := testhost.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	qemu, err := testhost.QEMU()
	if errors.Is(err, testhost.ErrMissing) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, tool := range []string{"mkfs.ext4", "debugfs"} {
		if _, err := findTool(tool); err != nil {
			t.Skipf("%s is not installed (Debian package e2fsprogs)", tool)
		}
	}
	dir := t.TempDir()
	initBin := filepath.Join(dir, "guestinit")
	build := exec.Command("go", "build", "-trimpath", "-o", initBin, "./guest-agent/dmcrypt/testdata/guestinit")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building guestinit: %v\n%s", err, out)
	}
	initData, err := os.ReadFile(initBin)
	if err != nil {
		t.Fatal(err)
	}
	for _, release := range testhost.Releases {
		t.Run(release, func(t *testing.T) {
			k, err := testhost.FindKernel(root, release)
			if errors.Is(err, testhost.ErrMissing) {
				t.Skip(err)
			}
			if err != nil {
				t.Fatal(err)
			}
			mods, err := testhost.Modules(k, guestModules...)
			if err != nil {
				t.Fatal(err)
			}
			img, key := guestImage(t)
			a := initramfs.New()
			var names []string
			errs := []error{a.AddFile("init", initData, 0o755), a.AddFile("disk.key", key, 0o600)}
			for _, m := range mods {
				errs = append(errs, a.AddFile("lib/modules/"+m.Name+".ko", m.Data, 0o644))
				names = append(names, m.Name)
			}
			errs = append(errs, a.AddFile("modules", []byte(strings.Join(names, "\n")+"\n"), 0o644))
			for _, d := range []string{"dev", "proc", "sys", "mnt"} {
				errs = append(errs, a.AddDir(d, 0o755))
			}
			errs = append(errs, a.AddCharDev("dev/console", 0o600, 5, 1))
			for _, err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			var rd bytes.Buffer
			if _, err := a.WriteTo(&rd); err != nil {
				t.Fatal(err)
			}
			initrd := filepath.Join(t.TempDir(), "initrd")
			if err := os.WriteFile(initrd, rd.Bytes(), 0o600); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, qemu, "-machine", "q35", "-m", "512", "-nographic", "-no-reboot",
				"-kernel", k.Image, "-initrd", initrd, "-append", "console=ttyS0 panic=-1 quiet",
				"-drive", "file="+img+",if=virtio,format=raw", "-nic", "none")
			out, err := cmd.CombinedOutput()
			console := string(out)
			if err != nil {
				t.Fatalf("qemu: %v\n%s", err, console)
			}
			for _, want := range []string{
				"DMTEST wrong-key refused",
				`DMTEST motd "hello from the encrypted disk\n"`,
				`DMTEST reopened "the guest wrote this\n"`,
				"DMTEST OK",
			} {
				if !strings.Contains(console, want) {
					t.Errorf("guest console lacks %q:\n%s", want, console)
				}
			}
			if t.Failed() {
				return
			}
			// The host reads what the guest wrote through dm-crypt.
			if got := readFromImage(t, img, key, "/written-in-guest"); got != "the guest wrote this\n" {
				t.Errorf("/written-in-guest decrypted on the host = %q", got)
			}
		})
	}
}

func findTool(name string) (string, error) {
	for _, p := range []string{name, "/usr/sbin/" + name, "/sbin/" + name} {
		if path, err := exec.LookPath(p); err == nil {
			return path, nil
		}
	}
	return "", exec.ErrNotFound
}

// guestImage makes an ext4 file system holding /etc/motd, encrypted into a
// LUKS2 image; it returns the image's path and the volume key.
func guestImage(t *testing.T) (string, []byte) {
	t.Helper()
	dir := t.TempDir()
	tree := filepath.Join(dir, "root")
	if err := os.MkdirAll(filepath.Join(tree, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "etc", "motd"), []byte("hello from the encrypted disk\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	mkfs, _ := findTool("mkfs.ext4")
	plain := filepath.Join(dir, "plain.ext4")
	if out, err := exec.Command(mkfs, "-q", "-F", "-d", tree, "-E", "root_owner=0:0", "-T", "default", plain, "16M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	key := bytes.Repeat([]byte{0xc5, 0x3a}, 32) // synthetic
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
	h, err := luks2.Format(f, key, luks2.FormatOptions{})
	if err == nil {
		_, err = luks2.Encrypt(f, h, key, pf)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	return img, key
}

// readFromImage decrypts the image's file system and cats path with
// debugfs.
func readFromImage(t *testing.T, img string, key []byte, path string) string {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h, err := luks2.Parse(f)
	if err != nil {
		t.Fatal(err)
	}
	n, err := h.Segment.DataSectors(h.DeviceSize)
	if err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(t.TempDir(), "plain")
	pf, err := os.Create(plain)
	if err != nil {
		t.Fatal(err)
	}
	if err := luks2.Decrypt(pf, f, h, key, int64(n)*luks2.SectorSize); err != nil {
		t.Fatal(err)
	}
	pf.Close()
	debugfs, _ := findTool("debugfs")
	out, err := exec.Command(debugfs, "-R", "cat "+path, plain).Output()
	if err != nil {
		t.Fatalf("debugfs cat %s: %v", path, err)
	}
	return string(out)
}

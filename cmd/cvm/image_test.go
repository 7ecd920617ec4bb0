package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestImageEncryptUsage(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"image", "encrypt", "--out", "x", "--key-out", "y"}, "--rootfs is required"},
		{[]string{"image", "encrypt", "--rootfs", dir, "--key-out", "y"}, "--out is required"},
		{[]string{"image", "encrypt", "--rootfs", dir, "--out", "x"}, "--key-out is required"},
		{[]string{"image", "encrypt", "--rootfs", dir, "--out", "x", "--key-out", "y", "--size", "12X"}, "--size: invalid size"},
		{[]string{"image", "encrypt", "--rootfs", dir, "--out", "x", "--key-out", "y", "extra"}, "takes no arguments"},
		{[]string{"image", "bogus"}, `unknown command "bogus"`},
	}
	for _, tt := range tests {
		r := cvm(t, tt.args...)
		if r.code != exitUsage || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("cvm %v: exit %d, stderr %q; want %d and %q", tt.args, r.code, r.stderr, exitUsage, tt.want)
		}
	}
}

func TestImageEncrypt(t *testing.T) {
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		if _, err := os.Stat("/sbin/mkfs.ext4"); err != nil {
			t.Skip("mkfs.ext4 is not installed (Debian package e2fsprogs)")
		}
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "rootfs")
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc", "motd"), []byte("hi\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	img, key := filepath.Join(dir, "disk.img"), filepath.Join(dir, "disk.key")
	r := cvm(t, "image", "encrypt", "--rootfs", root, "--out", img, "--key-out", key, "--quiet")
	if r.code != 0 || r.stderr != "" || r.stdout != "" {
		t.Fatalf("cvm image encrypt --quiet: exit %d, stdout %q, stderr %q; want 0 and no output", r.code, r.stdout, r.stderr)
	}
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != 64 {
		t.Errorf("key file: %v, %v", fi, err)
	}
	// Again: refuses to overwrite (exit 1), then --force works.
	r = cvm(t, "image", "encrypt", "--rootfs", root, "--out", img, "--key-out", key)
	if r.code != exitFailure || !strings.Contains(r.stderr, "already exists (use --force") {
		t.Errorf("second run: exit %d, stderr %q; want 1 and an already-exists error", r.code, r.stderr)
	}
	r = cvm(t, "image", "encrypt", "--rootfs", root, "--out", img, "--key-out", key, "--force", "--size", "40M")
	if r.code != 0 || !strings.Contains(r.stderr, "making the ext4 file system (40 MiB)") || !strings.Contains(r.stderr, "wrote "+img) {
		t.Errorf("--force --size 40M: exit %d, stderr %q", r.code, r.stderr)
	}
	if fi, err := os.Stat(img); err != nil || fi.Size() != (16+40)<<20 {
		t.Errorf("image: %v, %v; want %d bytes", fi, err, (16+40)<<20)
	}
	r = cvm(t, "image", "encrypt", "--rootfs", filepath.Join(dir, "missing"), "--out", filepath.Join(dir, "o"), "--key-out", filepath.Join(dir, "k"))
	if r.code != exitFailure || !strings.Contains(r.stderr, "no such file or directory") {
		t.Errorf("missing rootfs: exit %d, stderr %q; want 1", r.code, r.stderr)
	}
}

package image

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/greatjail/cvm/guest-agent/luks2"
)

func needMkfs(t *testing.T) {
	t.Helper()
	if _, err := findMkfs(""); err != nil {
		t.Skip("mkfs.ext4 is not installed (Debian package e2fsprogs)")
	}
}

func tool(t *testing.T, name, pkg string) string {
	t.Helper()
	for _, p := range []string{name, "/usr/sbin/" + name, "/sbin/" + name} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	t.Skipf("%s is not installed (Debian package %s)", name, pkg)
	return ""
}

// testFiles is the tree the tests encrypt.
var testFiles = map[string]string{
	"etc/motd":          "hello from the encrypted disk\n",
	"bin/hello":         "#!/bin/sh\necho hello\n",
	"var/lib/data/blob": strings.Repeat("0123456789abcdef", 20000), // 320 KB, several extents
	"empty":             "",
}

func makeTree(t *testing.T) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "rootfs")
	for name, content := range testFiles {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(root, "bin/hello"), 0o755); err != nil {
		t.Fatal(err)
	}
	return root
}

// seeded is deterministic randomness (synthetic keys only).
func seeded() *rand.ChaCha8 { return rand.NewChaCha8([32]byte{7}) }

func testOptions(root, dir string) Options {
	return Options{
		RootFS: root, Out: filepath.Join(dir, "disk.img"), KeyOut: filepath.Join(dir, "disk.key"),
		Rand:   seeded(),
		Format: luks2.FormatOptions{KeyslotIterations: 1000, DigestIterations: 1000},
	}
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	return names
}

func TestEncrypt(t *testing.T) {
	needMkfs(t)
	debugfs := tool(t, "debugfs", "e2fsprogs")
	root := makeTree(t)
	dir := t.TempDir()
	o := testOptions(root, dir)
	var progress bytes.Buffer
	o.Progress = &progress
	res, err := Encrypt(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"disk.img", "disk.key"}, dirNames(t, dir)); d != "" {
		t.Errorf("output directory (-want +got):\n%s", d)
	}
	if res.FSSize != MinSize || res.ImageSize != luks2.DataOffset+MinSize {
		t.Errorf("sizes = fs %d, image %d; want %d, %d", res.FSSize, res.ImageSize, MinSize, luks2.DataOffset+MinSize)
	}
	for _, want := range []string{"making the ext4 file system (32 MiB) from " + root, "encrypting 32 MiB", "encrypted 100%"} {
		if !strings.Contains(progress.String(), want) {
			t.Errorf("progress lacks %q:\n%s", want, progress.String())
		}
	}
	fi, err := os.Stat(o.KeyOut)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Size() != KeySize {
		t.Errorf("key file: mode %v, %d bytes; want 0600, %d", fi.Mode().Perm(), fi.Size(), KeySize)
	}
	if fi, err := os.Stat(o.Out); err != nil || fi.Size() != res.ImageSize {
		t.Errorf("image size = %v (%v), want %d", fi.Size(), err, res.ImageSize)
	}
	key, err := os.ReadFile(o.KeyOut)
	if err != nil {
		t.Fatal(err)
	}

	// Decrypt in Go and read the files back with debugfs.
	f, err := os.Open(o.Out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h, err := luks2.Parse(f)
	if err != nil {
		t.Fatal(err)
	}
	if h.UUID != res.UUID {
		t.Errorf("UUID = %q, result says %q", h.UUID, res.UUID)
	}
	plainPath := filepath.Join(t.TempDir(), "plain.ext4")
	pf, err := os.Create(plainPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := luks2.Decrypt(pf, f, h, key, res.FSSize); err != nil {
		t.Fatal(err)
	}
	pf.Close()
	for name, want := range testFiles {
		out, err := exec.Command(debugfs, "-R", "cat /"+name, plainPath).Output()
		if err != nil {
			t.Fatalf("debugfs cat /%s: %v", name, err)
		}
		if string(out) != want {
			t.Errorf("/%s in the decrypted file system = %.40q (%d bytes), want %.40q (%d bytes)", name, out, len(out), want, len(want))
		}
	}
	for path, want := range map[string]string{"/": "User:     0   Group:     0", "/bin/hello": "Mode:  0755"} {
		out, err := exec.Command(debugfs, "-R", "stat "+path, plainPath).Output()
		if err != nil || !strings.Contains(string(out), want) {
			t.Errorf("debugfs stat %s: %v; want %q in\n%s", path, err, want, out)
		}
	}
	// The plaintext is nowhere in the image.
	img, err := os.ReadFile(o.Out)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(img, []byte("hello from the encrypted disk")) || bytes.Contains(img, []byte("0123456789abcdef0123")) {
		t.Error("the image contains plaintext file contents")
	}

	// cryptsetup agrees.
	cs := tool(t, "cryptsetup", "cryptsetup-bin")
	if out, err := exec.Command(cs, "luksDump", o.Out).CombinedOutput(); err != nil || !strings.Contains(string(out), res.UUID) {
		t.Errorf("cryptsetup luksDump: %v\n%s", err, out)
	}
	if out, err := exec.Command(cs, "open", "--test-passphrase", "--key-file", o.KeyOut, o.Out).CombinedOutput(); err != nil {
		t.Errorf("cryptsetup open --test-passphrase --key-file KEY: %v\n%s", err, out)
	}
}

func TestEncryptRefusesOverwrite(t *testing.T) {
	needMkfs(t)
	root := makeTree(t)
	for _, existing := range []string{"disk.img", "disk.key"} {
		t.Run(existing, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, existing)
			if err := os.WriteFile(p, []byte("precious"), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Encrypt(context.Background(), testOptions(root, dir))
			if err == nil || !strings.Contains(err.Error(), "already exists (use --force") {
				t.Errorf("Encrypt over an existing %s = %v, want an already-exists error", existing, err)
			}
			if d := cmp.Diff([]string{existing}, dirNames(t, dir)); d != "" {
				t.Errorf("directory after the refusal (-want +got):\n%s", d)
			}
			if b, _ := os.ReadFile(p); string(b) != "precious" {
				t.Errorf("%s was modified: %q", existing, b)
			}
			o := testOptions(root, dir)
			o.Force = true
			if _, err := Encrypt(context.Background(), o); err != nil {
				t.Errorf("Encrypt --force: %v", err)
			}
			if b, _ := os.ReadFile(p); string(b) == "precious" {
				t.Errorf("--force did not replace %s", existing)
			}
		})
	}
}

func TestEncryptFailures(t *testing.T) {
	needMkfs(t)
	root := makeTree(t)
	aFile := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(aFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		edit func(o *Options)
		want string
		is   error
	}{
		{"missing rootfs", func(o *Options) { o.RootFS = filepath.Join(root, "nope") }, "root file system directory: stat", os.ErrNotExist},
		{"rootfs is a file", func(o *Options) { o.RootFS = aFile }, "is not a directory", nil},
		{"out dir missing", func(o *Options) { o.Out = filepath.Join(o.Out, "..", "nodir", "disk.img") }, "--out", os.ErrNotExist},
		{"out dir is a file", func(o *Options) { o.Out = filepath.Join(aFile, "disk.img") }, "is not a directory", nil},
		{"key dir missing", func(o *Options) { o.KeyOut = filepath.Join(filepath.Dir(o.KeyOut), "nodir", "k") }, "--key-out", os.ErrNotExist},
		{"same file", func(o *Options) { o.KeyOut = o.Out }, "the same file", nil},
		{"mkfs missing", func(o *Options) { o.Mkfs = "/nonexistent/mkfs.ext4" }, "e2fsprogs", ErrMkfsMissing},
		{"too small", func(o *Options) {
			big := filepath.Join(o.RootFS, "..", "bigroot")
			os.MkdirAll(big, 0o755)
			os.WriteFile(filepath.Join(big, "big"), bytes.Repeat([]byte{1}, 3<<20), 0o644)
			o.RootFS, o.Size = big, 2<<20
		}, "--size 2 MiB is too small for", nil},
		{"bad randomness", func(o *Options) { o.Rand = bytes.NewReader(make([]byte, 10)) }, "generating the volume key", nil},
		{"cancelled", nil, "context canceled", context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			o := testOptions(root, dir)
			ctx := context.Background()
			if tt.edit != nil {
				tt.edit(&o)
			} else {
				c, cancel := context.WithCancel(ctx)
				cancel()
				ctx = c
			}
			_, err := Encrypt(ctx, o)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Encrypt = %v, want an error containing %q", err, tt.want)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("errors.Is(%v, %v) = false", err, tt.is)
			}
			if names := dirNames(t, dir); len(names) != 0 {
				t.Errorf("files left behind after a failure: %v", names)
			}
		})
	}
}

func TestDefaultSize(t *testing.T) {
	tests := []struct{ tree, want int64 }{
		{0, MinSize},
		{10 << 20, MinSize},      // 13 + 16 = 29 MiB → 32
		{100 << 20, 146 << 20},   // 130 + 16
		{100<<20 + 1, 147 << 20}, // rounds up
		{1 << 30, 1348 << 20},    // 1024 + 307.2 + 16 = 1347.2 MiB, rounded up
	}
	for _, tt := range tests {
		if got := DefaultSize(tt.tree); got != tt.want {
			t.Errorf("DefaultSize(%d) = %d (%d MiB), want %d (%d MiB)", tt.tree, got, got>>20, tt.want, tt.want>>20)
		}
	}
}

// Package image makes the tenant's encrypted disk image: an ext4 file
// system built from a directory (mkfs.ext4 -d) inside LUKS2
// (aes-xts-plain64, 512-bit volume key, 512-byte sectors, data at 16 MiB;
// see docs/disk.md), and the raw 64-byte volume key beside it. The guest
// agent opens the image with the same key, released by the key broker.
package image

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/greatjail/cvm/guest-agent/luks2"
)

// KeySize is the size of the volume key, in bytes.
const KeySize = 64

const (
	mib = 1 << 20
	// MinSize is the smallest default file-system size.
	MinSize = 32 * mib
)

// Options says what Encrypt makes.
type Options struct {
	// RootFS is the directory whose contents become the file system's
	// root (owned by 0:0; the files keep their own owners and modes).
	RootFS string
	// Out is the image to write, KeyOut the volume key file (mode 0600).
	Out, KeyOut string
	// Size is the size of the ext4 file system in bytes (rounded up to
	// 4 KiB); the image is luks2.DataOffset (16 MiB) larger. 0 chooses
	// DefaultSize of RootFS.
	Size int64
	// Force allows replacing existing Out and KeyOut files.
	Force bool
	// Progress receives one line per step of the long steps; nil is quiet.
	Progress io.Writer
	// Rand is the source of the volume key and LUKS2 salts; nil is
	// crypto/rand.Reader.
	Rand io.Reader
	// Mkfs is the mkfs.ext4 program; "" looks for mkfs.ext4 on PATH and
	// in /usr/sbin and /sbin.
	Mkfs string
	// Format tunes the LUKS2 header (tests lower the pbkdf2 iterations);
	// its Rand is ignored in favour of Rand above.
	Format luks2.FormatOptions
}

// Result describes what Encrypt wrote.
type Result struct {
	Out, KeyOut string
	// FSSize is the size of the ext4 file system; ImageSize of the image.
	FSSize, ImageSize int64
	// UUID is the LUKS2 header's UUID.
	UUID string
}

// ErrMkfsMissing is returned (wrapped) when mkfs.ext4 cannot be found.
var ErrMkfsMissing = errors.New("mkfs.ext4 not found (install the Debian package e2fsprogs)")

// DirSize returns the space the files under dir take, each counted in
// whole 4 KiB blocks (directories and symbolic links one block at least).
func DirSize(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		n := (fi.Size() + 4095) / 4096 * 4096
		if n == 0 || !fi.Mode().IsRegular() {
			n = max(n, 4096)
		}
		total += n
		return nil
	})
	return total, err
}

// DefaultSize is the file-system size Encrypt picks for a tree of
// treeSize bytes: ×1.3 + 16 MiB, rounded up to a MiB, at least MinSize.
func DefaultSize(treeSize int64) int64 {
	n := treeSize + treeSize*3/10 + 16*mib
	n = (n + mib - 1) / mib * mib
	return max(n, MinSize)
}

func findMkfs(p string) (string, error) {
	if p != "" {
		if _, err := exec.LookPath(p); err != nil {
			return "", fmt.Errorf("image: %s: %w", p, ErrMkfsMissing)
		}
		return p, nil
	}
	for _, c := range []string{"mkfs.ext4", "/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4"} {
		if path, err := exec.LookPath(c); err == nil {
			return path, nil
		}
	}
	return "", fmt.Errorf("image: %w", ErrMkfsMissing)
}

func (o *Options) progress(format string, a ...any) {
	if o.Progress != nil {
		fmt.Fprintf(o.Progress, format+"\n", a...)
	}
}

// checkTarget refuses an existing path unless force, and a missing or
// non-directory parent.
func checkTarget(flag, path string, force bool) error {
	if path == "" {
		return fmt.Errorf("image: no %s file given", flag)
	}
	dir := filepath.Dir(path)
	if fi, err := os.Stat(dir); err != nil {
		return fmt.Errorf("image: %s %s: the directory %s: %w", flag, path, dir, err)
	} else if !fi.IsDir() {
		return fmt.Errorf("image: %s %s: %s is not a directory", flag, path, dir)
	}
	fi, err := os.Lstat(path)
	switch {
	case err == nil && fi.IsDir():
		return fmt.Errorf("image: %s %s is a directory", flag, path)
	case err == nil && !force:
		return fmt.Errorf("image: %s %s already exists (use --force to replace it)", flag, path)
	case err != nil && !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("image: %s %s: %w", flag, path, err)
	}
	return nil
}

// Encrypt builds the ext4 file system of o.RootFS, encrypts it into a
// LUKS2 image at o.Out under a new random volume key, and writes the key to
// o.KeyOut. Both files appear complete or not at all: they are written to
// temporary files in their directories and renamed at the end; on failure
// nothing is left behind. The plaintext file system is made in a temporary
// file in Out's directory and removed.
func Encrypt(ctx context.Context, o Options) (res *Result, err error) {
	fi, err := os.Stat(o.RootFS)
	if err != nil {
		return nil, fmt.Errorf("image: root file system directory: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("image: root file system %s is not a directory", o.RootFS)
	}
	if err := checkTarget("--out", o.Out, o.Force); err != nil {
		return nil, err
	}
	if err := checkTarget("--key-out", o.KeyOut, o.Force); err != nil {
		return nil, err
	}
	if a, b := filepath.Clean(o.Out), filepath.Clean(o.KeyOut); a == b {
		return nil, fmt.Errorf("image: --out and --key-out are the same file %s", a)
	}
	mkfs, err := findMkfs(o.Mkfs)
	if err != nil {
		return nil, err
	}
	tree, err := DirSize(o.RootFS)
	if err != nil {
		return nil, fmt.Errorf("image: measuring %s: %w", o.RootFS, err)
	}
	need := DefaultSize(tree)
	size := o.Size
	if size < 0 {
		return nil, fmt.Errorf("image: negative size %d", size)
	}
	if size == 0 {
		size = need
	}
	size = (size + 4095) / 4096 * 4096

	rnd := o.Rand
	if rnd == nil {
		rnd = rand.Reader
	}
	var cleanup []func()
	defer func() {
		if err != nil {
			for _, f := range cleanup {
				f()
			}
		}
	}()
	tempIn := func(path, what string) (*os.File, error) {
		f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
		if err != nil {
			return nil, fmt.Errorf("image: cannot write the %s in %s: %w", what, filepath.Dir(path), err)
		}
		cleanup = append(cleanup, func() { f.Close(); os.Remove(f.Name()) })
		return f, nil
	}

	// 1. The plaintext file system.
	plain, err := tempIn(o.Out, "temporary file system")
	if err != nil {
		return nil, err
	}
	defer func() { plain.Close(); os.Remove(plain.Name()) }()
	o.progress("cvm: making the ext4 file system (%d MiB) from %s", size/mib, o.RootFS)
	cmd := exec.CommandContext(ctx, mkfs, "-q", "-F", "-d", o.RootFS, "-E", "root_owner=0:0", "-T", "default",
		plain.Name(), strconv.FormatInt(size/1024, 10)+"k")
	if out, err := cmd.CombinedOutput(); err != nil {
		msg := strings.ReplaceAll(strings.TrimSpace(string(out)), "\n", "; ")
		if o.Size != 0 && size < need {
			return nil, fmt.Errorf("image: --size %d MiB is too small for %s: it needs about %d MiB (%d bytes, the size chosen without --size); mkfs.ext4: %s",
				size/mib, o.RootFS, need/mib, need, msg)
		}
		return nil, fmt.Errorf("image: mkfs.ext4 -d %s: %w: %s", o.RootFS, err, msg)
	}

	// 2. The key.
	key := make([]byte, KeySize)
	defer clear(key)
	if _, err := io.ReadFull(rnd, key); err != nil {
		return nil, fmt.Errorf("image: generating the volume key: %w", err)
	}

	// 3. The image: header, then the encrypted file system.
	img, err := tempIn(o.Out, "image")
	if err != nil {
		return nil, err
	}
	fo := o.Format
	fo.Rand = rnd
	h, err := luks2.Format(img, key, fo)
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	if _, err := plain.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	o.progress("cvm: encrypting %d MiB into %s", size/mib, o.Out)
	pr := &progressReader{r: plain, total: size, report: func(pct int64) { o.progress("cvm: encrypted %d%%", pct) }}
	if o.Progress == nil {
		pr.report = nil
	}
	n, err := luks2.Encrypt(img, h, key, ctxReader{ctx, pr})
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	if n != size {
		return nil, fmt.Errorf("image: encrypted %d bytes, but the file system is %d bytes", n, size)
	}
	if err := img.Chmod(0o644); err != nil { // ciphertext: readable by anyone
		return nil, fmt.Errorf("image: %w", err)
	}
	if err := img.Sync(); err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	if err := img.Close(); err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}

	// 4. The key file.
	kf, err := tempIn(o.KeyOut, "key file")
	if err != nil {
		return nil, err
	}
	if err := kf.Chmod(0o600); err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	if _, err := kf.Write(key); err != nil {
		return nil, fmt.Errorf("image: writing the key file: %w", err)
	}
	if err := kf.Sync(); err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	if err := kf.Close(); err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}

	// 5. Publish both.
	if err := publish(img.Name(), o.Out, o.Force); err != nil {
		return nil, err
	}
	if err := publish(kf.Name(), o.KeyOut, o.Force); err != nil {
		os.Remove(o.Out)
		return nil, err
	}
	return &Result{Out: o.Out, KeyOut: o.KeyOut, FSSize: size, ImageSize: luks2.DataOffset + size, UUID: h.UUID}, nil
}

// publish moves tmp to dst: with force by rename (replacing dst), without
// by hard link, which fails if dst appeared meanwhile.
func publish(tmp, dst string, force bool) error {
	if force {
		if err := os.Rename(tmp, dst); err != nil {
			return fmt.Errorf("image: %w", err)
		}
		return nil
	}
	if err := os.Link(tmp, dst); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("image: %s already exists (use --force to replace it)", dst)
		}
		return fmt.Errorf("image: %w", err)
	}
	os.Remove(tmp)
	return nil
}

// progressReader reports each 25% of total read.
type progressReader struct {
	r           io.Reader
	total, done int64
	next        int64 // next percentage to report
	report      func(pct int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.done += int64(n)
	if p.report != nil && p.total > 0 {
		for pct := p.done * 100 / p.total; p.next <= pct && p.next <= 100; p.next += 25 {
			if p.next > 0 {
				p.report(p.next)
			}
		}
	}
	return n, err
}

// ctxReader stops reading when ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(b []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(b)
}

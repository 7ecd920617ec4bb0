// Package rootimage turns a container's root file system, mounted on the
// host, into a read-only file system image: the block device through which
// the root reaches the pod's microVM, where the agent mounts it read-only
// under a writable tmpfs layer (guest-agent/containers). ext4 images are
// made with mkfs.ext4 -d (Debian e2fsprogs), erofs images with mkfs.erofs
// (Debian erofs-utils); the guest kernel needs ext4 (built into the Debian
// cloud kernels) or erofs.ko, and overlay.ko.
package rootimage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
)

// Format is an image file system.
type Format string

// The formats Make writes.
const (
	EXT4  Format = "ext4"
	EROFS Format = "erofs"
)

// ErrTool means the format's mkfs tool is not installed.
var ErrTool = errors.New("rootimage: mkfs tool not found")

// tool is the command that writes format f.
func (f Format) tool() (string, error) {
	switch f {
	case EXT4:
		return "mkfs.ext4", nil
	case EROFS:
		return "mkfs.erofs", nil
	}
	return "", fmt.Errorf("rootimage: format %q (want ext4 or erofs)", f)
}

// Available reports whether Make can write format f here.
func Available(f Format) error {
	t, err := f.tool()
	if err != nil {
		return err
	}
	if _, err := exec.LookPath(t); err != nil {
		return fmt.Errorf("%w: %s (%v)", ErrTool, t, err)
	}
	return nil
}

// Usage is what a directory tree holds, for sizing an ext4 image.
type Usage struct {
	Bytes uint64 // file contents rounded up to 4 KiB blocks
	Nodes uint64 // files, directories, links, devices
}

// Measure walks dir without following symbolic links.
func Measure(dir string) (Usage, error) {
	var u Usage
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		u.Nodes++
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			u.Bytes += (uint64(fi.Size()) + 4095) &^ 4095
		}
		return nil
	})
	if err != nil {
		return Usage{}, fmt.Errorf("rootimage: measure %s: %w", dir, err)
	}
	return u, nil
}

// ext4Size is the image size for u: the data, 256-byte inodes, directory
// blocks, a 25 % margin, and at least 8 MiB; a multiple of 1 MiB.
func ext4Size(u Usage) (bytes, inodes uint64) {
	inodes = u.Nodes + u.Nodes/4 + 64
	size := u.Bytes + inodes*256 + u.Nodes*4096/8
	size += size / 4
	const mib = 1 << 20
	size = max((size+mib-1)/mib*mib, 8*mib)
	return size, inodes
}

// Make writes an image of dir in format f to out (replaced if present).
func Make(ctx context.Context, f Format, dir, out string) error {
	if err := Available(f); err != nil {
		return err
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("rootimage: %s is not a directory (%v)", dir, err)
	}
	if err := os.Remove(out); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("rootimage: %w", err)
	}
	var cmd *exec.Cmd
	switch f {
	case EXT4:
		u, err := Measure(dir)
		if err != nil {
			return err
		}
		size, inodes := ext4Size(u)
		// No journal (the image is mounted read-only), no reserved
		// blocks, the tree's owners and modes as they are.
		cmd = exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", "-b", "4096", "-m", "0", "-O", "^has_journal",
			"-N", strconv.FormatUint(inodes, 10), "-L", "cvm-root", "-d", dir, out, strconv.FormatUint(size/1024, 10)+"k")
	case EROFS:
		cmd = exec.CommandContext(ctx, "mkfs.erofs", "-T0", out, dir)
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		os.Remove(out)
		return fmt.Errorf("rootimage: %s of %s: %w: %s", cmd.Args[0], dir, err, b)
	}
	if err := padBlocks(out); err != nil {
		os.Remove(out)
		return err
	}
	return nil
}

// Block is the unit image sizes are padded to: a disk shows its image
// whole, and exactly as many bytes as the file has, only if the file is
// whole sectors (the builtin VMM rounds a disk down to 512-byte sectors,
// QEMU up), and the guest checks a hot-plugged disk's size.
const Block = 4096

// padBlocks extends the file at path with zeros to a multiple of Block.
// mkfs.ext4 writes whole blocks already; mkfs.erofs's last block may be
// short.
func padBlocks(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("rootimage: %w", err)
	}
	if r := fi.Size() % Block; r != 0 {
		if err := os.Truncate(path, fi.Size()+Block-r); err != nil {
			return fmt.Errorf("rootimage: pad %s to whole %d-byte blocks: %w", path, Block, err)
		}
	}
	return nil
}

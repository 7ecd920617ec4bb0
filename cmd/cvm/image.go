package main

import (
	"fmt"
	"math"

	"github.com/spf13/cobra"

	"github.com/greatjail/cvm/launcher/image"
)

func newImage() *cobra.Command {
	c := &cobra.Command{
		Use:   "image",
		Short: "Make encrypted disk images for confidential microVMs",
		Args:  cobra.ArbitraryArgs,
		RunE:  groupRun,
	}
	c.AddCommand(newImageEncrypt())
	return c
}

type imageEncryptOptions struct {
	rootfs, out, keyOut, size string
	force, quiet              bool
}

func newImageEncrypt() *cobra.Command {
	var o imageEncryptOptions
	c := &cobra.Command{
		Use:   "encrypt --rootfs DIR --out FILE --key-out FILE [flags]",
		Short: "Make an ext4 file system from a directory, encrypted with LUKS2",
		Long: `Encrypt makes the ext4 file system of --rootfs (mkfs.ext4 -d, from the Debian
package e2fsprogs), encrypts it into a LUKS2 image (aes-xts-plain64, 512-bit
key, 512-byte sectors, data at 16 MiB) under a new random volume key, and
writes the raw 64-byte key to --key-out with mode 0600. Register that key
with the key broker; the guest agent unlocks the disk with it. The image
also opens with cryptsetup: cryptsetup open --key-file KEY IMAGE NAME.

--size is the size of the file system (the image is 16 MiB larger); by
default it is the size of the tree ×1.3 + 16 MiB, at least 32 MiB.
Existing output files are never replaced without --force, and on failure
nothing is left behind. Progress goes to stderr unless --quiet.

It exits 0 on success, 1 when the image cannot be made (the message names
the cause), and 2 on usage errors.`,
		Example: `  cvm image encrypt --rootfs ./rootfs --out disk.img --key-out disk.key
  cvm image encrypt --rootfs ./rootfs --out disk.img --key-out disk.key --size 1G --force --quiet`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error { return runImageEncrypt(c, o) },
	}
	f := c.Flags()
	f.StringVar(&o.rootfs, "rootfs", "", "`DIR`ectory whose contents become the file system")
	f.StringVar(&o.out, "out", "", "encrypted image `FILE` to write")
	f.StringVar(&o.keyOut, "key-out", "", "`FILE` to write the 64-byte volume key to (mode 0600)")
	f.StringVar(&o.size, "size", "", "file system `SIZE` (bytes, or with a K, M or G suffix; default: tree size ×1.3 + 16M, at least 32M)")
	f.BoolVar(&o.force, "force", false, "replace existing --out and --key-out files")
	f.BoolVar(&o.quiet, "quiet", false, "print no progress")
	return c
}

func runImageEncrypt(c *cobra.Command, o imageEncryptOptions) error {
	usage := func(format string, a ...any) error {
		return usageError{fmt.Errorf("%s (see '%s --help')", fmt.Sprintf(format, a...), c.CommandPath())}
	}
	switch {
	case o.rootfs == "":
		return usage("--rootfs is required")
	case o.out == "":
		return usage("--out is required")
	case o.keyOut == "":
		return usage("--key-out is required")
	}
	opts := image.Options{RootFS: o.rootfs, Out: o.out, KeyOut: o.keyOut, Force: o.force}
	if o.size != "" {
		n, err := parseSize(o.size)
		if err != nil {
			return usage("--size: %v", err)
		}
		if n > math.MaxInt64/2 {
			return usage("--size %q is too large", o.size)
		}
		opts.Size = int64(n)
	}
	if !o.quiet {
		opts.Progress = c.ErrOrStderr()
	}
	res, err := image.Encrypt(c.Context(), opts)
	if err != nil {
		return err
	}
	if !o.quiet {
		fmt.Fprintf(c.ErrOrStderr(), "cvm: wrote %s (%d MiB, LUKS2 UUID %s) and its key %s\n", res.Out, res.ImageSize>>20, res.UUID, res.KeyOut)
	}
	return nil
}

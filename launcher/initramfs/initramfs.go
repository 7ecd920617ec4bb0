// Package initramfs writes reproducible initramfs archives: cpio in the
// "newc" format the Linux kernel unpacks at boot.
//
// The same set of entries always gives the same bytes, whatever order they
// were added in: entries are written sorted by path (so every directory comes
// before its contents), with mtime 0, uid and gid 0, inode numbers assigned in
// that order and link counts computed from the tree. Parent directories of
// an entry are implied (mode 0755) unless added explicitly with AddDir. The
// archive is uncompressed; a caller that wants gzip wraps the writer.
package initramfs

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"path"
	"sort"
	"strings"
)

// ErrInvalid is wrapped by every error about a bad name, mode or conflicting
// entry.
var ErrInvalid = errors.New("initramfs: invalid entry")

// Unix file type bits as cpio stores them in c_mode.
const (
	typeMask    = 0o170000
	modeDir     = 0o040000
	modeChar    = 0o020000
	modeRegular = 0o100000
	modeSymlink = 0o120000
	modeSetuid  = 0o4000
	modeSetgid  = 0o2000
	modeSticky  = 0o1000
)

// impliedDirMode is the mode of a parent directory nobody added.
const impliedDirMode = 0o755

type entry struct {
	mode    uint32 // Unix type and permission bits
	data    []byte // file contents or symlink target
	rmajor  uint32
	rminor  uint32
	implied bool // a directory created only as some entry's parent
}

// Archive is an initramfs being assembled. The zero value is not usable; call
// New. An Archive is not safe for concurrent use.
type Archive struct {
	entries map[string]*entry
}

// New returns an empty archive.
func New() *Archive {
	return &Archive{entries: map[string]*entry{}}
}

// AddFile adds a regular file. The archive keeps data (it does not copy it)
// until WriteTo; the caller must not modify it. mode holds permission bits
// and optionally setuid, setgid and sticky (as fs.ModeSetuid… or as the Unix
// bits 0o4000…), no file type.
func (a *Archive) AddFile(name string, data []byte, mode fs.FileMode) error {
	if uint64(len(data)) > math.MaxUint32 {
		return fmt.Errorf("%w: %s: %d bytes is too large for cpio newc (max 4 GiB - 1)", ErrInvalid, name, len(data))
	}
	m, err := unixMode(name, mode, 0, modeRegular)
	if err != nil {
		return err
	}
	return a.add(name, &entry{mode: m, data: data})
}

// AddDir adds a directory. Adding a directory that so far exists only as an
// implied parent sets its mode; adding one twice is an error.
func (a *Archive) AddDir(name string, mode fs.FileMode) error {
	m, err := unixMode(name, mode, fs.ModeDir, modeDir)
	if err != nil {
		return err
	}
	return a.add(name, &entry{mode: m})
}

// AddCharDev adds a character device node with the given device number.
// mode holds permission bits (fs.ModeDevice|fs.ModeCharDevice may be set).
func (a *Archive) AddCharDev(name string, mode fs.FileMode, major, minor uint32) error {
	m, err := unixMode(name, mode, fs.ModeDevice|fs.ModeCharDevice, modeChar)
	if err != nil {
		return err
	}
	return a.add(name, &entry{mode: m, rmajor: major, rminor: minor})
}

// AddSymlink adds a symbolic link to target (mode 0777, as Linux has it).
func (a *Archive) AddSymlink(name, target string) error {
	if target == "" || strings.IndexByte(target, 0) >= 0 {
		return fmt.Errorf("%w: %s: symlink target %q is empty or contains NUL", ErrInvalid, name, target)
	}
	return a.add(name, &entry{mode: modeSymlink | 0o777, data: []byte(target)})
}

// unixMode converts mode to c_mode bits. Type bits in mode other than
// allowedType are rejected.
func unixMode(name string, mode, allowedType fs.FileMode, typ uint32) (uint32, error) {
	if t := mode.Type(); t != 0 && t != allowedType {
		return 0, fmt.Errorf("%w: %s: mode %v has the wrong file type", ErrInvalid, name, mode)
	}
	// fs.FileMode leaves bits 9-11 unused; accept them as the Unix
	// setuid, setgid and sticky bits (0o4000, 0o2000, 0o1000) too.
	const unixSpecial = modeSetuid | modeSetgid | modeSticky
	if extra := mode &^ (fs.ModeType | fs.ModePerm | unixSpecial | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky); extra != 0 {
		return 0, fmt.Errorf("%w: %s: unsupported mode bits %v", ErrInvalid, name, extra)
	}
	m := typ | uint32(mode&(fs.ModePerm|unixSpecial))
	if mode&fs.ModeSetuid != 0 {
		m |= modeSetuid
	}
	if mode&fs.ModeSetgid != 0 {
		m |= modeSetgid
	}
	if mode&fs.ModeSticky != 0 {
		m |= modeSticky
	}
	return m, nil
}

// cleanName returns name without its leading slashes, or an error if it is
// empty, not canonical (".", "..", "//", trailing "/") or contains NUL.
func cleanName(name string) (string, error) {
	n := strings.TrimLeft(name, "/")
	switch {
	case n == "":
		return "", fmt.Errorf("%w: empty name %q", ErrInvalid, name)
	case strings.IndexByte(n, 0) >= 0:
		return "", fmt.Errorf("%w: name %q contains NUL", ErrInvalid, name)
	}
	for _, c := range strings.Split(n, "/") {
		switch c {
		case "..":
			return "", fmt.Errorf("%w: name %q contains \"..\"", ErrInvalid, name)
		case ".", "":
			return "", fmt.Errorf("%w: name %q is not canonical (\".\", \"//\" or trailing \"/\")", ErrInvalid, name)
		}
	}
	return n, nil
}

func (a *Archive) add(name string, e *entry) error {
	n, err := cleanName(name)
	if err != nil {
		return err
	}
	if old, ok := a.entries[n]; ok {
		if old.implied && e.mode&typeMask == modeDir {
			old.mode, old.implied = e.mode, false
			return nil
		}
		if old.implied {
			return fmt.Errorf("%w: %s: already a directory (parent of another entry)", ErrInvalid, name)
		}
		return fmt.Errorf("%w: %s: duplicate entry", ErrInvalid, name)
	}
	// Every parent must be a directory; create the missing ones. Check all
	// of them before changing anything, so a failed add leaves no trace.
	var missing []string
	for p := path.Dir(n); p != "."; p = path.Dir(p) {
		pe, ok := a.entries[p]
		if !ok {
			missing = append(missing, p)
			continue
		}
		if pe.mode&typeMask != modeDir {
			return fmt.Errorf("%w: %s: parent %s is not a directory", ErrInvalid, name, p)
		}
	}
	for _, p := range missing {
		a.entries[p] = &entry{mode: modeDir | impliedDirMode, implied: true}
	}
	a.entries[n] = e
	return nil
}

// WriteTo writes the archive to w: the entries sorted by path, then the
// TRAILER!!! entry, padded with zeros to a multiple of 512 bytes. It returns
// the number of bytes written.
func (a *Archive) WriteTo(w io.Writer) (int64, error) {
	names := make([]string, 0, len(a.entries))
	for n := range a.entries {
		names = append(names, n)
	}
	// Plain byte order puts every directory before its contents: a
	// directory's name is a prefix of theirs.
	sort.Strings(names)
	// A directory's link count is 2 ("." and its entry in the parent) plus
	// one per subdirectory (its ".."); anything else has one link.
	nlink := map[string]uint32{}
	for _, n := range names {
		if a.entries[n].mode&typeMask == modeDir {
			nlink[n] += 2
			if p := path.Dir(n); p != "." {
				nlink[p]++
			}
		}
	}
	cw := &countWriter{w: w}
	bw := bufio.NewWriterSize(cw, 64<<10)
	var off int64
	for i, n := range names {
		e := a.entries[n]
		l := nlink[n]
		if l == 0 {
			l = 1
		}
		off += writeEntry(bw, n, e, uint32(i+1), l)
	}
	off += writeEntry(bw, "TRAILER!!!", &entry{}, 0, 1)
	if pad := (512 - off%512) % 512; pad != 0 {
		bw.Write(make([]byte, pad))
	}
	// bufio.Writer keeps the first error and returns it from Flush.
	if err := bw.Flush(); err != nil {
		return cw.n, fmt.Errorf("initramfs: write: %w", err)
	}
	return cw.n, nil
}

// writeEntry writes one newc header, name and data, each padded to 4 bytes,
// and returns how many bytes that is.
func writeEntry(bw *bufio.Writer, name string, e *entry, ino, nlink uint32) int64 {
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		ino, e.mode, 0, 0, nlink, 0, len(e.data), 0, 0, e.rmajor, e.rminor, len(name)+1, 0)
	namePad := 1 + pad4(len(hdr)+len(name)+1)
	dataPad := pad4(len(e.data))
	bw.WriteString(hdr)
	bw.WriteString(name)
	bw.Write(zeros[:namePad])
	bw.Write(e.data)
	bw.Write(zeros[:dataPad])
	return int64(len(hdr) + len(name) + namePad + len(e.data) + dataPad)
}

var zeros [4]byte

func pad4(n int) int { return (4 - n%4) % 4 }

// countWriter counts the bytes written to w.
type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

package initramfs

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// op adds one entry to an archive.
type op func(*Archive) error

func file(name, data string, mode fs.FileMode) op {
	return func(a *Archive) error { return a.AddFile(name, []byte(data), mode) }
}
func dir(name string, mode fs.FileMode) op {
	return func(a *Archive) error { return a.AddDir(name, mode) }
}
func chardev(name string, mode fs.FileMode, major, minor uint32) op {
	return func(a *Archive) error { return a.AddCharDev(name, mode, major, minor) }
}
func symlink(name, target string) op {
	return func(a *Archive) error { return a.AddSymlink(name, target) }
}

// sample is an initramfs shaped like the launcher's.
var sample = []op{
	file("/init", "\x7fELF agent", 0o755),
	file("/etc/cvm/launch.json", `{"version":1}`, 0o644),
	file("etc/cvm/modules", "dm_mod\ndm_crypt\n", 0o644),
	file("/lib/modules/dm_mod.ko", strings.Repeat("m", 1001), 0o644),
	file("/lib/modules/dm_crypt.ko", "", 0o600),
	dir("/dev", 0o755),
	chardev("/dev/console", 0o600, 5, 1),
	dir("/proc", 0o555),
	dir("/sys", 0o555),
	dir("/run", 0o755),
	dir("/tmp", 0o1777),
	dir("/mnt", 0o700),
	dir("/etc", 0o750), // after its implied creation by etc/cvm/...
	symlink("/bin/sh", "/init"),
	file("/bin/su", "x", 0o755|fs.ModeSetuid),
	dir("/var/tmp", 0o777|fs.ModeSticky),
}

func build(t *testing.T, ops []op) []byte {
	t.Helper()
	a := New()
	for i, o := range ops {
		if err := o(a); err != nil {
			t.Fatalf("op %d: %v", i, err)
		}
	}
	var buf bytes.Buffer
	n, err := a.WriteTo(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(buf.Len()) {
		t.Errorf("WriteTo returned %d, wrote %d bytes", n, buf.Len())
	}
	return buf.Bytes()
}

// hdr is one parsed newc header (test-only reader).
type hdr struct {
	Name                       string
	Ino, Mode, UID, GID, Nlink uint32
	Mtime, Size                uint32
	Major, Minor, RMajor, RMin uint32
	Check                      uint32
	Data                       string
}

// parse reads the archive back, checking magic, padding and the trailer.
func parse(t *testing.T, b []byte) []hdr {
	t.Helper()
	if len(b)%512 != 0 {
		t.Errorf("archive is %d bytes, not a multiple of 512", len(b))
	}
	var out []hdr
	off := 0
	for {
		if off+110 > len(b) {
			t.Fatalf("truncated header at %d", off)
		}
		h := b[off : off+110]
		if string(h[:6]) != "070701" {
			t.Fatalf("bad magic %q at %d", h[:6], off)
		}
		var f [13]uint32
		for i := range f {
			v, err := strconv.ParseUint(string(h[6+8*i:14+8*i]), 16, 32)
			if err != nil {
				t.Fatalf("field %d at %d: %v", i, off, err)
			}
			f[i] = uint32(v)
		}
		namesize := int(f[11])
		name := string(b[off+110 : off+110+namesize-1])
		if b[off+110+namesize-1] != 0 {
			t.Fatalf("%s: name not NUL-terminated", name)
		}
		off += 110 + namesize
		off += (4 - off%4) % 4
		data := string(b[off : off+int(f[6])])
		off += int(f[6])
		off += (4 - off%4) % 4
		if name == "TRAILER!!!" {
			if strings.Trim(string(b[off:]), "\x00") != "" {
				t.Errorf("non-zero bytes after the trailer")
			}
			return out
		}
		out = append(out, hdr{Name: name, Ino: f[0], Mode: f[1], UID: f[2], GID: f[3], Nlink: f[4],
			Mtime: f[5], Size: f[6], Major: f[7], Minor: f[8], RMajor: f[9], RMin: f[10], Check: f[12], Data: data})
	}
}

func TestWriteToEntries(t *testing.T) {
	got := parse(t, build(t, sample))
	e := func(name string, mode, nlink uint32, data string) hdr {
		return hdr{Name: name, Mode: mode, Nlink: nlink, Size: uint32(len(data)), Data: data}
	}
	want := []hdr{
		e("bin", 0o40755, 2, ""),
		e("bin/sh", 0o120777, 1, "/init"),
		e("bin/su", 0o104755, 1, "x"),
		e("dev", 0o40755, 2, ""),
		e("dev/console", 0o20600, 1, ""),
		e("etc", 0o40750, 3, ""),
		e("etc/cvm", 0o40755, 2, ""),
		e("etc/cvm/launch.json", 0o100644, 1, `{"version":1}`),
		e("etc/cvm/modules", 0o100644, 1, "dm_mod\ndm_crypt\n"),
		e("init", 0o100755, 1, "\x7fELF agent"),
		e("lib", 0o40755, 3, ""),
		e("lib/modules", 0o40755, 2, ""),
		e("lib/modules/dm_crypt.ko", 0o100600, 1, ""),
		e("lib/modules/dm_mod.ko", 0o100644, 1, strings.Repeat("m", 1001)),
		e("mnt", 0o40700, 2, ""),
		e("proc", 0o40555, 2, ""),
		e("run", 0o40755, 2, ""),
		e("sys", 0o40555, 2, ""),
		e("tmp", 0o41777, 2, ""),
		e("var", 0o40755, 3, ""),
		e("var/tmp", 0o41777, 2, ""),
	}
	for i := range want {
		want[i].Ino = uint32(i + 1)
	}
	want[4].RMajor, want[4].RMin = 5, 1
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("entries (-want +got):\n%s", diff)
	}
}

func TestWriteToEmpty(t *testing.T) {
	got := build(t, nil)
	want := "070701" + strings.Repeat("00000000", 4) + "00000001" + strings.Repeat("00000000", 6) + "0000000b" + "00000000" + "TRAILER!!!\x00"
	want += strings.Repeat("\x00", 512-len(want))
	if diff := cmp.Diff(want, string(got)); diff != "" {
		t.Errorf("empty archive (-want +got):\n%s", diff)
	}
}

// TestReproducible builds the sample in many insertion orders; every order
// must give the same bytes. (Orders that add /etc explicitly before or after
// its implied creation both count.)
func TestReproducible(t *testing.T) {
	want := build(t, sample)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 50 {
		ops := append([]op(nil), sample...)
		r.Shuffle(len(ops), func(i, j int) { ops[i], ops[j] = ops[j], ops[i] })
		if got := build(t, ops); !bytes.Equal(got, want) {
			t.Fatalf("order %d: archive differs", i)
		}
		// Writing the same archive twice gives the same bytes too.
	}
	a := New()
	for _, o := range sample {
		if err := o(a); err != nil {
			t.Fatal(err)
		}
	}
	var b1, b2 bytes.Buffer
	if _, err := a.WriteTo(&b1); err != nil {
		t.Fatal(err)
	}
	if _, err := a.WriteTo(&b2); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b1.Bytes(), b2.Bytes()) || !bytes.Equal(b1.Bytes(), want) {
		t.Error("writing one archive twice gave different bytes")
	}
}

func TestRejects(t *testing.T) {
	tests := []struct {
		name  string
		setup []op
		op    op
		want  string
	}{
		{"empty name", nil, file("", "x", 0o644), `empty name ""`},
		{"root", nil, dir("/", 0o755), `empty name "/"`},
		{"dotdot", nil, file("/a/../b", "x", 0o644), `contains ".."`},
		{"dotdot alone", nil, dir("..", 0o755), `contains ".."`},
		{"dot", nil, file("a/./b", "x", 0o644), "not canonical"},
		{"double slash", nil, file("a//b", "x", 0o644), "not canonical"},
		{"trailing slash", nil, dir("a/", 0o755), "not canonical"},
		{"NUL", nil, file("a\x00b", "x", 0o644), "contains NUL"},
		{"duplicate file", []op{file("/init", "a", 0o755)}, file("init", "b", 0o755), "init: duplicate entry"},
		{"duplicate dir", []op{dir("/dev", 0o755)}, dir("/dev", 0o755), "/dev: duplicate entry"},
		{"file over implied dir", []op{file("/a/b", "x", 0o644)}, file("/a", "y", 0o644), "/a: already a directory"},
		{"dev over implied dir", []op{file("/a/b", "x", 0o644)}, chardev("/a", 0o600, 1, 3), "/a: already a directory"},
		{"parent is a file", []op{file("/a", "x", 0o644)}, file("/a/b/c", "y", 0o644), "/a/b/c: parent a is not a directory"},
		{"parent is a symlink", []op{symlink("/bin", "usr/bin")}, file("/bin/sh", "y", 0o755), "parent bin is not a directory"},
		{"file with dir mode", nil, file("/a", "x", fs.ModeDir|0o755), "wrong file type"},
		{"dir with device mode", nil, dir("/a", fs.ModeDevice|0o755), "wrong file type"},
		{"block device mode", nil, chardev("/a", fs.ModeDevice|0o600, 8, 0), "wrong file type"},
		{"unsupported bits", nil, file("/a", "x", fs.ModeAppend|0o644), "unsupported mode bits"},
		{"empty symlink target", nil, symlink("/a", ""), "symlink target"},
		{"NUL symlink target", nil, symlink("/a", "b\x00"), "symlink target"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := New()
			for _, o := range tt.setup {
				if err := o(a); err != nil {
					t.Fatal(err)
				}
			}
			var before bytes.Buffer
			if _, err := a.WriteTo(&before); err != nil {
				t.Fatal(err)
			}
			err := tt.op(a)
			if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want ErrInvalid containing %q", err, tt.want)
			}
			var after bytes.Buffer
			if _, err := a.WriteTo(&after); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(before.Bytes(), after.Bytes()) {
				t.Error("the rejected entry changed the archive")
			}
		})
	}
}

func TestParentsImplied(t *testing.T) {
	got := parse(t, build(t, []op{file("/a/b/c/d", "x", 0o644)}))
	var names []string
	for _, h := range got {
		names = append(names, fmt.Sprintf("%s %o", h.Name, h.Mode))
	}
	want := []string{"a 40755", "a/b 40755", "a/b/c 40755", "a/b/c/d 100644"}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("entries (-want +got):\n%s", diff)
	}
}

type failWriter struct{ after int }

func (f *failWriter) Write(p []byte) (int, error) {
	if len(p) > f.after {
		n := f.after
		f.after = 0
		return n, errors.New("disk full")
	}
	f.after -= len(p)
	return len(p), nil
}

func TestWriteToError(t *testing.T) {
	a := New()
	if err := a.AddFile("/big", make([]byte, 200<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	n, err := a.WriteTo(&failWriter{after: 1000})
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("WriteTo error = %v, want disk full", err)
	}
	if n != 1000 {
		t.Errorf("WriteTo = %d bytes, want 1000", n)
	}
}

// TestDebianCpio lists and extracts the sample archive with GNU cpio and
// checks modes, symlinks and device nodes on disk.
func TestDebianCpio(t *testing.T) {
	cpio, err := exec.LookPath("cpio")
	if err != nil {
		t.Skip("cpio not installed (Debian package cpio)")
	}
	archive := build(t, sample)

	list := exec.Command(cpio, "-it", "--quiet")
	list.Stdin = bytes.NewReader(archive)
	out, err := list.Output()
	if err != nil {
		t.Fatalf("cpio -it: %v", err)
	}
	var want []string
	for _, h := range parse(t, archive) {
		want = append(want, h.Name)
	}
	if diff := cmp.Diff(want, strings.Fields(string(out))); diff != "" {
		t.Errorf("cpio -it (-want +got):\n%s", diff)
	}

	if os.Geteuid() != 0 {
		t.Skip("extracting device nodes with cpio -id needs root")
	}
	dst := t.TempDir()
	extract := exec.Command(cpio, "-idm", "--quiet", "--no-absolute-filenames")
	extract.Dir = dst
	extract.Stdin = bytes.NewReader(archive)
	if out, err := extract.CombinedOutput(); err != nil {
		t.Fatalf("cpio -idm: %v\n%s", err, out)
	}
	type node struct {
		Mode         string
		Data, Target string
		Rdev         string
	}
	got := map[string]node{}
	err = filepath.WalkDir(dst, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dst {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dst, p)
		n := node{Mode: fi.Mode().String()}
		switch {
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			n.Data = string(b)
		case fi.Mode()&fs.ModeSymlink != 0:
			if n.Target, err = os.Readlink(p); err != nil {
				return err
			}
		case fi.Mode()&fs.ModeCharDevice != 0:
			st := fi.Sys().(*syscall.Stat_t)
			n.Rdev = fmt.Sprintf("%d:%d", unixMajor(st.Rdev), unixMinor(st.Rdev))
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 || st.Gid != 0 {
			n.Mode += fmt.Sprintf(" owner %d:%d", st.Uid, st.Gid)
		}
		got[rel] = n
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	wantNodes := map[string]node{
		"bin":                     {Mode: "drwxr-xr-x"},
		"bin/sh":                  {Mode: "Lrwxrwxrwx", Target: "/init"},
		"bin/su":                  {Mode: "urwxr-xr-x", Data: "x"},
		"dev":                     {Mode: "drwxr-xr-x"},
		"dev/console":             {Mode: "Dcrw-------", Rdev: "5:1"},
		"etc":                     {Mode: "drwxr-x---"},
		"etc/cvm":                 {Mode: "drwxr-xr-x"},
		"etc/cvm/launch.json":     {Mode: "-rw-r--r--", Data: `{"version":1}`},
		"etc/cvm/modules":         {Mode: "-rw-r--r--", Data: "dm_mod\ndm_crypt\n"},
		"init":                    {Mode: "-rwxr-xr-x", Data: "\x7fELF agent"},
		"lib":                     {Mode: "drwxr-xr-x"},
		"lib/modules":             {Mode: "drwxr-xr-x"},
		"lib/modules/dm_crypt.ko": {Mode: "-rw-------"},
		"lib/modules/dm_mod.ko":   {Mode: "-rw-r--r--", Data: strings.Repeat("m", 1001)},
		"mnt":                     {Mode: "drwx------"},
		"proc":                    {Mode: "dr-xr-xr-x"},
		"run":                     {Mode: "drwxr-xr-x"},
		"sys":                     {Mode: "dr-xr-xr-x"},
		"tmp":                     {Mode: "dtrwxrwxrwx"},
		"var":                     {Mode: "drwxr-xr-x"},
		"var/tmp":                 {Mode: "dtrwxrwxrwx"},
	}
	if diff := cmp.Diff(wantNodes, got); diff != "" {
		t.Errorf("extracted tree (-want +got):\n%s", diff)
	}
}

// unixMajor and unixMinor decode a Linux dev_t.
func unixMajor(dev uint64) uint64 { return (dev>>8)&0xfff | (dev>>32)&^0xfff }
func unixMinor(dev uint64) uint64 { return dev&0xff | (dev>>12)&^0xff }

package containers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Create prepares container id from its OCI spec (config.json bytes) and
// root file system. Every mount made is undone if a later step fails.
func (m *Manager) Create(ctx context.Context, id string, ociSpec []byte, rootfs Rootfs) (err error) {
	if err := validID(id, false); err != nil {
		return err
	}
	spec, err := parseSpec(ociSpec)
	if err != nil {
		return fmt.Errorf("container %q: %w", id, err)
	}
	n := 0
	for _, v := range []string{rootfs.Device, rootfs.Serial, rootfs.Directory} {
		if v != "" {
			n++
		}
	}
	if n != 1 {
		return fmt.Errorf("%w: container %q needs exactly one of a rootfs device, disk serial or directory", ErrInvalid, id)
	}
	if rootfs.Size != 0 && rootfs.Serial == "" {
		return fmt.Errorf("%w: container %q: a rootfs disk size is only meaningful with a disk serial", ErrInvalid, id)
	}
	c := &container{id: id, spec: spec, dir: filepath.Join(m.dir, id), procs: map[string]*process{}}
	c.root = filepath.Join(c.dir, "rootfs")

	m.mu.Lock()
	if _, ok := m.containers[id]; ok {
		m.mu.Unlock()
		return fmt.Errorf("%w: container %q", ErrExists, id)
	}
	m.containers[id] = c // reserve the ID while mounting
	m.mu.Unlock()
	defer func() {
		if err != nil {
			if c.unmountAll() == nil {
				os.RemoveAll(c.dir)
			}
			m.mu.Lock()
			delete(m.containers, id)
			m.mu.Unlock()
		}
	}()

	if err := os.MkdirAll(c.root, 0o755); err != nil {
		return fmt.Errorf("containers: %s: %w", c.root, err)
	}
	if rootfs.Serial != "" {
		if rootfs.Device, err = m.waitDisk(ctx, rootfs.Serial, rootfs.Size); err != nil {
			return fmt.Errorf("container %q: %w", id, err)
		}
		// A hot-plugged disk may sit in a device that held another
		// image before (the builtin VMM's slots): read none of its
		// blocks from the cache.
		if err := FlushDisk(rootfs.Device); err != nil {
			return fmt.Errorf("container %q: %w", id, err)
		}
	}
	if rootfs.Device != "" {
		err = c.mountBlock(rootfs.Device, rootfs.FSType)
	} else {
		err = c.mountDirectory(rootfs.Directory)
	}
	if err != nil {
		return err
	}
	for _, mnt := range spec.Mounts {
		if err := c.mountSpec(mnt); err != nil {
			return err
		}
	}
	if m.secrets != nil {
		if err := c.mountSecrets(m.secrets()); err != nil {
			return fmt.Errorf("container %q: %w", id, err)
		}
	}
	// A read-only root is made so last, once the mount points exist (the
	// mounts on it keep their own flags).
	if spec.Root != nil && spec.Root.Readonly {
		if err := unix.Mount("", c.root, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("containers: remount %s read-only: %w", c.root, err)
		}
	}
	return nil
}

// parseSpec decodes and checks an OCI spec from the host: a process with
// arguments, a bounded console size, known rlimits, absolute mount destinations.
func parseSpec(b []byte) (*specs.Spec, error) {
	var spec specs.Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		return nil, fmt.Errorf("%w: OCI spec: %v", ErrInvalid, err)
	}
	if spec.Process == nil || len(spec.Process.Args) == 0 {
		return nil, fmt.Errorf("%w: OCI spec has no process args", ErrInvalid)
	}
	if err := checkProcess(spec.Process); err != nil {
		return nil, err
	}
	for _, m := range spec.Mounts {
		if !filepath.IsAbs(m.Destination) {
			return nil, fmt.Errorf("%w: mount destination %q is not absolute", ErrInvalid, m.Destination)
		}
	}
	return &spec, nil
}

// checkProcess checks what the agent cannot do or must not be fooled by.
func checkProcess(p *specs.Process) error {
	if p.ConsoleSize != nil && (p.ConsoleSize.Width > maxWinsize || p.ConsoleSize.Height > maxWinsize) {
		return fmt.Errorf("%w: console size %dx%d (limit %d)", ErrInvalid, p.ConsoleSize.Width, p.ConsoleSize.Height, maxWinsize)
	}
	for _, rl := range p.Rlimits {
		if _, ok := rlimits[rl.Type]; !ok {
			return fmt.Errorf("%w: unknown rlimit %q", ErrInvalid, rl.Type)
		}
	}
	for _, e := range p.Env {
		if strings.IndexByte(e, 0) >= 0 {
			return fmt.Errorf("%w: environment variable with a NUL byte", ErrInvalid)
		}
	}
	return nil
}

// mountBlock mounts device read-only at dir/lower and makes the root an
// overlay of it with a tmpfs upper layer.
func (c *container) mountBlock(device, fstype string) error {
	switch fstype {
	case "ext4", "erofs":
	default:
		return fmt.Errorf("%w: rootfs file system %q of %s (want ext4 or erofs)", ErrInvalid, fstype, device)
	}
	lower := filepath.Join(c.dir, "lower")
	if err := c.mount(device, lower, fstype, unix.MS_RDONLY, ""); err != nil {
		return err
	}
	rw := filepath.Join(c.dir, "rw")
	if err := c.mount("tmpfs", rw, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0700"); err != nil {
		return err
	}
	upper, work := filepath.Join(rw, "upper"), filepath.Join(rw, "work")
	for _, d := range []string{upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return fmt.Errorf("containers: overlay layer %s: %w", d, err)
		}
	}
	return c.mount("overlay", c.root, "overlay", 0, fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work))
}

func (c *container) mountDirectory(dir string) error {
	if !filepath.IsAbs(dir) {
		return fmt.Errorf("%w: rootfs directory %q is not absolute", ErrInvalid, dir)
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("%w: rootfs directory %s: not a directory (%v)", ErrInvalid, dir, err)
	}
	return c.bind(dir, c.root, false)
}

// bind bind-mounts src at dst (recursively), read-only if asked.
func (c *container) bind(src, dst string, readonly bool) error {
	if err := c.mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return err
	}
	if readonly {
		if err := unix.Mount("", dst, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("containers: remount %s read-only: %w", dst, err)
		}
	}
	return nil
}

// mount creates target (a directory) and mounts on it, recording it for
// unmountAll.
func (c *container) mount(source, target, fstype string, flags uintptr, data string) error {
	if err := os.MkdirAll(target, 0o755); err != nil {
		return fmt.Errorf("containers: mount point %s: %w", target, err)
	}
	if err := unix.Mount(source, target, fstype, flags, data); err != nil {
		return fmt.Errorf("containers: mount %s (%s) on %s: %w", source, fstype, target, err)
	}
	c.mounts = append(c.mounts, target)
	return nil
}

// mountSpec mounts one OCI spec mount inside the root.
func (c *container) mountSpec(m specs.Mount) error {
	dest, err := inRoot(c.root, m.Destination)
	if err != nil {
		return err
	}
	flags, prop, data := mountOptions(m.Options)
	typ := m.Type
	isBind := flags&unix.MS_BIND != 0
	switch {
	case isBind:
		// A host path of the shim: it exists in the guest only if the
		// host shared it. Skip what is absent (CRI's /etc/hosts etc.).
		fi, err := os.Stat(m.Source)
		if err != nil {
			return nil
		}
		if !fi.IsDir() {
			if err := makeFile(dest); err != nil {
				return err
			}
			if err := unix.Mount(m.Source, dest, "", flags&(unix.MS_BIND|unix.MS_REC), ""); err != nil {
				return fmt.Errorf("containers: bind %s on %s: %w", m.Source, dest, err)
			}
			c.mounts = append(c.mounts, dest)
		} else if err := c.mount(m.Source, dest, "", flags&(unix.MS_BIND|unix.MS_REC), ""); err != nil {
			return err
		}
		if flags&^(unix.MS_BIND|unix.MS_REC) != 0 {
			if err := unix.Mount("", dest, "", flags|unix.MS_REMOUNT, ""); err != nil {
				return fmt.Errorf("containers: remount %s: %w", dest, err)
			}
		}
	case typ == "cgroup" || typ == "cgroup2":
		return nil // no cgroup file system in containers yet
	case typ == "proc" || typ == "sysfs" || typ == "tmpfs" || typ == "devpts" || typ == "mqueue":
		if err := c.mount(typ, dest, typ, flags, data); err != nil {
			return err
		}
		if typ == "tmpfs" && m.Destination == "/dev" {
			if err := populateDev(dest); err != nil {
				return err
			}
		}
		if typ == "devpts" && filepath.Clean(m.Destination) == "/dev/pts" {
			c.pts = dest
		}
	default:
		return fmt.Errorf("%w: mount type %q at %s", ErrInvalid, typ, m.Destination)
	}
	if prop != 0 {
		// Propagation flags are applied on their own, and failure is not
		// fatal: the root's propagation decides what is possible.
		_ = unix.Mount("", dest, "", prop, "")
	}
	return nil
}

// inRoot joins root and an absolute container path, refusing paths that
// leave root lexically or cross an existing symbolic link (which the
// container's image controls).
func inRoot(root, p string) (string, error) {
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("%w: mount destination %q is not absolute", ErrInvalid, p)
	}
	clean := filepath.Clean(p)
	cur := root
	for _, el := range strings.Split(strings.TrimPrefix(clean, "/"), "/") {
		if el == "" {
			continue
		}
		cur = filepath.Join(cur, el)
		fi, err := os.Lstat(cur)
		if errors.Is(err, os.ErrNotExist) {
			break
		}
		if err != nil {
			return "", fmt.Errorf("containers: mount destination %s: %w", cur, err)
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			return "", fmt.Errorf("%w: mount destination %s crosses a symbolic link at %s", ErrInvalid, p, cur)
		}
	}
	return filepath.Join(root, clean), nil
}

func makeFile(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("containers: mount point %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDONLY, 0o644)
	if err != nil {
		return fmt.Errorf("containers: mount point %s: %w", path, err)
	}
	return f.Close()
}

// mountFlags maps OCI/fstab mount options to flags; the bool says whether
// the option clears the flag.
var mountFlags = map[string]struct {
	clear bool
	flag  uintptr
}{
	"ro": {false, unix.MS_RDONLY}, "rw": {true, unix.MS_RDONLY},
	"nosuid": {false, unix.MS_NOSUID}, "suid": {true, unix.MS_NOSUID},
	"nodev": {false, unix.MS_NODEV}, "dev": {true, unix.MS_NODEV},
	"noexec": {false, unix.MS_NOEXEC}, "exec": {true, unix.MS_NOEXEC},
	"sync": {false, unix.MS_SYNCHRONOUS}, "async": {true, unix.MS_SYNCHRONOUS},
	"noatime": {false, unix.MS_NOATIME}, "atime": {true, unix.MS_NOATIME},
	"nodiratime": {false, unix.MS_NODIRATIME}, "diratime": {true, unix.MS_NODIRATIME},
	"relatime": {false, unix.MS_RELATIME}, "norelatime": {true, unix.MS_RELATIME},
	"strictatime": {false, unix.MS_STRICTATIME}, "nostrictatime": {true, unix.MS_STRICTATIME},
	"bind": {false, unix.MS_BIND}, "rbind": {false, unix.MS_BIND | unix.MS_REC},
	"defaults": {false, 0},
}

var propagationFlags = map[string]uintptr{
	"private": unix.MS_PRIVATE, "rprivate": unix.MS_PRIVATE | unix.MS_REC,
	"shared": unix.MS_SHARED, "rshared": unix.MS_SHARED | unix.MS_REC,
	"slave": unix.MS_SLAVE, "rslave": unix.MS_SLAVE | unix.MS_REC,
	"unbindable": unix.MS_UNBINDABLE, "runbindable": unix.MS_UNBINDABLE | unix.MS_REC,
}

// mountOptions splits OCI mount options into mount flags, propagation
// flags and the file system's data string (the options it does not know).
func mountOptions(opts []string) (flags, propagation uintptr, data string) {
	var rest []string
	for _, o := range opts {
		if f, ok := mountFlags[o]; ok {
			if f.clear {
				flags &^= f.flag
			} else {
				flags |= f.flag
			}
			continue
		}
		if p, ok := propagationFlags[o]; ok {
			propagation |= p
			continue
		}
		rest = append(rest, o)
	}
	return flags, propagation, strings.Join(rest, ",")
}

// populateDev makes the device nodes and links a container's /dev tmpfs
// needs, as runc does.
func populateDev(dev string) error {
	nodes := []struct {
		name         string
		major, minor uint32
	}{{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0}}
	for _, n := range nodes {
		p := filepath.Join(dev, n.name)
		if err := unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(n.major, n.minor))); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("containers: device node %s: %w", p, err)
		}
		if err := os.Chmod(p, 0o666); err != nil {
			return fmt.Errorf("containers: device node %s: %w", p, err)
		}
	}
	links := [][2]string{{"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"}, {"/proc/self/fd/1", "stdout"},
		{"/proc/self/fd/2", "stderr"}, {"pts/ptmx", "ptmx"}}
	for _, l := range links {
		if err := os.Symlink(l[0], filepath.Join(dev, l[1])); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("containers: %s: %w", filepath.Join(dev, l[1]), err)
		}
	}
	return nil
}

// unmountAll undoes c's mounts in reverse order. Busy mounts are detached.
func (c *container) unmountAll() error {
	var errs []error
	for i := len(c.mounts) - 1; i >= 0; i-- {
		if err := unix.Unmount(c.mounts[i], unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("containers: unmount %s: %w", c.mounts[i], err))
		}
	}
	c.mounts = nil
	return errors.Join(errs...)
}

// Remove kills whatever still runs in container id, unmounts its file
// systems and forgets it. An unknown id is not an error.
func (m *Manager) Remove(ctx context.Context, id string) error {
	m.mu.Lock()
	c, ok := m.containers[id]
	m.mu.Unlock()
	if !ok {
		return nil
	}
	c.signalAll(unix.SIGKILL)
	c.mu.Lock()
	procs := make([]*process, 0, len(c.procs))
	for _, p := range c.procs {
		procs = append(procs, p)
	}
	c.mu.Unlock()
	for _, p := range procs {
		if p.started() {
			select {
			case <-p.done:
			case <-ctx.Done():
				return fmt.Errorf("containers: remove %q: waiting for process %q: %w", id, p.execID, ctx.Err())
			case <-time.After(10 * time.Second):
				return fmt.Errorf("containers: remove %q: process %q did not exit after SIGKILL", id, p.execID)
			}
		}
		p.closeFiles()
	}
	// Descendants that outlived the started processes.
	c.signalAll(unix.SIGKILL)
	err := c.unmountAll()
	if err == nil {
		err = os.RemoveAll(c.dir)
	}
	m.mu.Lock()
	delete(m.containers, id)
	m.mu.Unlock()
	return err
}

// Close removes every container.
func (m *Manager) Close(ctx context.Context) error {
	m.mu.Lock()
	ids := make([]string, 0, len(m.containers))
	for id := range m.containers {
		ids = append(ids, id)
	}
	m.mu.Unlock()
	var errs []error
	for _, id := range ids {
		errs = append(errs, m.Remove(ctx, id))
	}
	return errors.Join(errs...)
}

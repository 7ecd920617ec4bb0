// Package shimtest is a test fixture for the containerd shim: a Sandbox
// that runs the guest agent's containers package in-process, on the host,
// behind a real ttrpc connection. It proves the containerd protocol layer
// (task API, events, FIFOs, CRI pods) against real containerd without a
// microVM. It is NOT isolation: the processes run on the host, chrooted.
// Only the fixture binary containerd-shim-cvmtest-v2 (in this folder) uses
// it; the shipped containerd-shim-cvm-v2 cannot select it.
package shimtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"

	"github.com/greatjail/cvm/guest-agent/containers"
	"github.com/greatjail/cvm/launcher/shim"
	agentv1 "github.com/greatjail/cvm/proto/cvm/agent/v1"
)

// HostSandbox serves a containers.Manager over ttrpc on a Unix socket in
// its state directory and is its own client.
type HostSandbox struct {
	dir    string
	m      *containers.Manager
	srv    *ttrpc.Server
	client *ttrpc.Client
	c      agentv1.ContainersClient
}

var _ shim.Sandbox = (*HostSandbox)(nil)

// New starts a HostSandbox keeping its state in dir, which must not exist
// yet.
func New(ctx context.Context, dir string) (_ *HostSandbox, err error) {
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return nil, fmt.Errorf("shimtest: state directory: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, fmt.Errorf("shimtest: state directory: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	if err := os.WriteFile(filepath.Join(dir, "shim.pid"), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		return nil, fmt.Errorf("shimtest: %w", err)
	}
	m, err := containers.New(containers.Options{Dir: filepath.Join(dir, "containers")})
	if err != nil {
		return nil, err
	}
	srv, err := ttrpc.NewServer()
	if err != nil {
		return nil, fmt.Errorf("shimtest: ttrpc server: %w", err)
	}
	(&containers.Service{M: m}).Register(srv)
	sock := filepath.Join(dir, "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("shimtest: listen %s: %w", sock, err)
	}
	go srv.Serve(context.WithoutCancel(ctx), l)
	conn, err := net.Dial("unix", sock)
	if err != nil {
		srv.Close()
		return nil, fmt.Errorf("shimtest: dial %s: %w", sock, err)
	}
	client := ttrpc.NewClient(conn)
	return &HostSandbox{dir: dir, m: m, srv: srv, client: client, c: agentv1.NewContainersClient(client)}, nil
}

// Containers returns the client of the in-process agent service.
func (h *HostSandbox) Containers() agentv1.ContainersClient { return h.c }

// Rootfs hands the host directory over as it is.
func (h *HostSandbox) Rootfs(ctx context.Context, id, dir string) (*agentv1.ContainerRootfs, error) {
	return &agentv1.ContainerRootfs{Source: &agentv1.ContainerRootfs_Directory{Directory: dir}}, nil
}

// ReleaseRootfs has nothing to release.
func (h *HostSandbox) ReleaseRootfs(ctx context.Context, id string) error { return nil }

// Close removes every container and stops the service.
func (h *HostSandbox) Close(ctx context.Context) error {
	err := h.m.Close(ctx)
	h.client.Close()
	h.srv.Close()
	if err != nil {
		return err
	}
	return os.RemoveAll(h.dir)
}

// Cleanup undoes what a HostSandbox whose shim died left in dir: its
// mounts (detached) and the directory. Its processes died with the shim
// (they run with a parent-death signal). containerd runs `shim delete`
// for every task whose connection closed, also while the pod's shim still
// serves its other tasks: then the sandbox is the live shim's, and
// Cleanup leaves it alone.
func Cleanup(dir string) error {
	if b, err := os.ReadFile(filepath.Join(dir, "shim.pid")); err == nil {
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		self, _ := os.Executable()
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); pid > 0 && err == nil && exe == self {
			return nil
		}
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("shimtest: %w", err)
	}
	var ms []string
	for _, l := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			ms = append(ms, f[4])
		}
	}
	var errs []error
	for i := len(ms) - 1; i >= 0; i-- {
		if err := unix.Unmount(ms[i], unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("shimtest: unmount %s: %w", ms[i], err))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return os.RemoveAll(dir)
}

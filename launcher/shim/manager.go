package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/defaults"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/log"
)

// groupAnnotations name the pod a task belongs to, in order of preference;
// tasks of one pod share a shim (and a microVM).
var groupAnnotations = []string{
	"io.kubernetes.cri.sandbox-id",
	"io.containerd.cvm.v2.group",
}

// manager implements containerd's shim.Shim: the `start` and `delete`
// subcommands.
type manager struct {
	opts Options
}

func (m *manager) Name() string { return m.opts.Name }

// podID reads the bundle's config.json (the current directory) and returns
// the pod the task belongs to: its group annotation, else the task itself.
func podID(bundle, id string) (string, error) {
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return "", fmt.Errorf("shim: bundle spec: %w", err)
	}
	var spec struct {
		Annotations map[string]string `json:"annotations"`
	}
	if err := json.Unmarshal(b, &spec); err != nil {
		return "", fmt.Errorf("shim: bundle spec %s: %w", filepath.Join(bundle, "config.json"), err)
	}
	for _, a := range groupAnnotations {
		if g := spec.Annotations[a]; g != "" {
			return g, nil
		}
	}
	return id, nil
}

// Start runs for `shim start`: it finds the pod's shim (its socket
// answers) or starts one, and returns its address.
func (m *manager) Start(ctx context.Context, params *bootapi.BootstrapParams) (_ *bootapi.BootstrapResult, retErr error) {
	id := params.GetInstanceID()
	cwd, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	group, err := podID(cwd, id)
	if err != nil {
		return nil, err
	}
	result := &bootapi.BootstrapResult{Version: 3, Protocol: "ttrpc"}

	socketDir := params.GetSocketDir()
	if socketDir == "" {
		socketDir = filepath.Join(defaults.DefaultStateDir, "s")
	}
	addr, err := shim.CreateSocketAddress(ctx, socketDir, params.GetContainerdGrpcAddress(), group, false)
	if err != nil {
		return nil, err
	}
	l, err := shim.NewSocket(addr)
	if err != nil {
		if !shim.SocketEaddrinuse(err) {
			return nil, fmt.Errorf("shim: socket %s: %w", addr, err)
		}
		if shim.CanConnect(addr) {
			result.Address = addr // the pod's shim runs already
			return result, nil
		}
		if err := shim.RemoveSocket(addr); err != nil {
			return nil, fmt.Errorf("shim: stale socket %s: %w", addr, err)
		}
		if l, err = shim.NewSocket(addr); err != nil {
			return nil, fmt.Errorf("shim: socket %s: %w", addr, err)
		}
	}
	f, err := l.File()
	l.SetUnlinkOnClose(false) // the server owns the socket now
	l.Close()
	if err != nil {
		shim.RemoveSocket(addr)
		return nil, err
	}
	defer f.Close()
	defer func() {
		if retErr != nil {
			shim.RemoveSocket(addr)
		}
	}()

	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{"-namespace", ns, "-id", id, "-address", params.GetContainerdGrpcAddress()}
	if params.GetLogLevel() <= bootapi.LogLevel_LOG_LEVEL_DEBUG {
		args = append(args, "-debug")
	}
	cmd := exec.Command(self, args...)
	cmd.Dir = cwd
	cmd.Env = os.Environ()
	cmd.ExtraFiles = []*os.File{f} // fd 3: the listening socket
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("shim: start server: %w", err)
	}
	go cmd.Wait()
	if err := shim.AdjustOOMScore(cmd.Process.Pid); err != nil {
		cmd.Process.Kill()
		return nil, fmt.Errorf("shim: OOM score of the server: %w", err)
	}
	result.Address = addr
	return result, nil
}

// Stop runs for `shim delete` after the shim died: release what the
// sandbox left and unmount the task's root file system.
func (m *manager) Stop(ctx context.Context, id string) (shim.StopStatus, error) {
	cwd, err := os.Getwd()
	if err != nil {
		return shim.StopStatus{}, err
	}
	bundle := filepath.Join(filepath.Dir(cwd), id)
	if m.opts.Cleanup != nil {
		if err := m.opts.Cleanup(ctx, bundle); err != nil {
			log.G(ctx).WithError(err).Warn("shim: sandbox cleanup")
		}
	}
	if err := mount.UnmountRecursive(filepath.Join(bundle, "rootfs"), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
		log.G(ctx).WithError(err).Warn("shim: unmount rootfs")
	}
	return shim.StopStatus{ExitedAt: time.Now(), ExitStatus: 128 + int(syscall.SIGKILL)}, nil
}

func (m *manager) Info(ctx context.Context, optionsR io.Reader) (*types.RuntimeInfo, error) {
	return &types.RuntimeInfo{Name: m.opts.Name, Version: &types.RuntimeVersion{Version: "v1"}}, nil
}

var _ shim.Shim = (*manager)(nil)

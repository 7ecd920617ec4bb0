// Package shim is containerd-shim-cvm-v2: a containerd runtime v2 shim
// (containerd 2.3 and 2.4, pkg/shim bootstrap protocol, task API v3) that
// runs each pod sandbox in one microVM. containerd starts one shim per pod
// and sends every container of the pod to it, so the task service holds
// many tasks keyed by container ID and exits on Shutdown only once none
// remains.
//
// The shim maps the task API onto the guest agent's Containers service
// (proto/cvm/agent/v1/containers.proto), reached through a Sandbox: the
// microVM, started with the pod's first task. Standard streams are copied
// between containerd's FIFOs and the agent's Output/WriteStdin RPCs; the
// shim closes its FIFO copies once the process has exited and its output
// has drained, and then publishes the exit. Events are published in
// containerd's order (create, start, exec-added, exec-started, exit,
// delete) by one goroutine.
//
// docs/containerd.md describes the configuration and what the host sees.
package shim

import (
	"context"

	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/containerd/v2/plugins"
	"github.com/containerd/plugin"
	"github.com/containerd/plugin/registry"
	"google.golang.org/protobuf/types/known/anypb"

	agentv1 "github.com/greatjail/cvm/proto/cvm/agent/v1"
)

// Sandbox is the pod's isolation boundary as the shim uses it: the agent's
// Containers service and a way to hand it a container's root file system.
// The shipped binary uses the microVM; a test fixture may run the agent's
// containers package in-process (launcher/shim/shimtest).
type Sandbox interface {
	// Containers returns the agent's Containers client.
	Containers() agentv1.ContainersClient
	// Rootfs makes the root file system of container id, mounted on the
	// host at dir, reachable by the guest, and says how the guest finds it.
	Rootfs(ctx context.Context, id, dir string) (*agentv1.ContainerRootfs, error)
	// ReleaseRootfs undoes Rootfs once the container is removed.
	ReleaseRootfs(ctx context.Context, id string) error
	// Close stops the sandbox (the microVM) and releases what it holds.
	Close(ctx context.Context) error
}

// SandboxRequest is what the pod's first Create tells NewSandbox.
type SandboxRequest struct {
	// Bundle is the bundle directory of the pod's first task.
	Bundle string
	// PodID is the pod (sandbox) ID.
	PodID string
	// Options are that task's runtime options (CreateTaskRequest.Options):
	// for a runtime other than runc, containerd sends
	// runtimeoptions.v1.Options (CRI: the runtime's options table; ctr:
	// --runtime-config-path); nil when there are none
	// (ParseRuntimeOptions).
	Options *anypb.Any
}

// Options configure the shim.
type Options struct {
	// Name is the runtime name, e.g. io.containerd.cvm.v2.
	Name string
	// NewSandbox starts the pod's sandbox; it is called once, by the
	// first Create.
	NewSandbox func(ctx context.Context, r SandboxRequest) (Sandbox, error)
	// Cleanup releases what a sandbox left behind when the shim died
	// (containerd runs `shim delete` from the bundle directory). Optional.
	Cleanup func(ctx context.Context, bundle string) error
}

// Run runs the shim binary: containerd's `start`, `delete` and the
// long-running server. It returns only when the server has shut down.
func Run(ctx context.Context, opts Options) {
	registry.Register(&plugin.Registration{
		Type:     plugins.TTRPCPlugin,
		ID:       "task",
		Requires: []plugin.Type{plugins.EventPlugin, plugins.InternalPlugin},
		InitFn: func(ic *plugin.InitContext) (any, error) {
			pp, err := ic.GetByID(plugins.EventPlugin, "publisher")
			if err != nil {
				return nil, err
			}
			ss, err := ic.GetByID(plugins.InternalPlugin, "shutdown")
			if err != nil {
				return nil, err
			}
			return NewService(ic.Context, opts, pp.(shim.Publisher), ss.(shutdown.Service)), nil
		},
	})
	shim.RunShim(ctx, &manager{opts: opts}, func(c *shim.Config) {
		// The shim's children are the VMM (or, in the test fixture, the
		// container processes), each waited for by its owner: no implicit
		// reaping, no subreaper.
		c.NoReaper = true
		c.NoSubreaper = true
	})
}

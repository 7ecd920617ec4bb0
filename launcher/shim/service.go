package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	cgroupstats "github.com/containerd/cgroups/v3/cgroup2/stats"
	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/runtime"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	ptypes "github.com/containerd/containerd/v2/pkg/protobuf/types"
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"github.com/containerd/typeurl/v2"
	"github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	agentv1 "github.com/greatjail/cvm/proto/cvm/agent/v1"
)

// Service is the task service (containerd.task.v3.Task) of one pod's shim.
type Service struct {
	opts     Options
	shutdown shutdown.Service
	events   chan event // drained in order by forward

	// sbMu serializes starting the sandbox.
	sbMu sync.Mutex
	sb   Sandbox // guarded by sbMu; nil until the first Create

	mu    sync.Mutex
	tasks map[string]*ctask // container ID -> task; guarded by mu
}

type event struct {
	topic string
	ev    any
	flush chan struct{} // if set, closed once every earlier event is published
}

// ctask is one container: its init process and exec processes.
type ctask struct {
	id      string
	bundle  string
	rootfs  string // host directory holding the root file system
	mounted bool   // rootfs was mounted by the shim (from the snapshot's mounts)
	init    *proc
	mu      sync.Mutex
	execs   map[string]*proc // guarded by mu
}

// NewService returns the task service; the shim's plugin calls it.
func NewService(ctx context.Context, opts Options, pub shim.Publisher, sd shutdown.Service) *Service {
	s := &Service{opts: opts, shutdown: sd, events: make(chan event, 128), tasks: map[string]*ctask{}}
	go s.forward(ctx, pub)
	sd.RegisterCallback(func(ctx context.Context) error {
		s.sbMu.Lock()
		defer s.sbMu.Unlock()
		if s.sb != nil {
			return s.sb.Close(ctx)
		}
		return nil
	})
	return s
}

// RegisterTTRPC registers the task service on the shim's server.
func (s *Service) RegisterTTRPC(server *ttrpc.Server) error {
	taskAPI.RegisterTTRPCTaskService(server, s)
	return nil
}

// forward publishes events one at a time, in the order they were queued.
// It exits when the shim shuts down.
func (s *Service) forward(ctx context.Context, pub shim.Publisher) {
	// The context carries the namespace; the shim's shutdown must not
	// cancel the last events.
	pctx := context.WithoutCancel(ctx)
	for e := range s.events {
		if e.flush != nil {
			close(e.flush)
			continue
		}
		if err := pub.Publish(pctx, e.topic, e.ev); err != nil {
			log.G(ctx).WithError(err).WithField("topic", e.topic).Error("shim: publish event")
		}
	}
}

func (s *Service) publish(topic string, ev any) {
	s.events <- event{topic: topic, ev: ev}
}

func (s *Service) task(id string) (*ctask, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tasks[id]
	if !ok {
		return nil, fmt.Errorf("task %q: %w", id, errdefs.ErrNotFound)
	}
	return t, nil
}

// proc finds the init process (execID "") or an exec process of a task.
func (s *Service) proc(id, execID string) (*ctask, *proc, error) {
	t, err := s.task(id)
	if err != nil {
		return nil, nil, err
	}
	if execID == "" {
		return t, t.init, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	p, ok := t.execs[execID]
	if !ok {
		return nil, nil, fmt.Errorf("exec %q of task %q: %w", execID, id, errdefs.ErrNotFound)
	}
	return t, p, nil
}

// sandbox returns the pod's sandbox, starting it for the first task.
func (s *Service) sandbox(ctx context.Context, bundle, id string, options *anypb.Any) (Sandbox, error) {
	s.sbMu.Lock()
	defer s.sbMu.Unlock()
	if s.sb != nil {
		return s.sb, nil
	}
	pod, err := podID(bundle, id)
	if err != nil {
		return nil, err
	}
	sb, err := s.opts.NewSandbox(ctx, SandboxRequest{Bundle: bundle, PodID: pod, Options: options})
	if err != nil {
		return nil, fmt.Errorf("shim: start sandbox for pod %q: %w", pod, err)
	}
	s.sb = sb
	return sb, nil
}

// Create creates a container in the sandbox: its root file system and
// OCI spec; no process runs yet.
func (s *Service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (_ *taskAPI.CreateTaskResponse, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	if r.Checkpoint != "" {
		return nil, fmt.Errorf("task %q: checkpoints: %w", r.ID, errdefs.ErrNotImplemented)
	}
	specBytes, err := os.ReadFile(filepath.Join(r.Bundle, "config.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("task %q: %w: %w", r.ID, err, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("task %q: %w", r.ID, err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(specBytes, &spec); err != nil {
		return nil, fmt.Errorf("task %q: config.json: %w: %w", r.ID, err, errdefs.ErrInvalidArgument)
	}
	if err := checkTerminal(r.Terminal, spec.Process, r.Stdout); err != nil {
		return nil, fmt.Errorf("task %q: %w", r.ID, err)
	}

	s.mu.Lock()
	if _, ok := s.tasks[r.ID]; ok {
		s.mu.Unlock()
		return nil, fmt.Errorf("task %q: %w", r.ID, errdefs.ErrAlreadyExists)
	}
	t := &ctask{id: r.ID, bundle: r.Bundle, execs: map[string]*proc{}}
	t.init = newProc(r.ID, "", r.Stdin, r.Stdout, r.Stderr)
	t.init.terminal = r.Terminal
	s.tasks[r.ID] = t // reserve the ID
	s.mu.Unlock()
	defer func() {
		if retErr != nil {
			s.mu.Lock()
			delete(s.tasks, r.ID)
			s.mu.Unlock()
		}
	}()

	// The root file system: the snapshot's mounts, mounted at
	// <bundle>/rootfs, or (ctr run --rootfs) the spec's absolute root.path.
	if len(r.Rootfs) > 0 {
		t.rootfs = filepath.Join(r.Bundle, "rootfs")
		if err := os.MkdirAll(t.rootfs, 0o711); err != nil {
			return nil, err
		}
		var mounts []mount.Mount
		for _, m := range r.Rootfs {
			mounts = append(mounts, mount.Mount{Type: m.Type, Source: m.Source, Target: m.Target, Options: m.Options})
		}
		if err := mount.All(mounts, t.rootfs); err != nil {
			return nil, fmt.Errorf("task %q: mount rootfs: %w", r.ID, err)
		}
		t.mounted = true
		defer func() {
			if retErr != nil {
				mount.UnmountRecursive(t.rootfs, 0)
			}
		}()
	} else {
		if spec.Root == nil || spec.Root.Path == "" {
			return nil, fmt.Errorf("task %q: no rootfs mounts and no root.path: %w", r.ID, errdefs.ErrInvalidArgument)
		}
		t.rootfs = spec.Root.Path
		if !filepath.IsAbs(t.rootfs) {
			t.rootfs = filepath.Join(r.Bundle, t.rootfs)
		}
	}

	sb, err := s.sandbox(ctx, r.Bundle, r.ID, r.Options)
	if err != nil {
		return nil, err
	}
	rootfs, err := sb.Rootfs(ctx, r.ID, t.rootfs)
	if err != nil {
		return nil, fmt.Errorf("task %q: sandbox: %w", r.ID, err)
	}
	if _, err := sb.Containers().Create(ctx, &agentv1.CreateContainerRequest{
		ContainerId: r.ID, OciSpec: specBytes, Rootfs: rootfs,
	}); err != nil {
		sb.ReleaseRootfs(ctx, r.ID)
		return nil, fmt.Errorf("task %q: agent create: %w", r.ID, err)
	}
	s.publish(runtime.TaskCreateEventTopic, &eventstypes.TaskCreate{
		ContainerID: r.ID,
		Bundle:      r.Bundle,
		Rootfs:      r.Rootfs,
		IO:          &eventstypes.TaskIO{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal},
		Checkpoint:  r.Checkpoint,
	})
	return &taskAPI.CreateTaskResponse{}, nil
}

// Start starts a task's init process or one of its exec processes.
func (s *Service) Start(ctx context.Context, r *taskAPI.StartRequest) (_ *taskAPI.StartResponse, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	t, p, err := s.proc(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	sb := s.currentSandbox()
	if sb == nil {
		return nil, fmt.Errorf("task %q: no sandbox: %w", r.ID, errdefs.ErrFailedPrecondition)
	}
	if err := p.start(ctx, sb.Containers()); err != nil {
		return nil, err
	}
	pid := p.pidValue()
	if r.ExecID == "" {
		s.publish(runtime.TaskStartEventTopic, &eventstypes.TaskStart{ContainerID: t.id, Pid: pid})
	} else {
		s.publish(runtime.TaskExecStartedEventTopic, &eventstypes.TaskExecStarted{ContainerID: t.id, ExecID: r.ExecID, Pid: pid})
	}
	// The exit is published only after the start event is queued.
	go func() {
		e := p.waitExit(sb.Containers())
		s.publish(runtime.TaskExitEventTopic, &eventstypes.TaskExit{
			ContainerID: t.id, ID: p.eventID(), Pid: pid, ExitStatus: e.status, ExitedAt: protobuf.ToTimestamp(e.at),
		})
	}()
	return &taskAPI.StartResponse{Pid: pid}, nil
}

func (s *Service) currentSandbox() Sandbox {
	s.sbMu.Lock()
	defer s.sbMu.Unlock()
	return s.sb
}

// Delete deletes an exec process, or a task once its init process is not
// running (created but never started, or exited).
func (s *Service) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (_ *taskAPI.DeleteResponse, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	t, p, err := s.proc(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if p.state() == task.Status_RUNNING {
		return nil, fmt.Errorf("%s of task %q is running: %w", p.name(), r.ID, errdefs.ErrFailedPrecondition)
	}
	e := p.exitValue()
	if r.ExecID != "" {
		t.mu.Lock()
		delete(t.execs, r.ExecID)
		t.mu.Unlock()
		return &taskAPI.DeleteResponse{Pid: p.pidValue(), ExitStatus: e.status, ExitedAt: protobuf.ToTimestamp(e.at)}, nil
	}
	p.closeIO() // a task created but never started still holds FIFO state
	if sb := s.currentSandbox(); sb != nil {
		if _, err := sb.Containers().Remove(ctx, &agentv1.RemoveContainerRequest{ContainerId: r.ID}); err != nil {
			return nil, fmt.Errorf("task %q: agent remove: %w", r.ID, err)
		}
		if err := sb.ReleaseRootfs(ctx, r.ID); err != nil {
			log.G(ctx).WithError(err).Warn("shim: release rootfs")
		}
	}
	if t.mounted {
		if err := mount.UnmountRecursive(t.rootfs, 0); err != nil {
			log.G(ctx).WithError(err).WithField("rootfs", t.rootfs).Warn("shim: unmount rootfs")
		}
	}
	s.mu.Lock()
	delete(s.tasks, r.ID)
	s.mu.Unlock()
	if e.at.IsZero() {
		e.at = time.Now()
	}
	s.publish(runtime.TaskDeleteEventTopic, &eventstypes.TaskDelete{
		ContainerID: r.ID, Pid: p.pidValue(), ExitStatus: e.status, ExitedAt: protobuf.ToTimestamp(e.at),
	})
	return &taskAPI.DeleteResponse{Pid: p.pidValue(), ExitStatus: e.status, ExitedAt: protobuf.ToTimestamp(e.at)}, nil
}

// Exec adds an exec process to a running task; Start starts it.
func (s *Service) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (_ *ptypes.Empty, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	if r.ExecID == "" || r.Spec == nil {
		return nil, fmt.Errorf("exec of task %q: no exec ID or process spec: %w", r.ID, errdefs.ErrInvalidArgument)
	}
	var pspec specs.Process
	if err := json.Unmarshal(r.Spec.GetValue(), &pspec); err != nil {
		return nil, fmt.Errorf("exec %q of task %q: process spec: %w: %w", r.ExecID, r.ID, err, errdefs.ErrInvalidArgument)
	}
	if err := checkTerminal(r.Terminal, &pspec, r.Stdout); err != nil {
		return nil, fmt.Errorf("exec %q of task %q: %w", r.ExecID, r.ID, err)
	}
	t, err := s.task(r.ID)
	if err != nil {
		return nil, err
	}
	if t.init.state() != task.Status_RUNNING {
		return nil, fmt.Errorf("exec in task %q that is not running: %w", r.ID, errdefs.ErrFailedPrecondition)
	}
	t.mu.Lock()
	if _, ok := t.execs[r.ExecID]; ok {
		t.mu.Unlock()
		return nil, fmt.Errorf("exec %q of task %q: %w", r.ExecID, r.ID, errdefs.ErrAlreadyExists)
	}
	p := newProc(r.ID, r.ExecID, r.Stdin, r.Stdout, r.Stderr)
	p.spec = r.Spec.GetValue() // the JSON of the OCI process
	p.terminal = r.Terminal
	t.execs[r.ExecID] = p
	t.mu.Unlock()
	s.publish(runtime.TaskExecAddedEventTopic, &eventstypes.TaskExecAdded{ContainerID: r.ID, ExecID: r.ExecID})
	return &ptypes.Empty{}, nil
}

// checkTerminal checks that a task's or exec's terminal flag agrees with
// its OCI process (which the agent follows), and that the terminal's
// output has somewhere to go.
func checkTerminal(terminal bool, p *specs.Process, stdout string) error {
	if spec := p != nil && p.Terminal; spec != terminal {
		return fmt.Errorf("terminal %v but the OCI process has terminal %v: %w", terminal, spec, errdefs.ErrInvalidArgument)
	}
	if terminal && stdout == "" {
		return fmt.Errorf("a terminal without stdout: %w", errdefs.ErrInvalidArgument)
	}
	return nil
}

// maxWinsize bounds a terminal's width and height.
const maxWinsize = 65535

// ResizePty sets the window size of a process's terminal: at once in the
// guest for a running process, at its start for one not started yet. For
// a process without a terminal it does nothing (as runc's shim).
func (s *Service) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (_ *ptypes.Empty, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	_, p, err := s.proc(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if r.Width > maxWinsize || r.Height > maxWinsize {
		return nil, fmt.Errorf("%s of task %q: window size %dx%d (limit %d): %w", p.name(), r.ID, r.Width, r.Height, maxWinsize, errdefs.ErrInvalidArgument)
	}
	if !p.terminal {
		return &ptypes.Empty{}, nil
	}
	var c agentv1.ContainersClient
	if sb := s.currentSandbox(); sb != nil {
		c = sb.Containers()
	}
	if err := p.setSize(ctx, c, r.Width, r.Height); err != nil {
		return nil, err
	}
	return &ptypes.Empty{}, nil
}

// State reports a process's state.
func (s *Service) State(ctx context.Context, r *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	t, p, err := s.proc(r.ID, r.ExecID)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	e := p.exitValue()
	resp := &taskAPI.StateResponse{
		ID: r.ID, ExecID: r.ExecID, Bundle: t.bundle, Pid: p.pidValue(), Status: p.state(),
		Stdin: p.stdin, Stdout: p.stdout, Stderr: p.stderr, ExitStatus: e.status,
	}
	if !e.at.IsZero() {
		resp.ExitedAt = protobuf.ToTimestamp(e.at)
	}
	return resp, nil
}

func (s *Service) Pause(ctx context.Context, r *taskAPI.PauseRequest) (*ptypes.Empty, error) {
	return nil, errgrpc.ToGRPC(fmt.Errorf("pause: %w", errdefs.ErrNotImplemented))
}

func (s *Service) Resume(ctx context.Context, r *taskAPI.ResumeRequest) (*ptypes.Empty, error) {
	return nil, errgrpc.ToGRPC(fmt.Errorf("resume: %w", errdefs.ErrNotImplemented))
}

func (s *Service) Checkpoint(ctx context.Context, r *taskAPI.CheckpointTaskRequest) (*ptypes.Empty, error) {
	return nil, errgrpc.ToGRPC(fmt.Errorf("checkpoint: %w", errdefs.ErrNotImplemented))
}

func (s *Service) Update(ctx context.Context, r *taskAPI.UpdateTaskRequest) (*ptypes.Empty, error) {
	return nil, errgrpc.ToGRPC(fmt.Errorf("update: %w", errdefs.ErrNotImplemented))
}

// Kill signals a process, or with All every process of the task.
func (s *Service) Kill(ctx context.Context, r *taskAPI.KillRequest) (_ *ptypes.Empty, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	t, p, err := s.proc(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	switch p.state() {
	case task.Status_CREATED:
		if r.ExecID == "" && p.markExited(128+r.Signal, time.Now()) {
			// Nothing ran; the init process will never start.
			e := p.exitValue()
			s.publish(runtime.TaskExitEventTopic, &eventstypes.TaskExit{
				ContainerID: t.id, ID: t.id, ExitStatus: e.status, ExitedAt: protobuf.ToTimestamp(e.at),
			})
		}
		return &ptypes.Empty{}, nil
	case task.Status_STOPPED:
		if r.All {
			return &ptypes.Empty{}, nil
		}
		return nil, fmt.Errorf("%s of task %q: process already finished: %w", p.name(), t.id, errdefs.ErrNotFound)
	}
	sb := s.currentSandbox()
	_, err = sb.Containers().Signal(ctx, &agentv1.SignalProcessRequest{
		ContainerId: r.ID, ExecId: r.ExecID, Signal: int32(r.Signal), All: r.All,
	})
	if err != nil {
		if errdefs.IsFailedPrecondition(errgrpc.ToNative(err)) {
			return nil, fmt.Errorf("%s of task %q: process already finished: %w", p.name(), t.id, errdefs.ErrNotFound)
		}
		return nil, err
	}
	return &ptypes.Empty{}, nil
}

// Pids lists a task's processes (guest PIDs).
func (s *Service) Pids(ctx context.Context, r *taskAPI.PidsRequest) (_ *taskAPI.PidsResponse, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	if _, err := s.task(r.ID); err != nil {
		return nil, err
	}
	resp, err := s.currentSandbox().Containers().Pids(ctx, &agentv1.ContainerPidsRequest{ContainerId: r.ID})
	if err != nil {
		return nil, err
	}
	out := &taskAPI.PidsResponse{}
	for _, p := range resp.GetProcesses() {
		out.Processes = append(out.Processes, &task.ProcessInfo{Pid: p.GetPid()})
	}
	return out, nil
}

// CloseIO closes a process's standard input.
func (s *Service) CloseIO(ctx context.Context, r *taskAPI.CloseIORequest) (*ptypes.Empty, error) {
	_, p, err := s.proc(r.ID, r.ExecID)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	if r.Stdin {
		p.closeStdin()
	}
	return &ptypes.Empty{}, nil
}

// Connect reports the shim's and the task's PIDs.
func (s *Service) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	t, err := s.task(r.ID)
	if err != nil {
		return nil, errgrpc.ToGRPC(err)
	}
	return &taskAPI.ConnectResponse{ShimPid: uint32(os.Getpid()), TaskPid: t.init.pidValue(), Version: "3"}, nil
}

// Shutdown stops the shim once no task remains; with tasks left (other
// containers of the pod) it does nothing.
func (s *Service) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*ptypes.Empty, error) {
	s.mu.Lock()
	n := len(s.tasks)
	s.mu.Unlock()
	if n > 0 {
		return &ptypes.Empty{}, nil
	}
	// Deliver the events already queued (the last TaskDelete) first.
	published := make(chan struct{})
	s.events <- event{flush: published}
	select {
	case <-published:
	case <-time.After(10 * time.Second):
		log.G(ctx).Warn("shim: shutting down with events unpublished")
	}
	s.shutdown.Shutdown()
	return &ptypes.Empty{}, nil
}

// Stats reports a task's resource usage as measured in the guest, as
// cgroup v2 metrics.
func (s *Service) Stats(ctx context.Context, r *taskAPI.StatsRequest) (_ *taskAPI.StatsResponse, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	if _, err := s.task(r.ID); err != nil {
		return nil, err
	}
	st, err := s.currentSandbox().Containers().Stats(ctx, &agentv1.ContainerStatsRequest{ContainerId: r.ID})
	if err != nil {
		return nil, err
	}
	m := &cgroupstats.Metrics{
		Pids:   &cgroupstats.PidsStat{Current: st.GetPids()},
		CPU:    &cgroupstats.CPUStat{UsageUsec: st.GetCpuUsageNs() / 1000, UserUsec: st.GetCpuUserNs() / 1000, SystemUsec: st.GetCpuSystemNs() / 1000},
		Memory: &cgroupstats.MemoryStat{Usage: st.GetMemoryRssBytes(), Anon: st.GetMemoryRssBytes()},
	}
	a, err := typeurl.MarshalAnyToProto(m)
	if err != nil {
		return nil, err
	}
	return &taskAPI.StatsResponse{Stats: a}, nil
}

// Wait waits for a process to exit.
func (s *Service) Wait(ctx context.Context, r *taskAPI.WaitRequest) (_ *taskAPI.WaitResponse, retErr error) {
	defer func() { retErr = errgrpc.ToGRPC(retErr) }()
	_, p, err := s.proc(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	e := p.exitValue()
	return &taskAPI.WaitResponse{ExitStatus: e.status, ExitedAt: timestamppb.New(e.at)}, nil
}

var _ taskAPI.TTRPCTaskService = (*Service)(nil)

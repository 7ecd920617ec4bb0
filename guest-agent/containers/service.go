package containers

import (
	"context"
	"errors"
	"io"
	"syscall"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "github.com/greatjail/cvm/proto/cvm/agent/v1"
)

// Service serves a Manager as the ttrpc service Containers.
type Service struct {
	M *Manager
}

var _ agentv1.ContainersService = (*Service)(nil)

// Register registers the service on a ttrpc server (beside Agent).
func (s *Service) Register(srv *ttrpc.Server) {
	agentv1.RegisterContainersService(srv, s)
}

// rpcError converts an error to a status at the RPC boundary.
func rpcError(err error) error {
	if err == nil {
		return nil
	}
	code := codes.Internal
	switch {
	case errors.Is(err, ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, ErrExists):
		code = codes.AlreadyExists
	case errors.Is(err, ErrState):
		code = codes.FailedPrecondition
	case errors.Is(err, ErrInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	}
	return status.Error(code, err.Error())
}

func (s *Service) Create(ctx context.Context, r *agentv1.CreateContainerRequest) (*agentv1.CreateContainerResponse, error) {
	var rootfs Rootfs
	switch src := r.GetRootfs().GetSource().(type) {
	case *agentv1.ContainerRootfs_Block:
		rootfs = Rootfs{Device: src.Block.GetDevice(), Serial: src.Block.GetSerial(), Size: src.Block.GetSize(), FSType: src.Block.GetFstype()}
	case *agentv1.ContainerRootfs_Directory:
		rootfs = Rootfs{Directory: src.Directory}
	}
	return &agentv1.CreateContainerResponse{}, rpcError(s.M.Create(ctx, r.GetContainerId(), r.GetOciSpec(), rootfs))
}

func (s *Service) Start(ctx context.Context, r *agentv1.StartProcessRequest) (*agentv1.StartProcessResponse, error) {
	pid, err := s.M.Start(ctx, r.GetContainerId(), r.GetExecId(), r.GetProcess(),
		Stdio{Stdin: r.GetStdin(), Stdout: r.GetStdout(), Stderr: r.GetStderr(),
			TerminalWidth: r.GetTerminalWidth(), TerminalHeight: r.GetTerminalHeight()})
	if err != nil {
		return nil, rpcError(err)
	}
	return &agentv1.StartProcessResponse{Pid: uint32(pid)}, nil
}

func (s *Service) Output(ctx context.Context, r *agentv1.ProcessOutputRequest, srv agentv1.Containers_OutputServer) error {
	f, err := s.M.Output(r.GetContainerId(), r.GetExecId(), int(r.GetStream()))
	if err != nil {
		return rpcError(err)
	}
	defer f.Close()
	go func() {
		// A caller that goes away must not leave the reader blocked.
		<-ctx.Done()
		f.Close()
	}()
	buf := make([]byte, OutputChunk)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			if err := srv.Send(&agentv1.ProcessOutputChunk{Data: append([]byte(nil), buf[:n]...)}); err != nil {
				return err
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return rpcError(ctx.Err())
			}
			return rpcError(err)
		}
	}
}

func (s *Service) WriteStdin(ctx context.Context, r *agentv1.WriteStdinRequest) (*agentv1.WriteStdinResponse, error) {
	if len(r.GetData()) > OutputChunk {
		return nil, status.Errorf(codes.InvalidArgument, "containers: stdin write of %d bytes (limit %d)", len(r.GetData()), OutputChunk)
	}
	return &agentv1.WriteStdinResponse{}, rpcError(s.M.WriteStdin(r.GetContainerId(), r.GetExecId(), r.GetData()))
}

func (s *Service) CloseStdin(ctx context.Context, r *agentv1.CloseStdinRequest) (*agentv1.CloseStdinResponse, error) {
	return &agentv1.CloseStdinResponse{}, rpcError(s.M.CloseStdin(r.GetContainerId(), r.GetExecId()))
}

func (s *Service) Signal(ctx context.Context, r *agentv1.SignalProcessRequest) (*agentv1.SignalProcessResponse, error) {
	if r.GetSignal() <= 0 || r.GetSignal() > 64 {
		return nil, status.Errorf(codes.InvalidArgument, "containers: signal %d", r.GetSignal())
	}
	err := s.M.Signal(r.GetContainerId(), r.GetExecId(), syscall.Signal(r.GetSignal()), r.GetAll())
	return &agentv1.SignalProcessResponse{}, rpcError(err)
}

func (s *Service) Wait(ctx context.Context, r *agentv1.WaitProcessRequest) (*agentv1.WaitProcessResponse, error) {
	e, err := s.M.Wait(ctx, r.GetContainerId(), r.GetExecId())
	if err != nil {
		return nil, rpcError(err)
	}
	return &agentv1.WaitProcessResponse{ExitStatus: e.Status, ExitedAtUnixNano: e.At.UnixNano()}, nil
}

func (s *Service) Pids(ctx context.Context, r *agentv1.ContainerPidsRequest) (*agentv1.ContainerPidsResponse, error) {
	ps, err := s.M.Pids(r.GetContainerId())
	if err != nil {
		return nil, rpcError(err)
	}
	resp := &agentv1.ContainerPidsResponse{}
	for _, p := range ps {
		resp.Processes = append(resp.Processes, &agentv1.ContainerProcess{Pid: uint32(p.Pid), ExecId: p.ExecID})
	}
	return resp, nil
}

func (s *Service) Stats(ctx context.Context, r *agentv1.ContainerStatsRequest) (*agentv1.ContainerStatsResponse, error) {
	st, err := s.M.Stats(r.GetContainerId())
	if err != nil {
		return nil, rpcError(err)
	}
	return &agentv1.ContainerStatsResponse{
		CpuUsageNs: st.CPUUserNS + st.CPUSystemNS, CpuUserNs: st.CPUUserNS, CpuSystemNs: st.CPUSystemNS,
		MemoryRssBytes: st.MemoryRSSBytes, Pids: st.Pids,
	}, nil
}

func (s *Service) Remove(ctx context.Context, r *agentv1.RemoveContainerRequest) (*agentv1.RemoveContainerResponse, error) {
	return &agentv1.RemoveContainerResponse{}, rpcError(s.M.Remove(ctx, r.GetContainerId()))
}

func (s *Service) ResizePty(ctx context.Context, r *agentv1.ResizePtyRequest) (*agentv1.ResizePtyResponse, error) {
	if r.GetWidth() > maxWinsize || r.GetHeight() > maxWinsize {
		return nil, status.Errorf(codes.InvalidArgument, "containers: window size %dx%d (limit %d)", r.GetWidth(), r.GetHeight(), maxWinsize)
	}
	err := s.M.ResizePty(r.GetContainerId(), r.GetExecId(), uint16(r.GetWidth()), uint16(r.GetHeight()))
	return &agentv1.ResizePtyResponse{}, rpcError(err)
}

package link

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// VsockPort is the vsock port the guest agent listens on.
const VsockPort = 1024

// AcceptVsock listens on vsock port (any CID), accepts one connection,
// stops listening and returns the connection. Cancelling ctx stops the
// wait.
func AcceptVsock(ctx context.Context, port uint32) (io.ReadWriteCloser, error) {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("link: vsock socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_ANY, Port: port}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("link: vsock bind port %d: %w", port, err)
	}
	if err := unix.Listen(fd, 1); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("link: vsock listen port %d: %w", port, err)
	}
	lf := os.NewFile(uintptr(fd), fmt.Sprintf("vsock:%d", port))
	defer lf.Close()
	stop := context.AfterFunc(ctx, func() { lf.Close() })
	defer stop()
	raw, err := lf.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("link: vsock port %d: %w", port, err)
	}
	var nfd int
	var aerr error
	err = raw.Read(func(fd uintptr) bool {
		nfd, _, aerr = unix.Accept4(int(fd), unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
		return !errors.Is(aerr, unix.EAGAIN)
	})
	if err == nil {
		err = aerr
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("link: vsock accept port %d: %w", port, ctx.Err())
		}
		return nil, fmt.Errorf("link: vsock accept port %d: %w", port, err)
	}
	return os.NewFile(uintptr(nfd), fmt.Sprintf("vsock:%d:conn", port)), nil
}

package link

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestAcceptVsockLoopback(t *testing.T) {
	probe, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Skipf("AF_VSOCK sockets are not available on this kernel (%v): load the vsock module", err)
	}
	unix.Close(probe)
	if err := probeLoopback(51023); err != nil {
		t.Skipf("vsock loopback (CID 1) does not connect (%v): this kernel lacks the vsock_loopback transport", err)
	}
	const port = 51024
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	type res struct {
		c   io.ReadWriteCloser
		err error
	}
	done := make(chan res, 1)
	go func() {
		c, err := AcceptVsock(ctx, port)
		done <- res{c, err}
	}()
	var fd int
	for {
		fd, err = unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM, 0)
		if err != nil {
			t.Fatal(err)
		}
		err = unix.Connect(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_LOCAL, Port: port})
		if err == nil {
			break
		}
		unix.Close(fd)
		if ctx.Err() != nil {
			t.Fatalf("connecting to vsock port %d: %v", port, err)
		}
		time.Sleep(10 * time.Millisecond) // the listener is not up yet
	}
	defer unix.Close(fd)
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer r.c.Close()
	if _, err := unix.Write(fd, []byte("ok")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2)
	if _, err := io.ReadFull(r.c, buf); err != nil || string(buf) != "ok" {
		t.Errorf("read = %q, %v", buf, err)
	}
}

func TestAcceptVsockCancel(t *testing.T) {
	probe, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Skipf("AF_VSOCK sockets are not available on this kernel (%v): load the vsock module", err)
	}
	unix.Close(probe)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := AcceptVsock(ctx, 51025)
		done <- err
	}()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("AcceptVsock after cancel = %v, want context.Canceled", err)
	}
}

// probeLoopback listens on port and connects to it through CID 1.
func probeLoopback(port uint32) error {
	l, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM, 0)
	if err != nil {
		return err
	}
	defer unix.Close(l)
	if err := unix.Bind(l, &unix.SockaddrVM{CID: unix.VMADDR_CID_ANY, Port: port}); err != nil {
		return err
	}
	if err := unix.Listen(l, 1); err != nil {
		return err
	}
	c, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM, 0)
	if err != nil {
		return err
	}
	defer unix.Close(c)
	return unix.Connect(c, &unix.SockaddrVM{CID: unix.VMADDR_CID_LOCAL, Port: port})
}

package link

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// PortName is the name of the virtio-serial port that carries the link.
const PortName = "cvm.link"

// VirtioPortsDir is where the kernel lists virtio-serial ports.
const VirtioPortsDir = "/sys/class/virtio-ports"

// ErrNoSerialPort means no virtio-serial port named PortName exists.
var ErrNoSerialPort = errors.New("link: no virtio-serial port named " + PortName)

// FindSerialPort returns the device name (e.g. "vport1p1") of the port
// named PortName, scanning dir (VirtioPortsDir in the guest) for
// <dev>/name files. There is no udev in the guest, so the device node is
// /dev/<that name> as devtmpfs creates it.
func FindSerialPort(dir string) (string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("%w: %s does not exist", ErrNoSerialPort, dir)
	}
	if err != nil {
		return "", fmt.Errorf("link: listing %s: %w", dir, err)
	}
	for _, e := range entries {
		name, err := os.ReadFile(filepath.Join(dir, e.Name(), "name"))
		if err != nil {
			continue // a port without a name
		}
		if strings.TrimSpace(string(name)) == PortName {
			return e.Name(), nil
		}
	}
	return "", fmt.Errorf("%w in %s", ErrNoSerialPort, dir)
}

// SerialPort opens the guest's end of the link on the virtio-serial port
// named PortName (looked up in VirtioPortsDir, opened under /dev). The
// result treats end of file as "host not connected yet" (see RetryEOF).
func SerialPort() (io.ReadWriteCloser, error) {
	dev, err := FindSerialPort(VirtioPortsDir)
	if err != nil {
		return nil, err
	}
	path := filepath.Join("/dev", dev)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("link: opening serial port %s: %w", path, err)
	}
	return RetryEOF(f, 20*time.Millisecond), nil
}

// RetryEOF wraps a virtio-serial port: a read returns 0 bytes while the
// host end is not connected, which is not the end of the stream, so a read
// that reports io.EOF is retried after pause until data arrives or the
// port is closed.
func RetryEOF(rwc io.ReadWriteCloser, pause time.Duration) io.ReadWriteCloser {
	return &eofRetry{rwc: rwc, pause: pause, closed: make(chan struct{})}
}

type eofRetry struct {
	rwc   io.ReadWriteCloser
	pause time.Duration

	closeOnce sync.Once
	closed    chan struct{}
}

func (e *eofRetry) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		n, err := e.rwc.Read(p)
		if errors.Is(err, io.EOF) {
			err = nil
		}
		if n > 0 || err != nil {
			return n, err
		}
		select {
		case <-e.closed:
			return 0, fs.ErrClosed
		case <-time.After(e.pause):
		}
	}
}

func (e *eofRetry) Write(p []byte) (int, error) { return e.rwc.Write(p) }

func (e *eofRetry) Close() error {
	var err error
	e.closeOnce.Do(func() {
		close(e.closed)
		err = e.rwc.Close()
	})
	return err
}

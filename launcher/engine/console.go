package engine

import (
	"fmt"
	"os"
	"sync"
)

// MaxConsoleLog bounds one console log file. A guest writes its serial
// console as fast as it likes, and the host keeps it in the state
// directory, often on a tmpfs: when the file reaches this size it becomes
// Machine.ConsoleLog + ".1" (replacing an older one) and a new file is
// started, so a guest holds at most twice this on the host and the newest
// output, which says how the guest ended, is always kept.
const MaxConsoleLog = 8 << 20

// consoleLog is the bounded, rotating writer of a guest's console. It
// never fails a write, so the console never stalls the guest: after an
// I/O error it drops the rest.
type consoleLog struct {
	mu   sync.Mutex
	path string
	max  int64
	f    *os.File
	n    int64 // bytes in f
	err  error // first I/O error; writes are dropped after it
}

// openConsoleLog creates (truncates) the console log at path.
func openConsoleLog(path string, max int64) (*consoleLog, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("console log: %w", err)
	}
	os.Remove(path + ".1") // from an earlier guest in this directory
	return &consoleLog{path: path, max: max, f: f}, nil
}

// Write writes p, rotating the file when it is full. It always reports
// len(p), nil.
func (c *consoleLog) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(p)
	for len(p) > 0 && c.err == nil && c.f != nil {
		if c.n >= c.max {
			c.rotate()
			continue
		}
		k := min(int64(len(p)), c.max-c.n)
		w, err := c.f.Write(p[:k])
		c.n += int64(w)
		p = p[w:]
		if err != nil {
			c.err = err
		}
	}
	return n, nil
}

// rotate moves the full file to path.1 and starts a new one, which begins
// with a note saying so. Called with mu held.
func (c *consoleLog) rotate() {
	c.f.Close()
	c.f = nil
	if err := os.Rename(c.path, c.path+".1"); err != nil {
		c.err = err
		return
	}
	f, err := os.OpenFile(c.path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		c.err = err
		return
	}
	c.f, c.n = f, 0
	w, _ := fmt.Fprintf(f, "[cvm: the console reached %d bytes; the output before this line is in %s.1, older output is discarded]\n", c.max, c.path)
	c.n += int64(w)
}

// Close closes the file.
func (c *consoleLog) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.f == nil {
		return nil
	}
	err := c.f.Close()
	c.f = nil
	return err
}

package testhost

import (
	"os"
	"strings"
	"sync"
	"testing"
)

// Console collects a test host's console for a test (BootOptions.Log)
// and, when the test was given a file, copies it there as it comes. Safe
// for concurrent writes.
type Console struct {
	mu  sync.Mutex
	b   strings.Builder
	tee *os.File
}

// NewConsole returns a Console that also writes to the file at path ("":
// none); the file is closed when tb ends.
func NewConsole(tb testing.TB, path string) *Console {
	tb.Helper()
	c := &Console{}
	if path != "" {
		f, err := os.Create(path)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { f.Close() })
		c.tee = f
	}
	return c
}

func (c *Console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tee != nil {
		c.tee.Write(p)
	}
	return c.b.Write(p)
}

// String returns everything written so far.
func (c *Console) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.b.String()
}

// Tail returns the last n lines written so far.
func (c *Console) Tail(n int) string { return Tail(c.String(), n) }

// Tail returns the last n lines of s.
func Tail(s string, n int) string {
	l := strings.Split(s, "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

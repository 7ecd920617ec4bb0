package engine

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A guest that floods its console keeps at most two files of the bound,
// and the newest output survives.
func TestConsoleLogRotates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console.log")
	if err := os.WriteFile(path+".1", []byte("stale"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := openConsoleLog(path, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + ".1"); !os.IsNotExist(err) {
		t.Errorf("a console.log.1 from an earlier guest was kept: %v", err)
	}
	line := bytes.Repeat([]byte("x"), 99)
	line = append(line, '\n')
	for range 50 { // 5000 bytes: several rotations
		if n, err := c.Write(line); n != len(line) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	if _, err := c.Write([]byte("the end\n")); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	cur, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	old, err := os.ReadFile(path + ".1")
	if err != nil {
		t.Fatal(err)
	}
	if len(cur) > 1000 || len(old) > 1000 {
		t.Errorf("files of %d and %d bytes, want at most 1000 each", len(cur), len(old))
	}
	if !strings.HasSuffix(string(cur), "the end\n") {
		t.Errorf("the newest output is not at the end of %s: %q", path, cur[max(0, len(cur)-40):])
	}
	if !strings.HasPrefix(string(cur), "[cvm: the console reached 1000 bytes") {
		t.Errorf("the rotated file does not start with the note: %q", cur[:min(len(cur), 60)])
	}
	// Writes after Close are dropped, not failed: the guest never stalls.
	if n, err := c.Write([]byte("late")); n != 4 || err != nil {
		t.Errorf("Write after Close = %d, %v", n, err)
	}
}

func TestConsoleLogUnderBoundIsOneFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "console.log")
	c, err := openConsoleLog(path, MaxConsoleLog)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("boot\n"))
	c.Close()
	if b, _ := os.ReadFile(path); string(b) != "boot\n" {
		t.Errorf("console.log = %q", b)
	}
	if _, err := os.Stat(path + ".1"); !os.IsNotExist(err) {
		t.Errorf("console.log.1 exists without a rotation: %v", err)
	}
}

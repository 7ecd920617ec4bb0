package vmm

import (
	"os"
	"path/filepath"
	"testing"
)

// realKernel returns the Debian cloud kernel fetched by
// scripts/fetch-test-inputs.sh, or skips.
func realKernel(t testing.TB) []byte {
	t.Helper()
	p := filepath.Join("..", ".cache", "inputs", "vmlinuz-6.1.0-56-cloud-amd64")
	b, err := os.ReadFile(p)
	if os.IsNotExist(err) {
		t.Skipf("test input %s missing: run scripts/fetch-test-inputs.sh", p)
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// diskFile writes a file of size bytes and returns its path.
func diskFile(t *testing.T, size int) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, make([]byte, size), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

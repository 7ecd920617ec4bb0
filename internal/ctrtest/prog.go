package ctrtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// BuildProg builds the static test program (internal/ctrtest/prog) into
// dir/prog and returns its path. The go build cache makes repeated builds
// cheap.
func BuildProg(t testing.TB, dir string) string {
	t.Helper()
	_, self, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("ctrtest: cannot locate the prog source")
	}
	out := filepath.Join(dir, "prog")
	cmd := exec.Command(goTool(), "build", "-trimpath", "-o", out, "./prog")
	cmd.Dir = filepath.Dir(self)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ctrtest: go build prog: %v\n%s", err, b)
	}
	return out
}

// goTool is the go command of the running toolchain.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}

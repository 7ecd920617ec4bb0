//go:build linux

// Command ctrinit is the /init of the test host of package
// launcher/shim/builtintest: inside QEMU (TCG, -cpu max) it mounts proc,
// sysfs, devtmpfs and cgroup2, loads the modules in /etc/modules
// (irqbypass, kvm, kvm-amd), brings up loopback, names the host, and runs
// the test binary of /etc/cvmtest/ctrinit.json, its output on the console
// behind "T| ". It prints the binary's outcome as one
// "CVMHOST: test {json}" line (internal/testhost.TestRun), then powers off.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/greatjail/cvm/internal/testhost"
	"github.com/greatjail/cvm/internal/testhost/hostproc"
	"github.com/greatjail/cvm/launcher/shim/builtintest"
)

// say prints a result line for the outer test.
var say = hostproc.Say

func main() { hostproc.Main(run) }

func run() error {
	if err := hostproc.Mount(); err != nil {
		return err
	}
	b, err := os.ReadFile(builtintest.InitConfigPath)
	if err != nil {
		return err
	}
	var cfg builtintest.InitConfig
	if err := json.Unmarshal(b, &cfg); err != nil {
		return fmt.Errorf("%s: %w", builtintest.InitConfigPath, err)
	}
	if err := hostproc.LoadKVM(cfg.ModuleParams); err != nil {
		return err
	}
	if err := loopbackUp(); err != nil {
		return err
	}
	if err := unix.Sethostname([]byte("testhost")); err != nil {
		return fmt.Errorf("sethostname: %w", err)
	}
	r := runTest(cfg)
	j, err := json.Marshal(r)
	if err != nil {
		return err
	}
	say("test %s", j)
	return nil
}

// runTest runs the test binary and summarises its outcome as hostinit
// does: its "--- " lines, and the error.
func runTest(cfg builtintest.InitConfig) testhost.TestRun {
	var out strings.Builder
	cmd := exec.Command(cfg.Test, cfg.Args...)
	cmd.Env = cfg.Env
	cmd.Dir = "/tmp"
	pw := hostproc.Prefixed("T| ")
	cmd.Stdout = io.MultiWriter(&out, pw)
	cmd.Stderr = cmd.Stdout
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err := cmd.Run()
	pw.Flush() // the copying goroutine has ended
	say("ran %s for %.1fs: %v", filepath.Base(cfg.Test), time.Since(start).Seconds(), err)
	var summary []string
	for _, l := range strings.Split(out.String(), "\n") {
		if t := strings.TrimSpace(l); strings.HasPrefix(t, "--- ") {
			summary = append(summary, t)
		}
	}
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			summary = append(summary, err.Error())
		}
	}
	return testhost.TestRun{Name: filepath.Base(cfg.Test), OK: err == nil, Summary: strings.Join(summary, "\n")}
}

// loopbackUp brings lo up; the kernel gives it 127.0.0.1/8 (the CRI
// streaming server of crictl exec listens there).
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("loopback: socket: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("loopback: SIOCGIFFLAGS lo: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("loopback: SIOCSIFFLAGS lo up: %w", err)
	}
	return nil
}

//go:build linux

// Command launchinit is the /init of the test host of package
// launcher/builtintest: inside QEMU (TCG, -cpu max) it loads the modules in
// /etc/modules (irqbypass, kvm, kvm-amd), brings up loopback, starts the key
// broker, registers the launch with it and runs each `cvm launch` of
// /etc/cvmtest/launch.json, printing each outcome as one
// "CVMHOST: launch {json}" line on the console, then powers off.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/greatjail/cvm/internal/testhost/hostproc"
	"github.com/greatjail/cvm/launcher/builtintest"
)

// say prints a result line for the outer test.
var say = hostproc.Say

func main() { hostproc.Main(run) }

// Bounds on hangs (TCG nested guests are slow; these bound a hang, not a
// speed).
const (
	readyWait  = 2 * time.Minute
	launchWait = 8 * time.Minute
	setupWait  = 2 * time.Minute
)

func run() error {
	if err := hostproc.Mount(); err != nil {
		return err
	}
	if err := hostproc.LoadKVM(nil); err != nil {
		return err
	}
	if err := loopbackUp(); err != nil {
		return err
	}
	b, err := os.ReadFile(builtintest.ConfigPath)
	if err != nil {
		return err
	}
	var cfg builtintest.Config
	if err := json.Unmarshal(b, &cfg); err != nil {
		return fmt.Errorf("%s: %w", builtintest.ConfigPath, err)
	}
	env := append(os.Environ(), cfg.Env...)

	broker := exec.Command(cfg.Broker[0], cfg.Broker[1:]...)
	broker.Env = env
	broker.Stdout, broker.Stderr = hostproc.Prefixed("KBS| "), hostproc.Prefixed("KBS| ")
	if err := broker.Start(); err != nil {
		return fmt.Errorf("start the broker %s: %w", cfg.Broker[0], err)
	}
	defer func() {
		broker.Process.Signal(syscall.SIGTERM)
		broker.Wait()
	}()
	if err := ready(env, cfg.Ready); err != nil {
		return err
	}
	say("broker ready")
	for _, argv := range cfg.Setup {
		ctx, cancel := context.WithTimeout(context.Background(), setupWait)
		out, err := command(ctx, env, argv).CombinedOutput()
		cancel()
		if err != nil {
			return fmt.Errorf("%s: %w\n%s", strings.Join(argv, " "), err, out)
		}
		say("setup ok: %s", strings.Join(argv, " "))
	}
	for _, c := range cfg.Cases {
		say("start %s", c.Name)
		r := launch(env, c)
		j, err := json.Marshal(r)
		if err != nil {
			return err
		}
		say("%s %s", builtintest.LaunchWord, j)
	}
	return nil
}

// ready retries argv until it succeeds.
func ready(env, argv []string) error {
	deadline := time.Now().Add(readyWait)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := command(ctx, env, argv).CombinedOutput()
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the broker is not ready after %v: %s: %w\n%s", readyWait, strings.Join(argv, " "), err, out)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// launch runs one case and copies its state directory's logs to the
// console.
func launch(env []string, c builtintest.Case) builtintest.Result {
	ctx, cancel := context.WithTimeout(context.Background(), launchWait)
	defer cancel()
	cmd := command(ctx, env, c.Argv)
	var so, se bytes.Buffer
	outw, errw := hostproc.Prefixed("L "+c.Name+" out| "), hostproc.Prefixed("L "+c.Name+" err| ")
	cmd.Stdout, cmd.Stderr = io.MultiWriter(&so, outw), io.MultiWriter(&se, errw)
	start := time.Now()
	err := cmd.Run()
	outw.Flush()
	errw.Flush()
	r := builtintest.Result{Name: c.Name, ExitCode: -1, Seconds: time.Since(start).Seconds()}
	var ee *exec.ExitError
	switch {
	case err == nil:
		r.ExitCode = 0
	case errors.As(err, &ee) && ee.Exited():
		r.ExitCode = ee.ExitCode()
	default:
		r.Err = err.Error()
	}
	r.Stdout, r.Stderr = so.String(), se.String()
	if c.StateDir != "" {
		for _, f := range []string{"console.log", "agent.log", "engine.log"} {
			if b, err := os.ReadFile(filepath.Join(c.StateDir, f)); err == nil {
				w := hostproc.Prefixed("S " + c.Name + " " + f + "| ")
				w.Write(b)
				w.Flush()
			}
		}
	}
	return r
}

func command(ctx context.Context, env, argv []string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Dir = "/tmp"
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// loopbackUp brings lo up; the kernel gives it 127.0.0.1/8.
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

package agent

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/greatjail/cvm/guest-agent/containers"
	"github.com/greatjail/cvm/guest-agent/evidence"
	"github.com/greatjail/cvm/guest-agent/initproc"
	"github.com/greatjail/cvm/guest-agent/launchconfig"
	"github.com/greatjail/cvm/guest-agent/link"
	"github.com/greatjail/cvm/kbs/client"
	agentv1 "github.com/greatjail/cvm/proto/cvm/agent/v1"
	"golang.org/x/sys/unix"
)

// RunOptions are the guest agent binary's inputs.
type RunOptions struct {
	Unlocker Unlocker
	Version  string
	// Console receives the agent's log (the guest's /dev/console when nil).
	Console io.Writer
}

// ContainersDir is where pod mode keeps the containers' mounts and state.
const ContainersDir = "/run/cvm/containers"

// serialWait bounds how long Run looks for the cvm.link serial port once
// the kernel lists virtio-serial ports (ports appear as drivers probe).
const serialWait = 2 * time.Second

// Run is the guest agent as the initramfs's /init: as PID 1 it mounts the
// kernel file systems and loads the modules; it reads and validates the
// launch configuration, opens the link (the cvm.link serial port if the
// kernel has it, vsock port 1024 otherwise), forwards its log to a log
// stream and the console, and serves the Agent service on ttrpc streams
// until Shutdown; in pod mode, the Containers service too (processes
// started through the PID 1 reaper). As PID 1, any failure powers the guest off (after
// printing why); Run returns only when not PID 1 or when power-off fails.
func Run(ctx context.Context, o RunOptions) error {
	start := time.Now()
	pid1 := os.Getpid() == 1
	sys := initproc.Linux{}
	console := o.Console
	if console == nil {
		if f, err := os.OpenFile("/dev/console", os.O_WRONLY|unix.O_NOCTTY, 0); err == nil {
			console = f
			defer f.Close()
		} else {
			console = os.Stderr
		}
	}
	lg := &logSink{console: console}
	fail := func(err error) error {
		lg.Logf("cvm-agent: %v", err)
		if pid1 {
			lg.Logf("cvm-agent: powering off")
			return errors.Join(err, sys.PowerOff())
		}
		return err
	}
	if pid1 {
		if err := initproc.SetupDefault(sys, lg.Logf); err != nil {
			// /dev may be missing: say it on the inherited console too.
			fmt.Fprintf(os.Stderr, "cvm-agent: %v\n", err)
			return fail(err)
		}
	}
	reaper := initproc.NewReaper(nil)
	defer reaper.Stop()

	raw, err := os.ReadFile(launchconfig.ConfigPath)
	if err != nil {
		return fail(fmt.Errorf("reading the launch configuration: %w", err))
	}
	cfg, err := launchconfig.Parse(raw)
	if err != nil {
		return fail(fmt.Errorf("the launch configuration %s: %w", launchconfig.ConfigPath, err))
	}
	if cfg.IsPod() {
		lg.Logf("cvm-agent %s: pod mode, tee %s", o.Version, cfg.TEE)
	} else {
		lg.Logf("cvm-agent %s: tee %s, resource %q, entrypoint %s", o.Version, cfg.TEE, cfg.Resource, cfg.Entrypoint)
	}
	var ctrs agentv1.ContainersService
	var podAgent atomic.Pointer[Agent]
	if cfg.IsPod() {
		m, err := containers.New(containers.Options{Dir: ContainersDir, Start: reaper.Start,
			// The pod's released secrets, once the agent (a, below) has
			// attested; Create is served only after a is set.
			Secrets: func() []containers.Secret {
				if ag := podAgent.Load(); ag != nil {
					return ag.Secrets()
				}
				return nil
			}})
		if err != nil {
			return fail(err)
		}
		ctrs = &containers.Service{M: m}
	}

	conn, how, err := openLink(ctx)
	if err != nil {
		return fail(err)
	}
	session, err := link.Guest(conn)
	if err != nil {
		conn.Close()
		return fail(err)
	}
	defer session.Close()
	lg.Logf("cvm-agent: link up over %s", how)
	if c, err := session.Open(link.KindLog); err == nil {
		lg.attach(c)
	} else {
		lg.Logf("cvm-agent: no log stream: %v", err)
	}

	var provider client.Provider
	if cfg.Confidential() {
		if provider, err = evidence.ForConfig(cfg, session); err != nil {
			return fail(err)
		}
	}
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	a, err := New(Options{
		Config:   cfg,
		Provider: provider,
		DialKBS: func(context.Context) (net.Conn, error) {
			return session.Open(link.KindKBS)
		},
		Unlocker: o.Unlocker, Starter: reaper, System: sys, Rand: rand.Reader,
		Logf: lg.Logf, Version: o.Version, KernelRelease: unix.ByteSliceToString(uts.Release[:]),
		Start: start, Containers: ctrs,
	})
	if err != nil {
		return fail(err)
	}
	podAgent.Store(a)
	err = a.Serve(ctx, session.Listener(link.KindTTRPC))
	if err == nil {
		return nil // powered off... or not PID 1
	}
	return fail(err)
}

// openLink returns the guest's end of the link.
func openLink(ctx context.Context) (io.ReadWriteCloser, string, error) {
	if _, err := os.Stat(link.VirtioPortsDir); err == nil {
		deadline := time.Now().Add(serialWait)
		for {
			dev, err := link.FindSerialPort(link.VirtioPortsDir)
			if err == nil {
				c, err := link.SerialPort()
				return c, "virtio-serial /dev/" + dev, err
			}
			if time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	c, err := link.AcceptVsock(ctx, link.VsockPort)
	return c, fmt.Sprintf("vsock port %d", link.VsockPort), err
}

// logSink writes log lines to the console and, once attached, to the
// host's log stream. A failing log stream is dropped; the console stays.
type logSink struct {
	console io.Writer

	mu     sync.Mutex
	stream io.WriteCloser
	early  []string // lines before the stream, replayed to it
}

func (l *logSink) Logf(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	if !strings.HasSuffix(line, "\n") {
		line += "\n"
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	io.WriteString(l.console, line)
	if l.stream == nil {
		if len(l.early) < 256 {
			l.early = append(l.early, line)
		}
		return
	}
	if _, err := io.WriteString(l.stream, line); err != nil {
		l.stream.Close()
		l.stream = nil
		l.early = nil
	}
}

func (l *logSink) attach(w io.WriteCloser) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range l.early {
		if _, err := io.WriteString(w, line); err != nil {
			w.Close()
			return
		}
	}
	l.early = nil
	l.stream = w
}

//go:build linux

// Command hostinit is the /init of the VM tier's test host (see package
// internal/testhost): inside QEMU (TCG, -cpu max) it loads the modules in
// /etc/modules (irqbypass, kvm, kvm-amd), runs the check suite on every
// guest in /etc/cvmtest/host.json with the builtin VMM, prints each report
// as one "CVMHOST: report {json}" line on the console and powers off.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/greatjail/cvm/internal/testhost"
	"github.com/greatjail/cvm/internal/testhost/hostproc"
)

// say prints a result line for the outer test.
var say = hostproc.Say

func main() { hostproc.Main(run) }

func run() error {
	if err := hostproc.Mount(); err != nil {
		return err
	}
	if err := hostproc.LoadKVM(nil); err != nil {
		return err
	}
	b, err := os.ReadFile(testhost.HostConfigPath)
	if err != nil {
		return err
	}
	var cfg testhost.HostConfig
	if err := json.Unmarshal(b, &cfg); err != nil {
		return fmt.Errorf("%s: %w", testhost.HostConfigPath, err)
	}
	for _, g := range cfg.Bench {
		for range max(cfg.Rounds, 1) {
			bench("cvm", testhost.CVMBootArgs(cfg.VMM, g), g)
			if cfg.QEMU != "" {
				bench("qemu", testhost.QEMUBootArgs(cfg.QEMU, g), g)
			}
		}
	}
	for _, bin := range cfg.Tests {
		runTest(bin)
	}
	for i, g := range cfg.Guests {
		dir := filepath.Join("/tmp", fmt.Sprintf("guest%d", i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		say("start %s", g.Name)
		rep, err := testhost.Check(context.Background(), testhost.CheckOptions{
			VMM: cfg.VMM, Guest: g, Dir: dir, Console: hostproc.Prefixed("L2 " + g.Name + "| "),
		})
		if err != nil {
			say("fail %s: %v", g.Name, err)
			continue
		}
		j, err := json.Marshal(rep)
		if err != nil {
			return err
		}
		say("report %s", j)
		os.RemoveAll(dir)
	}
	return nil
}

// bench times one boot and prints it as a "timing" line.
func bench(name string, argv []string, g testhost.GuestConfig) {
	t, err := testhost.TimeBoot(context.Background(), name, argv, hostproc.Prefixed("B "+name+" "+g.Name+"| "))
	if err != nil {
		say("fail bench %s %s: %v", name, g.Name, err)
		return
	}
	j, _ := json.Marshal(t)
	say("timing %s", j)
}

// runTest runs one Go test binary and prints its outcome as a "test"
// line; its output goes to the console behind "T <name>| ".
func runTest(bin string) {
	name := filepath.Base(bin)
	var out strings.Builder
	cmd := exec.Command(bin, "-test.v", "-test.count=1", "-test.timeout=5m")
	cmd.Dir = "/tmp"
	tw := hostproc.Prefixed("T " + name + "| ")
	cmd.Stdout = io.MultiWriter(&out, tw)
	cmd.Stderr = cmd.Stdout
	err := cmd.Run()
	tw.Flush()
	var summary []string
	for _, l := range strings.Split(out.String(), "\n") {
		if t := strings.TrimSpace(l); strings.HasPrefix(t, "--- ") {
			summary = append(summary, t)
		}
	}
	if err != nil {
		summary = append(summary, err.Error())
	}
	j, _ := json.Marshal(testhost.TestRun{Name: name, OK: err == nil, Summary: strings.Join(summary, "\n")})
	say("test %s", j)
}

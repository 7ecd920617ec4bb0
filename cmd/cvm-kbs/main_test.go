package main

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The binaries under test, built once.
var cvmBin, kbsBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cvm-kbs-test")
	if err != nil {
		panic(err)
	}
	cvmBin, kbsBin = filepath.Join(dir, "cvm"), filepath.Join(dir, "cvm-kbs")
	for bin, pkg := range map[string]string{cvmBin: "../cvm", kbsBin: "."} {
		if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
			os.Stderr.Write(out)
			panic(err)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	code           int
	stdout, stderr string
}

func run(t *testing.T, dir, bin string, args ...string) result {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	err := cmd.Run()
	var ee *exec.ExitError
	code := 0
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s %v: %v", bin, args, err)
	}
	return result{code, so.String(), se.String()}
}

func must(t *testing.T, r result, what string) result {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("%s: exit %d\nstdout: %s\nstderr: %s", what, r.code, r.stdout, r.stderr)
	}
	return r
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// server is a running `cvm-kbs serve`.
type server struct {
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	exited chan struct{}
}

func serve(t *testing.T, dir string) *server {
	t.Helper()
	cmd := exec.Command(kbsBin, "serve", "--config", "kbs/kbs.yaml")
	cmd.Dir = dir
	var se bytes.Buffer
	cmd.Stderr = &se
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &server{cmd: cmd, stderr: &se}
	t.Cleanup(func() {
		select {
		case <-s.exited:
		default:
			cmd.Process.Kill()
			<-s.exited
		}
	})
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	s.exited = exited
	// Ready when the admin API answers.
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("cvm-kbs serve exited early: %s", se.String())
		default:
		}
		if r := run(t, dir, cvmBin, "kbs", "--admin-config", "kbs/admin.yaml", "resource", "list"); r.code == 0 {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("broker did not come up: %s", se.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop sends SIGTERM and checks a clean exit.
func (s *server) stop(t *testing.T) {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.exited:
	case <-time.After(20 * time.Second):
		t.Fatalf("serve did not stop within 20s of SIGTERM:\n%s", s.stderr.String())
	}
	if !s.cmd.ProcessState.Success() {
		t.Fatalf("serve after SIGTERM: %v\n%s", s.cmd.ProcessState, s.stderr.String())
	}
	if !strings.Contains(s.stderr.String(), "cvm-kbs stopped") {
		t.Errorf("serve log lacks a clean stop:\n%s", s.stderr.String())
	}
}

func TestBrokerEndToEnd(t *testing.T) {
	dir := t.TempDir()
	addr := freePort(t)
	must(t, run(t, dir, cvmBin, "attest", "sim", "init", "--dir", "sim"), "sim init")
	must(t, run(t, dir, kbsBin, "init", "--dir", "kbs", "--listen", addr, "--sim-root", "sim/root.pem"), "kbs init")
	if r := run(t, dir, kbsBin, "init", "--dir", "kbs", "--listen", addr); r.code == 0 {
		t.Error("a second init over an existing broker succeeded")
	}
	// Metrics on a free port too, so parallel runs do not collide.
	cfgPath := filepath.Join(dir, "kbs", "kbs.yaml")
	cfg, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	metricsAddr := freePort(t)
	cfg = regexp.MustCompile(`(?m)^metrics_listen:.*$`).ReplaceAll(cfg, []byte("metrics_listen: "+metricsAddr))
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	srv := serve(t, dir)
	admin := func(args ...string) result {
		return run(t, dir, cvmBin, append([]string{"kbs", "--admin-config", "kbs/admin.yaml"}, args...)...)
	}
	meas := strings.Repeat("ab", 48)
	secret := "disk key 0123456789"
	if err := os.WriteFile(filepath.Join(dir, "secret"), []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	fetch := func(extra ...string) result {
		return run(t, dir, cvmBin, append([]string{"kbs", "fetch", "--addr", addr, "--ca", "kbs/ca.pem", "--resource", "repo/key/disk", "--tee", "sim", "--sim-dir", "sim"}, extra...)...)
	}
	must(t, admin("resource", "put", "repo/key/disk", "--file", "secret"), "resource put")
	// No reference values yet: an empty broker releases nothing.
	if r := fetch("--measurement", meas); r.code != 1 || !strings.Contains(r.stderr, "denied") {
		t.Errorf("fetch before any reference value: exit %d, stderr %q; want a denial", r.code, r.stderr)
	}
	must(t, admin("refvalue", "add", "--tee", "sim", "--measurement", meas), "refvalue add")
	if r := must(t, fetch("--measurement", meas), "fetch"); r.stdout != secret {
		t.Errorf("fetch printed %q, want %q", r.stdout, secret)
	}
	if r := fetch("--measurement", meas, "--policy-debug"); r.code != 1 {
		t.Errorf("fetch as a debug guest: exit %d, want 1", r.code)
	}
	if r := fetch("--measurement", strings.Repeat("cd", 48)); r.code != 1 {
		t.Errorf("fetch with an unknown measurement: exit %d, want 1", r.code)
	}
	// A minimum TCB above the simulated chip's (snp 22) denies it.
	if err := os.WriteFile(filepath.Join(dir, "req.json"), []byte(`{"tee":"sim","min_tcb":{"Milan":{"raw":"0","bootloader":0,"tee":0,"snp":23,"microcode":0}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	must(t, admin("refvalue", "requirements", "--file", "req.json"), "requirements")
	if r := fetch("--measurement", meas); r.code != 1 {
		t.Errorf("fetch below the minimum TCB: exit %d, want 1", r.code)
	}
	if err := os.WriteFile(filepath.Join(dir, "req.json"), []byte(`{"tee":"sim","min_tcb":{"Milan":{"raw":"0","bootloader":0,"tee":0,"snp":22,"microcode":0}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	must(t, admin("refvalue", "requirements", "--file", "req.json"), "requirements")
	must(t, fetch("--measurement", meas), "fetch at the minimum TCB")
	// The audit log names the reasons the guest was not told.
	tail := must(t, admin("audit", "tail", "-n", "20"), "audit tail").stdout
	if !strings.Contains(tail, "fail debug") || !strings.Contains(tail, "fail measurement") || !strings.Contains(tail, "fail min_tcb") {
		t.Errorf("audit tail lacks the denial reasons:\n%s", tail)
	}
	must(t, admin("audit", "verify"), "audit verify")
	// An auditor reads but cannot change anything.
	if r := run(t, dir, cvmBin, "kbs", "--admin-config", "kbs/auditor.yaml", "resource", "put", "x/y", "--file", "secret"); r.code != 1 || !strings.Contains(r.stderr, "admin role") {
		t.Errorf("auditor put: exit %d, stderr %q", r.code, r.stderr)
	}
	must(t, run(t, dir, cvmBin, "kbs", "--admin-config", "kbs/auditor.yaml", "resource", "list"), "auditor list")
	// Policy dry run on claims from the verifier.
	must(t, run(t, dir, cvmBin, "attest", "sim", "report", "--dir", "sim", "--measurement", meas, "--out", "r.bin"), "sim report")
	must(t, run(t, dir, cvmBin, "attest", "sim", "certs", "--dir", "sim", "--out", "vcek.pem"), "sim certs")
	claims := must(t, run(t, dir, cvmBin, "attest", "verify", "--tee", "sim", "--report", "r.bin", "--certs", "vcek.pem", "--sim-root", "sim/root.pem"), "verify").stdout
	if err := os.WriteFile(filepath.Join(dir, "claims.json"), []byte(claims), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := must(t, admin("policy", "eval", "--resource", "repo/key/disk", "--claims", "claims.json"), "policy eval"); !strings.HasPrefix(r.stdout, "RELEASE") {
		t.Errorf("policy eval:\n%s", r.stdout)
	}
	// Prometheus metrics on their own listener count what happened.
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"cvm_kbs_releases_total 2", `cvm_kbs_attestations_total{result="ok",tee="sim"} 2`, `cvm_kbs_denials_total{reason="appraisal"}`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	srv.stop(t)

	// KEK rotation: new key first, rotate offline, then drop the old key.
	if err := os.WriteFile(filepath.Join(dir, "kbs", "kek-2.key"), []byte(strings.Repeat("5a", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	setKEKs := func(files ...string) {
		t.Helper()
		cfg, err := os.ReadFile(cfgPath)
		if err != nil {
			t.Fatal(err)
		}
		list := "kek_files:\n"
		for _, f := range files {
			list += "  - \"" + f + "\"\n"
		}
		cfg = regexp.MustCompile(`(?m)^kek_files:\n(  - .*\n)+`).ReplaceAll(cfg, []byte(list))
		if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	setKEKs("kek-2.key", "kek.key")
	if r := must(t, run(t, dir, kbsBin, "rotate-kek", "--config", "kbs/kbs.yaml"), "rotate-kek"); !strings.Contains(r.stdout, "re-encrypted 1 ") {
		t.Errorf("rotate-kek: %q, want 1 version re-encrypted", r.stdout)
	}
	setKEKs("kek-2.key")

	// Restart with only the new KEK: everything acknowledged is still there.
	srv = serve(t, dir)
	if r := must(t, fetch("--measurement", meas), "fetch after restart"); r.stdout != secret {
		t.Errorf("fetch after restart printed %q, want %q", r.stdout, secret)
	}
	must(t, admin("audit", "verify"), "audit verify after restart")
	if r := run(t, dir, kbsBin, "rotate-kek", "--config", "kbs/kbs.yaml"); r.code == 0 || !strings.Contains(r.stderr, "stop the broker") {
		t.Errorf("rotate-kek while serving: exit %d, stderr %q; want a refusal naming the running broker", r.code, r.stderr)
	}
	srv.stop(t)
}

func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{{"serve"}, {"init"}, {"serve", "--config", "nope.yaml"}, {"bogus-flag", "--x"}} {
		if r := run(t, dir, kbsBin, args...); r.code == 0 {
			t.Errorf("cvm-kbs %v: exit 0, want failure", args)
		}
	}
	if r := run(t, dir, kbsBin, "serve", "--config", "nope.yaml"); r.code != 2 || !strings.Contains(r.stderr, "nope.yaml") {
		t.Errorf("serve with a missing config: exit %d, stderr %q; want 2 naming the file", r.code, r.stderr)
	}
}

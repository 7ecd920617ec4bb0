package testhost

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeQEMU writes an executable that stands in for qemu-system-x86_64:
// the shell script body, which prints what a test host's console would.
func fakeQEMU(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "qemu")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// BootHost's outcomes without a real QEMU: a host that reports and powers
// off; one that reports done and then never exits (stopped after the
// grace, not failed); one with a fail line; one that ends early.
func TestBootHostOutcomes(t *testing.T) {
	for _, tc := range []struct {
		name, script string
		want         string // "" for success, else a part of the error
		log          string // a part of the log
		reports      int
	}{
		{name: "powers off", script: `echo 'CVMHOST: up'; echo 'CVMHOST: report {"Name":"a"}'; echo 'CVMHOST: done'`, reports: 1},
		{name: "done, never exits", script: `echo 'CVMHOST: up'; echo 'CVMHOST: report {"Name":"a"}'; echo 'CVMHOST: done'; exec sleep 600`,
			reports: 1, log: "did not power off within 200ms of its /init finishing"},
		{name: "fail line", script: `echo 'CVMHOST: up'; echo 'CVMHOST: fail case x broke'; echo 'CVMHOST: done'`, want: "test host failed: case x broke"},
		{name: "ends early", script: `echo 'CVMHOST: up'; exit 1`, want: "ended before its /init finished"},
		{name: "kernel oops", script: `echo '[    1.0] Oops: int3: 0000 [#1]'; echo 'CVMHOST: done'`, want: "kernel crashed: [    1.0] Oops: int3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var log bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			out, err := BootHost(ctx, BootOptions{QEMU: fakeQEMU(t, tc.script), Kernel: "/k", Initrd: "/i",
				Log: &log, PowerOffGrace: 200 * time.Millisecond})
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("BootHost = %v, want success\n%s", err, log.String())
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("BootHost = %v, want an error containing %q", err, tc.want)
			}
			if tc.log != "" && !strings.Contains(log.String(), tc.log) {
				t.Errorf("log %q lacks %q", log.String(), tc.log)
			}
			if out != nil && len(out.Reports) != tc.reports {
				t.Errorf("%d reports, want %d", len(out.Reports), tc.reports)
			}
		})
	}
}

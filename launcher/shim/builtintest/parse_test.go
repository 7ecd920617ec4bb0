package builtintest

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The console lines come from a real run (go test -v output of
// TestInTestHost behind ctrinit's "T| "), shortened.
func TestParse(t *testing.T) {
	console := `[    4.58] Run /init as init process
CVMHOST: up
T| === RUN   TestInTestHost
T|     inside_test.go:55: figures: containerd answered after 2.9s
T| === RUN   TestInTestHost/ctr_run
T|     inside_test.go:89: figures: case took 22.8s
T| === RUN   TestInTestHost/ctr_exit
T|     inside_test.go:109: ctr run --rm … exit 3: stdout "", exit 1
[   73.52] kvm: kvm [241]: vcpu0 Unhandled WRMSR(0xc0010007) = 0xffff
T| === RUN   TestInTestHost/crictl
T|     inside_test.go:82: not among the requested cases
T| === NAME  TestInTestHost
T|     daemon.go:293: containerd 24 log (tail):
T| --- FAIL: TestInTestHost (121.12s)
T|     --- PASS: TestInTestHost/ctr_run (51.71s)
T|     --- FAIL: TestInTestHost/ctr_exit (62.43s)
T|     --- SKIP: TestInTestHost/crictl (0.00s)
CVMHOST: done
`
	verdicts, outputs := parse(console)
	if diff := cmp.Diff(map[string]string{"ctr_run": "PASS", "ctr_exit": "FAIL", "crictl": "SKIP"}, verdicts); diff != "" {
		t.Errorf("verdicts (-want +got)\n%s", diff)
	}
	want := map[string]string{
		"": `=== RUN   TestInTestHost
    inside_test.go:55: figures: containerd answered after 2.9s
=== NAME  TestInTestHost
    daemon.go:293: containerd 24 log (tail):
--- FAIL: TestInTestHost (121.12s)
    --- PASS: TestInTestHost/ctr_run (51.71s)
    --- FAIL: TestInTestHost/ctr_exit (62.43s)
    --- SKIP: TestInTestHost/crictl (0.00s)
`,
		"ctr_run": `=== RUN   TestInTestHost/ctr_run
    inside_test.go:89: figures: case took 22.8s
`,
		"ctr_exit": `=== RUN   TestInTestHost/ctr_exit
    inside_test.go:109: ctr run --rm … exit 3: stdout "", exit 1
`,
		"crictl": `=== RUN   TestInTestHost/crictl
    inside_test.go:82: not among the requested cases
`,
	}
	if diff := cmp.Diff(want, outputs); diff != "" {
		t.Errorf("outputs (-want +got)\n%s", diff)
	}
}

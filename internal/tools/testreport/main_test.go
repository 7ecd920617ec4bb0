package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRun(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		wantCode int
		wantHas  []string
	}{
		{
			name: "pass and skip",
			in: `{"Action":"run","Package":"p","Test":"TestA"}
{"Action":"pass","Package":"p","Test":"TestA"}
{"Action":"run","Package":"p","Test":"TestB"}
{"Action":"output","Package":"p","Test":"TestB","Output":"=== RUN   TestB\n"}
{"Action":"output","Package":"p","Test":"TestB","Output":"    b_test.go:9: tier kvm: /dev/kvm missing\n"}
{"Action":"output","Package":"p","Test":"TestB","Output":"--- SKIP: TestB (0.00s)\n"}
{"Action":"skip","Package":"p","Test":"TestB"}
{"Action":"pass","Package":"p","Elapsed":0.5}
`,
			wantCode: 0,
			wantHas:  []string{"ok   p (0.5s)", "p TestB: tier kvm: /dev/kvm missing", "1 passed, 0 failed, 1 skipped"},
		},
		{
			name: "failure shows output",
			in: `{"Action":"output","Package":"p","Test":"TestC","Output":"    c_test.go:3: got 1, want 2\n"}
{"Action":"fail","Package":"p","Test":"TestC"}
{"Action":"fail","Package":"p","Elapsed":1}
`,
			wantCode: 1,
			wantHas:  []string{"=== FAILED p.TestC", "got 1, want 2", "FAIL p", "0 passed, 1 failed, 0 skipped"},
		},
		{
			name: "build failure outside tests",
			in: `# p
p/x.go:1:1: syntax error
{"Action":"output","Package":"p","Output":"FAIL\tp [build failed]\n"}
{"Action":"fail","Package":"p","Elapsed":0}
`,
			wantCode: 1,
			wantHas:  []string{"p/x.go:1:1: syntax error", "=== FAILED p"},
		},
		{
			name:     "nothing ran",
			in:       "",
			wantCode: 1,
			wantHas:  []string{"no test ran"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			code, err := run(strings.NewReader(tc.in), &out)
			if err != nil {
				t.Fatal(err)
			}
			if code != tc.wantCode {
				t.Errorf("run() code = %d, want %d\n%s", code, tc.wantCode, out.String())
			}
			for _, s := range tc.wantHas {
				if !strings.Contains(out.String(), s) {
					t.Errorf("output lacks %q:\n%s", s, out.String())
				}
			}
		})
	}
}

func TestSkipReason(t *testing.T) {
	got := skipReason([]string{"=== RUN   TestX\n", "    x_test.go:12: needs root: running as uid 1000\n", "--- SKIP: TestX (0.00s)\n"})
	if diff := cmp.Diff("needs root: running as uid 1000", got); diff != "" {
		t.Errorf("skipReason() mismatch (-want +got):\n%s", diff)
	}
}

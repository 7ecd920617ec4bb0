package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParse(t *testing.T) {
	tests := []struct {
		line   string
		name   string
		ns     float64
		wantOK bool
	}{
		{"BenchmarkVerify-2   	    1000	   1500000 ns/op	   12345 B/op", "BenchmarkVerify", 1500000, true},
		{"BenchmarkSignatureBound 	 2000	 500000 ns/op", "BenchmarkSignatureBound", 500000, true},
		{"BenchmarkX-2 --- FAIL", "", 0, false},
	}
	for _, tc := range tests {
		name, ns, ok := parse(tc.line)
		if diff := cmp.Diff([]any{tc.name, tc.ns, tc.wantOK}, []any{name, ns, ok}); diff != "" {
			t.Errorf("parse(%q) mismatch (-want +got):\n%s", tc.line, diff)
		}
	}
}

func TestRun(t *testing.T) {
	in := "pkg: github.com/greatjail/cvm/attestation/sevsnp\nBenchmarkVerify-2 100 2000000 ns/op\nBenchmarkSignatureBound-2 100 500000 ns/op\nok\n"
	var out bytes.Buffer
	if err := run(strings.NewReader(in), &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "attestation/sevsnp") || !strings.Contains(out.String(), "0.250") {
		t.Errorf("output lacks the sevsnp row with ratio 0.250:\n%s", out.String())
	}
	if err := run(strings.NewReader("pkg: x\nBenchmarkVerify-2 1 1 ns/op\n"), &out); err == nil {
		t.Error("run() with no complete pair succeeded, want error")
	}
}

func TestRunRelease(t *testing.T) {
	in := "pkg: github.com/greatjail/cvm/kbs\nBenchmarkRelease/clients=16-2 100 2000000 ns/op 20.5 p50-ms 40.25 p99-ms\nBenchmarkReportVerification-2 100 500000 ns/op\n"
	var out bytes.Buffer
	if err := run(strings.NewReader(in), &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"16", "500", "20.50", "40.25", "2000", "0.250"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestRunMeasure(t *testing.T) {
	in := "pkg: github.com/greatjail/cvm/attestation/tdxmeasure\nBenchmarkMeasure-2 100 4000000 ns/op\nBenchmarkHashBound-2 100 3000000 ns/op\n"
	var out bytes.Buffer
	if err := run(strings.NewReader(in), &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "attestation/tdxmeasure") || !strings.Contains(out.String(), "0.750") {
		t.Errorf("output lacks the tdxmeasure row with ratio 0.750:\n%s", out.String())
	}
}

func TestRunLaunch(t *testing.T) {
	in := "pkg: github.com/greatjail/cvm/launcher\nBenchmarkLaunch/engine=qemu-2 1 9000000000 ns/op 120 build-ms 6000 boot-ms 300 attest-ms 200 unlock-ms 7500 first-output-ms\n"
	var out bytes.Buffer
	if err := run(strings.NewReader(in), &out); err != nil {
		t.Fatal(err)
	}
	var row string
	for _, l := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(l, "qemu ") {
			row = l
		}
	}
	if diff := cmp.Diff([]string{"qemu", "120", "6000", "300", "200", "7500", "9000", "80.0"}, strings.Fields(row)); diff != "" {
		t.Errorf("launch row (-want +got):\n%s\n%s", diff, out.String())
	}
}

func TestRunRuntimes(t *testing.T) {
	in := "pkg: github.com/greatjail/cvm/launcher/shim/vmtest\n" +
		"BenchmarkRuntime/runtime=cvm-2 1 9000000000 ns/op 6000 first-output-ms\n" +
		"BenchmarkRuntime/runtime=runc-2 5 300000000 ns/op 200.0 first-output-ms\nok\n"
	var out bytes.Buffer
	if err := run(strings.NewReader(in), &out); err != nil {
		t.Fatal(err)
	}
	var rows []string
	for _, l := range strings.Split(out.String(), "\n") {
		if f := strings.Fields(l); len(f) == 5 && (f[0] == "cvm" || f[0] == "runc") {
			rows = append(rows, strings.Join(f, " "))
		}
	}
	want := []string{"cvm 6000 9000 30.0 30.0", "runc 200 300 1.0 1.0"}
	if diff := cmp.Diff(want, rows); diff != "" {
		t.Errorf("runtime rows (-want +got):\n%s\n%s", diff, out.String())
	}
	// Without runc, no ratio.
	out.Reset()
	if err := run(strings.NewReader("BenchmarkRuntime/runtime=cvm-2 1 9000000000 ns/op 6000 first-output-ms\n"), &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "cvm") || !strings.Contains(out.String(), " - ") {
		t.Errorf("a cvm-only run should print its row with no ratio:\n%s", out.String())
	}
}

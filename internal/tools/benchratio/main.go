// Command benchratio reads `go test -bench` output on stdin, passes it
// through, and then prints, for every package that has both
// BenchmarkVerify and BenchmarkSignatureBound, the verification rate next to
// the rate of the signature checks that bound it, and their ratio. Both
// numbers come from the same run on the same machine.
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
)

// pair is a verifier's two benchmarks, ns/op; 0 = not seen.
type pair struct {
	verify, bound float64
}

// launch is one BenchmarkLaunch/engine=NAME line: a whole `cvm launch`,
// split into its steps (ms).
type launch struct {
	engine                                  string
	build, boot, attest, unlock, first, all float64
}

// runtimeRun is one BenchmarkRuntime/runtime=NAME line: one `ctr run
// --rm` under containerd with that runtime (ms).
type runtimeRun struct {
	name       string
	first, all float64
}

// release is one BenchmarkRelease/clients=N line.
type release struct {
	pkg, clients string
	ns, p50, p99 float64
}

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "benchratio:", err)
		os.Exit(1)
	}
}

func run(in io.Reader, out io.Writer) error {
	pairs := map[string]*pair{}
	measures := map[string]*pair{} // BenchmarkMeasure vs BenchmarkHashBound
	var releases []release
	var launches []launch
	var runtimes []runtimeRun
	verification := map[string]float64{} // pkg -> BenchmarkReportVerification ns/op
	pkg := ""
	failed := false
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		line := sc.Text()
		fmt.Fprintln(out, line)
		switch {
		case strings.HasPrefix(line, "pkg: "):
			pkg = strings.TrimPrefix(line, "pkg: ")
		case strings.HasPrefix(line, "FAIL"), strings.HasPrefix(line, "--- FAIL"):
			failed = true
		case strings.HasPrefix(line, "Benchmark"):
			name, ns, ok := parse(line)
			if !ok {
				continue
			}
			p := pairs[pkg]
			if p == nil {
				p = &pair{}
				pairs[pkg] = p
			}
			switch {
			case name == "BenchmarkVerify":
				p.verify = ns
			case name == "BenchmarkSignatureBound":
				p.bound = ns
			case name == "BenchmarkMeasure":
				measure(measures, pkg).verify = ns
			case name == "BenchmarkHashBound":
				measure(measures, pkg).bound = ns
			case name == "BenchmarkReportVerification":
				verification[pkg] = ns
			case strings.HasPrefix(name, "BenchmarkLaunch/engine="):
				launches = append(launches, launch{engine: strings.TrimPrefix(name, "BenchmarkLaunch/engine="),
					build: metric(line, "build-ms"), boot: metric(line, "boot-ms"), attest: metric(line, "attest-ms"),
					unlock: metric(line, "unlock-ms"), first: metric(line, "first-output-ms"), all: ns / 1e6})
			case strings.HasPrefix(name, "BenchmarkRuntime/runtime="):
				runtimes = append(runtimes, runtimeRun{name: strings.TrimPrefix(name, "BenchmarkRuntime/runtime="),
					first: metric(line, "first-output-ms"), all: ns / 1e6})
			case strings.HasPrefix(name, "BenchmarkRelease/clients="):
				releases = append(releases, release{pkg: pkg, clients: strings.TrimPrefix(name, "BenchmarkRelease/clients="), ns: ns,
					p50: metric(line, "p50-ms"), p99: metric(line, "p99-ms")})
			}
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	pkgs := make([]string, 0, len(pairs))
	for p, v := range pairs {
		if v.verify > 0 && v.bound > 0 {
			pkgs = append(pkgs, p)
		}
	}
	sort.Strings(pkgs)
	if len(pkgs) > 0 {
		fmt.Fprintf(out, "\n%-40s %14s %20s %8s\n", "verifier", "verify/s", "signature bound/s", "ratio")
		for _, p := range pkgs {
			v := pairs[p]
			fmt.Fprintf(out, "%-40s %14.0f %20.0f %8.3f\n", strings.TrimPrefix(p, "github.com/greatjail/cvm/"), 1e9/v.verify, 1e9/v.bound, v.bound/v.verify)
		}
		fmt.Fprintln(out, "ratio = verifications per second / signature checks per second (1.0 = as fast as the signature bound)")
	}
	var mpkgs []string
	for p, v := range measures {
		if v.verify > 0 && v.bound > 0 {
			mpkgs = append(mpkgs, p)
		}
	}
	sort.Strings(mpkgs)
	if len(mpkgs) > 0 {
		fmt.Fprintf(out, "\n%-40s %14s %20s %8s\n", "measurement", "ms/measure", "hash bound ms", "ratio")
		for _, p := range mpkgs {
			v := measures[p]
			fmt.Fprintf(out, "%-40s %14.3f %20.3f %8.3f\n", strings.TrimPrefix(p, "github.com/greatjail/cvm/"), v.verify/1e6, v.bound/1e6, v.bound/v.verify)
		}
		fmt.Fprintln(out, "ratio = time of the hashing alone / time of the whole measurement (1.0 = as fast as hashing the same bytes)")
	}
	if len(releases) > 0 {
		fmt.Fprintf(out, "\n%-12s %8s %12s %10s %10s %22s %8s\n", "key broker", "clients", "releases/s", "p50 ms", "p99 ms", "verification bound/s", "ratio")
		for _, r := range releases {
			bound := verification[r.pkg]
			ratio, bps := 0.0, 0.0
			if bound > 0 {
				bps = 1e9 / bound
				ratio = bound / r.ns
			}
			fmt.Fprintf(out, "%-12s %8s %12.0f %10.2f %10.2f %22.0f %8.3f\n", "kbs", r.clients, 1e9/r.ns, r.p50, r.p99, bps, ratio)
		}
		fmt.Fprintln(out, "attest + release over gRPC/TLS on loopback, whole guest flow (challenge, attest, release, HPKE open);")
		fmt.Fprintln(out, "ratio = releases per second / report verifications per second on all cores (1.0 = as fast as verification alone)")
	}
	if len(launches) > 0 {
		fmt.Fprintf(out, "\n%-14s %10s %10s %10s %10s %16s %12s %8s\n", "launch", "build ms", "boot ms", "attest ms", "unlock ms", "first output ms", "whole ms", "boot %")
		for _, l := range launches {
			share := 0.0
			if l.first > 0 {
				share = 100 * l.boot / l.first
			}
			fmt.Fprintf(out, "%-14s %10.0f %10.0f %10.0f %10.0f %16.0f %12.0f %8.1f\n", l.engine, l.build, l.boot, l.attest, l.unlock, l.first, l.all, share)
		}
		fmt.Fprintln(out, "one cvm launch (simulated TEE) from start to the workload's first output: build = initramfs and measurement,")
		fmt.Fprintln(out, "boot = engine start to a ready agent, attest and unlock as the agent timed them; boot % = boot / first output")
	}
	if len(runtimes) > 0 {
		printRuntimes(out, runtimes)
	}
	if failed {
		return fmt.Errorf("a benchmark failed")
	}
	if len(pkgs) == 0 && len(releases) == 0 && len(mpkgs) == 0 && len(launches) == 0 && len(runtimes) == 0 {
		return fmt.Errorf("no BenchmarkVerify/BenchmarkSignatureBound pairs or BenchmarkRelease found")
	}
	return nil
}

// printRuntimes prints the containerd runtimes side by side, each with its
// ratio to runc's (the baseline) when runc ran.
func printRuntimes(out io.Writer, runtimes []runtimeRun) {
	var base *runtimeRun
	for i := range runtimes {
		if runtimes[i].name == "runc" {
			base = &runtimes[i]
		}
	}
	fmt.Fprintf(out, "\n%-14s %16s %12s %14s %12s\n", "ctr run", "first output ms", "exit ms", "first / runc", "exit / runc")
	for _, r := range runtimes {
		fr, er := "-", "-"
		if base != nil && base.first > 0 && base.all > 0 {
			fr, er = fmt.Sprintf("%.1f", r.first/base.first), fmt.Sprintf("%.1f", r.all/base.all)
		}
		fmt.Fprintf(out, "%-14s %16.0f %12.0f %14s %12s\n", r.name, r.first, r.all, fr, er)
	}
	fmt.Fprintln(out, "one `ctr run --rm` under containerd 2.4 (pod start, container, output, exit, delete); first output = from the")
	fmt.Fprintln(out, "start of ctr run to the container's first output byte; ratios against io.containerd.runc.v2 on the same machine")
}

func measure(m map[string]*pair, pkg string) *pair {
	if m[pkg] == nil {
		m[pkg] = &pair{}
	}
	return m[pkg]
}

// metric returns the value reported for unit on a benchmark line, or 0.
func metric(line, unit string) float64 {
	f := strings.Fields(line)
	for i := 1; i < len(f); i++ {
		if f[i] == unit {
			v, _ := strconv.ParseFloat(f[i-1], 64)
			return v
		}
	}
	return 0
}

// parse reads "BenchmarkName-2   1000   12345 ns/op ..." and returns the name
// without the GOMAXPROCS suffix and the ns/op.
func parse(line string) (string, float64, bool) {
	f := strings.Fields(line)
	if len(f) < 4 {
		return "", 0, false
	}
	name := f[0]
	if i := strings.LastIndex(name, "-"); i > 0 {
		if _, err := strconv.Atoi(name[i+1:]); err == nil {
			name = name[:i]
		}
	}
	for i := 2; i+1 < len(f); i++ {
		if f[i+1] == "ns/op" {
			ns, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return "", 0, false
			}
			return name, ns, true
		}
	}
	return "", 0, false
}

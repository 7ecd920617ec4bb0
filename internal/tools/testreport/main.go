// Command testreport reads `go test -json` on stdin and prints a readable
// report: each package's result, the output of every failed test, every
// skipped test with the reason it gave (so a missing prerequisite is named),
// and a closing line "N passed, N failed, N skipped". It exits non-zero if
// any test or package failed or the stream ended without results.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// event is one line of `go test -json` (see `go doc test2json`).
type event struct {
	Action  string
	Package string
	Test    string
	Output  string
	Elapsed float64
}

type key struct{ pkg, test string }

func main() {
	code, err := run(os.Stdin, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testreport:", err)
		os.Exit(2)
	}
	os.Exit(code)
}

func run(in io.Reader, out io.Writer) (int, error) {
	output := map[key][]string{}
	var passed, failed, skipped int
	var failedTests []key
	skips := map[key]string{}
	var pkgLines []string
	failedPkgs := 0
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &e) != nil {
			// Build errors and other non-JSON output go straight through.
			fmt.Fprintf(out, "%s\n", line)
			continue
		}
		k := key{e.Package, e.Test}
		switch e.Action {
		case "output":
			output[k] = append(output[k], e.Output)
		case "pass":
			if e.Test != "" {
				passed++
			} else {
				pkgLines = append(pkgLines, fmt.Sprintf("ok   %s (%.1fs)", e.Package, e.Elapsed))
			}
		case "skip":
			if e.Test != "" {
				skipped++
				skips[k] = skipReason(output[k])
			} else {
				pkgLines = append(pkgLines, fmt.Sprintf("--   %s (no tests)", e.Package))
			}
		case "fail":
			if e.Test != "" {
				failed++
				failedTests = append(failedTests, k)
			} else {
				failedPkgs++
				pkgLines = append(pkgLines, fmt.Sprintf("FAIL %s (%.1fs)", e.Package, e.Elapsed))
				if len(output[k]) > 0 && !hasTestFailure(failedTests, e.Package) {
					// A package that failed outside any test (build error,
					// panic in init, TestMain): show its output.
					failedTests = append(failedTests, k)
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return 2, err
	}
	for _, k := range failedTests {
		name := k.pkg
		if k.test != "" {
			name += "." + k.test
		}
		fmt.Fprintf(out, "\n=== FAILED %s\n%s", name, strings.Join(output[k], ""))
	}
	fmt.Fprintln(out)
	for _, l := range pkgLines {
		fmt.Fprintln(out, l)
	}
	if len(skips) > 0 {
		fmt.Fprintf(out, "\nskipped tests and why:\n")
		keys := make([]key, 0, len(skips))
		for k := range skips {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool {
			if keys[i].pkg != keys[j].pkg {
				return keys[i].pkg < keys[j].pkg
			}
			return keys[i].test < keys[j].test
		})
		for _, k := range keys {
			fmt.Fprintf(out, "  %s %s: %s\n", shortPkg(k.pkg), k.test, skips[k])
		}
	}
	fmt.Fprintf(out, "\n%d passed, %d failed, %d skipped\n", passed, failed, skipped)
	if failed > 0 || failedPkgs > 0 {
		return 1, nil
	}
	if passed == 0 {
		fmt.Fprintln(out, "testreport: no test ran")
		return 1, nil
	}
	return 0, nil
}

func hasTestFailure(ks []key, pkg string) bool {
	for _, k := range ks {
		if k.pkg == pkg {
			return true
		}
	}
	return false
}

// skipReason extracts the message a test gave to t.Skip from its output.
func skipReason(lines []string) string {
	var msg []string
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "=== ") || strings.HasPrefix(t, "--- SKIP") {
			continue
		}
		// Drop the "file_test.go:12: " prefix go test adds.
		if i := strings.Index(t, ".go:"); i >= 0 {
			if j := strings.Index(t[i+4:], ": "); j >= 0 {
				t = t[i+4+j+2:]
			}
		}
		msg = append(msg, t)
	}
	if len(msg) == 0 {
		return "(no reason given)"
	}
	return strings.Join(msg, " / ")
}

// shortPkg trims the module path from a package path for display.
func shortPkg(p string) string {
	const mod = "github.com/greatjail/cvm"
	if p == mod {
		return "(root)"
	}
	return strings.TrimPrefix(p, mod+"/")
}

package policy_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestPure checks that the package stays pure: no I/O, no cryptography, no
// clock. Its non-test files import only the attestation package (for the
// claims types), cel-go and a few standard packages, and never read the
// clock.
func TestPure(t *testing.T) {
	allowed := []string{
		"github.com/greatjail/cvm/attestation",
		"bytes", "encoding/json", "errors", "fmt", "io", "slices", "strconv", "strings",
		"sync", "time", "unicode", "unicode/utf8",
	}
	clock := []string{"Now", "Since", "Until", "After", "Tick", "NewTimer", "NewTicker", "AfterFunc", "Sleep"}
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	n := 0
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		n++
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if !slices.Contains(allowed, path) && !strings.HasPrefix(path, "cel.dev/cel-go/") {
				t.Errorf("%s imports %s; policy is pure and may import only attestation, cel-go and %v", name, path, allowed[1:])
			}
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if sel, ok := n.(*ast.SelectorExpr); ok {
				if id, ok := sel.X.(*ast.Ident); ok && id.Name == "time" && slices.Contains(clock, sel.Sel.Name) {
					t.Errorf("%s: time.%s reads the clock; the time is a parameter", fset.Position(sel.Pos()), sel.Sel.Name)
				}
			}
			return true
		})
	}
	if n == 0 {
		t.Fatal("no source files found; is the test running in the package directory?")
	}
}

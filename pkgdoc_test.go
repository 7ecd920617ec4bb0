package cvm

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPackageDocs checks that every package in the repository has exactly
// one package doc comment, in a non-test file.
func TestPackageDocs(t *testing.T) {
	dirs := map[string][]string{} // dir -> non-test .go files
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != "." && (strings.HasPrefix(name, ".") || name == "bin" || name == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") {
			dirs[filepath.Dir(path)] = append(dirs[filepath.Dir(path)], path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) < 5 {
		t.Fatalf("found only %d packages; is the test running at the repository root?", len(dirs))
	}
	for dir, files := range dirs {
		var withDoc []string
		fset := token.NewFileSet()
		for _, f := range files {
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			af, err := parser.ParseFile(fset, f, src, parser.PackageClauseOnly|parser.ParseComments)
			if err != nil {
				t.Errorf("%s: %v", f, err)
				continue
			}
			if strings.Contains(string(src), "\n//go:build ignore") {
				continue // a generator script, not part of the package
			}
			if strings.HasPrefix(string(src), "// Code generated ") {
				continue // generator headers (protoc-gen-go-ttrpc's) are not package docs
			}
			if af.Doc != nil && strings.TrimSpace(af.Doc.Text()) != "" {
				withDoc = append(withDoc, f)
			}
		}
		switch len(withDoc) {
		case 1:
		case 0:
			t.Errorf("package in %s has no package doc comment (add one to its main file)", dir)
		default:
			t.Errorf("package in %s has %d package doc comments, want exactly 1: %v", dir, len(withDoc), withDoc)
		}
	}
}

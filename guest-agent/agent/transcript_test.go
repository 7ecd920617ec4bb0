package agent

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the expected output in testdata/*.txt")

// command is one step of a transcript: a line "name key=value ...", then
// "----", then the expected output up to a blank line.
type command struct {
	line int
	name string
	args map[string]string
	raw  string
	want string
	// comments are the # lines before it, kept by -rewrite.
	comments []string
}

func parseTranscript(t *testing.T, path string) []command {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cmds []command
	sc := bufio.NewScanner(f)
	n := 0
	var comments []string
	for sc.Scan() {
		n++
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			comments = append(comments, line)
		}
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		c := command{line: n, name: fields[0], args: map[string]string{}, raw: line, comments: comments}
		comments = nil
		for _, kv := range fields[1:] {
			k, v, _ := strings.Cut(kv, "=")
			c.args[k] = v
		}
		if !sc.Scan() || sc.Text() != "----" {
			t.Fatalf("%s:%d: %q is not followed by ----", path, n, line)
		}
		n++
		var want []string
		for sc.Scan() {
			n++
			if sc.Text() == "" {
				break
			}
			want = append(want, sc.Text())
		}
		c.want = strings.Join(want, "\n")
		cmds = append(cmds, c)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return cmds
}

// runTranscripts runs every testdata/*.txt with a fresh run func each.
func runTranscripts(t *testing.T, newRun func(t *testing.T) func(c command) string) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no transcripts in testdata (%v)", err)
	}
	for _, path := range files {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".txt"), func(t *testing.T) {
			cmds := parseTranscript(t, path)
			run := newRun(t)
			var out strings.Builder
			for i, c := range cmds {
				got := strings.TrimRight(run(c), "\n")
				if !*rewrite && got != c.want {
					t.Errorf("%s:%d: %s\ngot:\n%s\nwant:\n%s", path, c.line, c.raw, got, c.want)
				}
				cmds[i].want = got
				for _, l := range c.comments {
					fmt.Fprintln(&out, l)
				}
				fmt.Fprintf(&out, "%s\n----\n%s\n\n", c.raw, got)
			}
			if *rewrite {
				if err := os.WriteFile(path, []byte(out.String()), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

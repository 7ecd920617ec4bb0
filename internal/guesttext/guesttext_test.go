package guesttext

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

func TestLine(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		max      int
		want     string
	}{
		{"plain", "disk unlocked", 0, "disk unlocked"},
		{"utf8 kept", "grüße – ok", 0, "grüße – ok"},
		{"ansi clear screen", "\x1b[2J\x1b[Hfake prompt", 0, `\x1b[2J\x1b[Hfake prompt`},
		{"osc title", "\x1b]0;owned\x07", 0, `\x1b]0;owned\a`},
		{"carriage return", "ok\rFAIL", 0, `ok\rFAIL`},
		{"newline escaped", "a\nb", 0, `a\nb`},
		{"nul and del", "a\x00b\x7f", 0, `a\x00b\x7f`},
		{"c1 csi", "a\u009b2Jb", 0, `a\u009b2Jb`},
		{"bidi override", "evil\u202etxt.exe", 0, `evil\u202etxt.exe`},
		{"invalid utf8", "a\xffb", 0, `a\xffb`},
		{"cut", "abcdefgh", 3, "abc…(5 more bytes)"},
		{"cut inside a rune", "aü", 2, "a…(2 more bytes)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, Line(tc.in, tc.max)); diff != "" {
				t.Errorf("Line(%q) (-want +got):\n%s", tc.in, diff)
			}
		})
	}
}

func TestBlockKeepsLines(t *testing.T) {
	got := Block("line 1\n\tline 2\x1b[31m\r\n", 0)
	want := "line 1\n\tline 2\\x1b[31m\\r\n"
	if got != want {
		t.Errorf("Block = %q, want %q", got, want)
	}
}

func TestTail(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	t.Run("missing", func(t *testing.T) {
		tail, first, err := Tail(filepath.Join(dir, "nope"), 5, "")
		if err != nil || tail != "" || first != "" {
			t.Errorf("Tail(missing) = %q, %q, %v; want empty, nil", tail, first, err)
		}
	})
	t.Run("last lines escaped", func(t *testing.T) {
		p := write("c1", "boot\nKernel panic - not syncing: x\n1\n2\n3\x1b[2J\r\n")
		tail, first, err := Tail(p, 2, "Kernel panic")
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff("2\n3\\x1b[2J", tail); diff != "" {
			t.Errorf("tail (-want +got):\n%s", diff)
		}
		if first != "Kernel panic - not syncing: x" {
			t.Errorf("first = %q", first)
		}
	})
	t.Run("huge file reads only its end", func(t *testing.T) {
		big := strings.Repeat("x", 3*MaxTail) + "\nKernel panic early\n" + strings.Repeat("y\n", MaxTail/2) + "last"
		p := write("c2", big)
		tail, first, err := Tail(p, 3, "Kernel panic")
		if err != nil {
			t.Fatal(err)
		}
		if tail != "y\ny\nlast" {
			t.Errorf("tail = %q", tail)
		}
		if first != "" {
			t.Errorf("a panic line outside the last %d bytes was found: %q", MaxTail, first)
		}
	})
	t.Run("long line cut", func(t *testing.T) {
		p := write("c3", strings.Repeat("z", 2000))
		tail, _, err := Tail(p, 3, "")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(tail, "…(1488 more bytes)") || !utf8.ValidString(tail) {
			t.Errorf("tail = %q", tail)
		}
	})
}

func FuzzLine(f *testing.F) {
	for _, s := range []string{"", "a\x1b[2J", "\xff\xfe", "a\u202e", "ü"} {
		f.Add(s, 3)
	}
	f.Fuzz(func(t *testing.T, s string, max int) {
		for _, got := range []string{Line(s, max), Block(s, max)} {
			if !utf8.ValidString(got) {
				t.Fatalf("invalid UTF-8 out of %q: %q", s, got)
			}
			for _, r := range got {
				if r < 0x20 && r != '\n' && r != '\t' || r == 0x7f || r == 0x1b {
					t.Fatalf("control %U survives in %q (from %q)", r, got, s)
				}
			}
		}
		if strings.ContainsAny(Line(s, max), "\n\t") {
			t.Fatalf("Line kept a newline or tab: %q", s)
		}
	})
}

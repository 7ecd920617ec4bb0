// Package guesttext makes text that came from a guest safe to print on
// the host. A guest is not trusted: its console, its agent's error
// messages and its log lines may carry terminal escape sequences (which
// can rewrite what an operator sees, set the window title, or on some
// terminals answer back), carriage returns that overwrite a line, invalid
// UTF-8, or simply megabytes of output. Everything the launcher and the
// shim put into a message for a person passes through here first.
package guesttext

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Line returns s as one printable line: control characters (including
// newlines and ANSI escape sequences' ESC), Unicode format and
// bidirectional controls, and invalid UTF-8 are written as Go escapes
// (\x1b, \n, \u202e), and the result is cut to max bytes of s with
// "…(N more bytes)" appended. max ≤ 0 means no limit.
func Line(s string, max int) string {
	return escape(s, max, false)
}

// Block is Line for multi-line text: newlines and tabs are kept, every
// other control character is escaped.
func Block(s string, max int) string {
	return escape(s, max, true)
}

func escape(s string, max int, multiline bool) string {
	cut := 0
	if max > 0 && len(s) > max {
		cut = len(s) - max
		s = s[:max]
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			if cut > 0 && len(s)-i < utf8.UTFMax && utf8.RuneStart(s[i]) {
				// A character split by the cut: count it as cut.
				cut += len(s) - i
				i = len(s)
				continue
			}
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case multiline && (r == '\n' || r == '\t'):
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || unicode.Is(unicode.Cf, r) ||
			r == '\u2028' || r == '\u2029':
			q := fmt.Sprintf("%+q", string(r)) // "\x1b", "\u202e"
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	if cut > 0 {
		fmt.Fprintf(&b, "…(%d more bytes)", cut)
	}
	return b.String()
}

// MaxTail bounds how much of a file Tail reads.
const MaxTail = 64 << 10

// Tail returns the last lines (at most n) of the file at path, reading no
// more than its last MaxTail bytes, as printable text (Block); a line
// holding keep (when keep != "" and it occurs in that part) is returned
// in first as well, so a kernel panic far above the tail is still named.
// A missing or empty file gives "", nil.
func Tail(path string, n int, keep string) (tail, first string, err error) {
	f, err := os.Open(path)
	if err != nil {
		if os.IsNotExist(err) {
			return "", "", nil
		}
		return "", "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", "", err
	}
	off := max(st.Size()-MaxTail, 0)
	b, err := io.ReadAll(io.NewSectionReader(f, off, MaxTail))
	if err != nil {
		return "", "", err
	}
	if off > 0 {
		// Drop the partial first line.
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	b = bytes.TrimRight(b, "\r\n")
	if len(bytes.TrimSpace(b)) == 0 {
		return "", "", nil
	}
	lines := strings.Split(string(b), "\n")
	if keep != "" {
		for _, l := range lines {
			if strings.Contains(l, keep) {
				first = Line(strings.TrimRight(l, "\r"), 512)
				break
			}
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	for i, l := range lines {
		lines[i] = Line(strings.TrimRight(l, "\r"), 512)
	}
	return strings.Join(lines, "\n"), first, nil
}

package runtimedata

import (
	"encoding/hex"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
	"unicode/utf16"

	"github.com/google/go-cmp/cmp"
)

// TestCanonicalizeRFC8785Example is the example of RFC 8785 section 3.2.2,
// with the output bytes of section 3.2.4.
func TestCanonicalizeRFC8785Example(t *testing.T) {
	in := `{
  "numbers": [333333333.33333329, 1E30, 4.50,
              2e-3, 0.000000000000000000000000001],
  "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
  "literals": [null, true, false]
}`
	wantHex := strings.Join(strings.Fields(`
		7b 22 6c 69 74 65 72 61 6c 73 22 3a 5b 6e 75 6c 6c 2c 74 72
		75 65 2c 66 61 6c 73 65 5d 2c 22 6e 75 6d 62 65 72 73 22 3a
		5b 33 33 33 33 33 33 33 33 33 2e 33 33 33 33 33 33 33 2c 31
		65 2b 33 30 2c 34 2e 35 2c 30 2e 30 30 32 2c 31 65 2d 32 37
		5d 2c 22 73 74 72 69 6e 67 22 3a 22 e2 82 ac 24 5c 75 30 30
		30 66 5c 6e 41 27 42 5c 22 5c 5c 5c 5c 5c 22 2f 22 7d`), "")
	want, err := hex.DecodeString(wantHex)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Canonicalize([]byte(in))
	if err != nil {
		t.Fatalf("Canonicalize(RFC 8785 3.2.2 example) = %v", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("Canonicalize(RFC 8785 3.2.2 example) mismatch (-want +got):\n%s", diff)
	}
	// The same bytes, as printed in section 3.2.2.
	const printed = `{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}`
	if string(got) != printed {
		t.Errorf("Canonicalize(RFC 8785 3.2.2 example) = %s, want %s", got, printed)
	}
}

// TestCanonicalizeRFC8785Sorting is the sorting example of RFC 8785
// section 3.2.3: names are ordered by UTF-16 code units, so the emoji
// (surrogates U+D83D U+DE00) sorts before U+FB33.
func TestCanonicalizeRFC8785Sorting(t *testing.T) {
	in := `{
  "\u20ac": "Euro Sign",
  "\r": "Carriage Return",
  "\ufb33": "Hebrew Letter Dalet With Dagesh",
  "1": "One",
  "\ud83d\ude00": "Emoji: Grinning Face",
  "\u0080": "Control",
  "\u00f6": "Latin Small Letter O With Diaeresis"
}`
	want := "{" +
		`"\r":"Carriage Return",` +
		`"1":"One",` +
		"\"\u0080\":\"Control\"," +
		"\"\u00f6\":\"Latin Small Letter O With Diaeresis\"," +
		"\"\u20ac\":\"Euro Sign\"," +
		"\"\U0001F600\":\"Emoji: Grinning Face\"," +
		"\"\ufb33\":\"Hebrew Letter Dalet With Dagesh\"" +
		"}"
	got, err := Canonicalize([]byte(in))
	if err != nil {
		t.Fatalf("Canonicalize(RFC 8785 3.2.3 example) = %v", err)
	}
	if diff := cmp.Diff(want, string(got)); diff != "" {
		t.Errorf("Canonicalize(RFC 8785 3.2.3 example) mismatch (-want +got):\n%s", diff)
	}
}

// TestNumberRFC8785AppendixB is the number table of RFC 8785 Appendix B.
// Each row was also checked against Number.prototype.toString in V8 (node
// 20), and appendNumber agreed with V8 on 300,000 further doubles.
func TestNumberRFC8785AppendixB(t *testing.T) {
	tests := []struct {
		bits uint64
		want string
	}{
		{0x0000000000000000, "0"},
		{0x8000000000000000, "0"}, // minus zero
		{0x0000000000000001, "5e-324"},
		{0x8000000000000001, "-5e-324"},
		{0x7fefffffffffffff, "1.7976931348623157e+308"},
		{0xffefffffffffffff, "-1.7976931348623157e+308"},
		{0x4340000000000000, "9007199254740992"},
		{0xc340000000000000, "-9007199254740992"},
		{0x4430000000000000, "295147905179352830000"},
		{0x44b52d02c7e14af5, "9.999999999999997e+22"},
		{0x44b52d02c7e14af6, "1e+23"},
		{0x44b52d02c7e14af7, "1.0000000000000001e+23"},
		{0x444b1ae4d6e2ef4e, "999999999999999700000"},
		{0x444b1ae4d6e2ef4f, "999999999999999900000"},
		{0x444b1ae4d6e2ef50, "1e+21"},
		{0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"},
		{0x3eb0c6f7a0b5ed8d, "0.000001"},
		{0x41b3de4355555553, "333333333.3333332"},
		{0x41b3de4355555554, "333333333.33333325"},
		{0x41b3de4355555555, "333333333.3333333"},
		{0x41b3de4355555556, "333333333.3333334"},
		{0x41b3de4355555557, "333333333.33333343"},
		{0xbecbf647612f3696, "-0.0000033333333333333333"},
		{0x43143ff3c1cb0959, "1424953923781206.2"}, // round to even
	}
	for _, tt := range tests {
		f := math.Float64frombits(tt.bits)
		if got := string(appendNumber(nil, f)); got != tt.want {
			t.Errorf("appendNumber(%#016x) = %s, want %s", tt.bits, got, tt.want)
		}
		// The expected string must also come back unchanged through
		// Canonicalize, so the parser reads it as the same double.
		got, err := Canonicalize([]byte(tt.want))
		if err != nil || string(got) != tt.want {
			t.Errorf("Canonicalize(%s) = %s, %v, want it unchanged", tt.want, got, err)
		}
	}
}

func TestCanonicalize(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"scalar true", " true ", "true"},
		{"scalar null", "null", "null"},
		{"scalar string", `"a"`, `"a"`},
		{"empty object", "{ }", "{}"},
		{"empty array", "[ ]", "[]"},
		{"whitespace", " \t\r\n{ \"b\" : [ 1 , 2 ] , \"a\" : { } }\n", `{"a":{},"b":[1,2]}`},
		{"nested sort", `{"b":{"d":1,"c":2},"a":[{"z":0,"y":1}]}`, `{"a":[{"y":1,"z":0}],"b":{"c":2,"d":1}}`},
		{"minus zero", "-0", "0"},
		{"minus zero float", "-0.0e5", "0"},
		{"integer float", "1.0", "1"},
		{"exponent big", "1e21", "1e+21"},
		{"exponent below 1e21", "1E20", "100000000000000000000"},
		{"exponent small", "1e-7", "1e-7"},
		{"fraction", "0.000001", "0.000001"},
		{"underflow to zero", "1e-400", "0"},
		{"2^53+1 rounds", "9007199254740993", "9007199254740992"},
		{"long mantissa", "0.1000000000000000055511151231257827", "0.1"},
		{"negative", "-12.50", "-12.5"},
		{"solidus unescaped", `"\/"`, `"/"`},
		{"control escapes", `"\b\t\n\f\r"`, `"\b\t\n\f\r"`},
		{"other controls lowercase", `"\u0000\u001F\u000B"`, `"\u0000\u001f\u000b"`},
		{"quote and backslash", `"\"\\"`, `"\"\\"`},
		{"del and line separator raw", `"\u007f\u2028"`, "\"\x7f\u2028\""},
		{"non-ascii unescaped", `"\u00e9"`, "\"\u00e9\""},
		{"raw non-ascii kept", "\"\u00e9\U0001F600\"", "\"\u00e9\U0001F600\""},
		{"surrogate pair", `"\uD83D\uDE00"`, "\"\U0001F600\""},
		{"escaped name sorts unescaped", `{"\u0062":1,"a":2}`, `{"a":2,"b":1}`},
		{"supplementary before BMP high", "{\"\uffff\":1,\"\U00010000\":2}", "{\"\U00010000\":2,\"\uffff\":1}"},
		{"prefix sorts first", `{"ab":1,"a":2}`, `{"a":2,"ab":1}`},
		{"depth at limit", strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth), strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Canonicalize([]byte(tt.in))
			if err != nil {
				t.Fatalf("Canonicalize(%q) = %v", tt.in, err)
			}
			if diff := cmp.Diff(tt.want, string(got)); diff != "" {
				t.Errorf("Canonicalize(%q) mismatch (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func TestCanonicalizeRejects(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", "empty input"},
		{"only space", "  ", "empty input"},
		{"NaN literal", "NaN", "unexpected character 'N'"},
		{"Infinity literal", "[Infinity]", "unexpected character 'I'"},
		{"negative infinity", "-Infinity", "invalid number"},
		{"overflow", "1e400", "outside the IEEE 754 double range"},
		{"negative overflow", "-1.8e308", "outside the IEEE 754 double range"},
		{"duplicate", `{"a":1,"a":2}`, `duplicate member name "a"`},
		{"duplicate after unescape", `{"a":1,"\u0061":2}`, `duplicate member name "a"`},
		{"nested duplicate", `{"x":[{"k":1,"j":0,"k":1}]}`, `duplicate member name "k"`},
		{"invalid utf-8", "\"\xff\"", "invalid utf-8"},
		{"truncated utf-8", "\"\xe2\x82\"", "invalid utf-8"},
		{"overlong utf-8", "\"\xc0\xaf\"", "invalid utf-8"},
		{"utf-8 surrogate", "\"\xed\xa0\x80\"", "invalid utf-8"},
		{"lone high surrogate", `"\ud800"`, "lone high surrogate \\ud800"},
		{"high surrogate then char", `"\ud800x"`, "lone high surrogate"},
		{"high surrogate twice", `"\ud800\ud800"`, "lone high surrogate"},
		{"lone low surrogate", `"\udc00"`, "lone low surrogate \\udc00"},
		{"raw control in string", "\"a\tb\"", "unescaped control character"},
		{"bad escape", `"\x"`, "invalid escape character 'x'"},
		{"bad hex", `"\u12g4"`, "invalid hex digit 'g'"},
		{"truncated escape", `"\u12`, "truncated \\u escape"},
		{"unterminated string", `"abc`, "unterminated string"},
		{"trailing garbage", `{"a":1} x`, "trailing data"},
		{"two values", `{} {}`, "trailing data"},
		{"leading zero", "01", "trailing data"},
		{"plus sign", "+1", "unexpected character '+'"},
		{"bare dot", "1.", "no digits after '.'"},
		{"bare exponent", "1e", "no digits in exponent"},
		{"hex number", "0x10", "trailing data"},
		{"trailing comma array", "[1,]", "unexpected character ']'"},
		{"trailing comma object", `{"a":1,}`, "want a member name string"},
		{"missing colon", `{"a" 1}`, "want ':'"},
		{"unquoted name", `{a:1}`, "want a member name string"},
		{"single quotes", `'a'`, "unexpected character"},
		{"bad literal", "tru", "want true"},
		{"unterminated array", "[1", "unterminated array"},
		{"unterminated object", `{"a":1`, "unterminated object"},
		{"byte order mark", "\xef\xbb\xbf{}", "unexpected character"},
		{"too deep", strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1), "nesting deeper than 128"},
		{"too deep objects", strings.Repeat(`{"a":`, MaxDepth+1) + "1" + strings.Repeat("}", MaxDepth+1), "nesting deeper than 128"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Canonicalize([]byte(tt.in))
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Canonicalize(%q) = %q, %v, want error wrapping ErrInvalid", tt.in, got, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Canonicalize(%q) error = %q, want it to contain %q", tt.in, err, tt.want)
			}
		})
	}
}

// TestCompareUTF16 checks the rune-wise comparison against a direct
// comparison of UTF-16 encodings.
func TestCompareUTF16(t *testing.T) {
	strs := []string{
		"", "a", "ab", "b", "\r", "1", "\u0080", "\u00f6", "\u20ac",
		"\ud7ff", "\ue000", "\ufb33", "\uffff", "\U00010000", "\U0001F600",
		"\U0010FFFF", "a\U0001F600", "a\uffff", "\U0001F600a", "\U0001F601",
	}
	ref := func(a, b string) int {
		return slices.Compare(utf16.Encode([]rune(a)), utf16.Encode([]rune(b)))
	}
	sign := func(x int) int { return min(max(x, -1), 1) }
	for _, a := range strs {
		for _, b := range strs {
			if got, want := sign(compareUTF16(a, b)), ref(a, b); got != want {
				t.Errorf("compareUTF16(%+q, %+q) = %d, want %d", a, b, got, want)
			}
		}
	}
}

package runtimedata

import (
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// MaxDepth bounds how deeply arrays and objects may nest in the input of
// Canonicalize. It matches serde_json's default recursion limit, so
// anything Trustee accepts is accepted here.
const MaxDepth = 128

// Canonicalize returns the RFC 8785 (JSON Canonicalization Scheme) form of
// the JSON text raw: no insignificant whitespace, object members sorted by
// the UTF-16 code units of their names, numbers in ECMAScript
// Number.prototype.toString form, strings with only the escapes JCS
// requires.
//
// raw must be one JSON value (RFC 8259) in UTF-8 with nothing after it but
// whitespace. Canonicalize rejects, with an error wrapping ErrInvalid,
// invalid UTF-8, escaped lone surrogates, duplicate member names (compared
// after unescaping), numbers outside the IEEE 754 double range, and
// nesting deeper than MaxDepth. It places no limit on len(raw); Digest and
// Parse do.
func Canonicalize(raw []byte) ([]byte, error) {
	v, err := decode(raw)
	if err != nil {
		return nil, err
	}
	return v.appendCanonical(make([]byte, 0, len(raw))), nil
}

// kind is the JSON type of a value.
type kind uint8

const (
	kindNull kind = iota
	kindBool
	kindNumber
	kindString
	kindArray
	kindObject
)

func (k kind) String() string {
	switch k {
	case kindNull:
		return "null"
	case kindBool:
		return "boolean"
	case kindNumber:
		return "number"
	case kindString:
		return "string"
	case kindArray:
		return "array"
	default:
		return "object"
	}
}

// value is a decoded JSON value. Object members are kept sorted in JCS
// order, which is also how duplicates are found.
type value struct {
	kind    kind
	boolean bool
	number  float64
	str     string
	elems   []value
	members []member
}

type member struct {
	name   string
	offset int // of the name's opening quote, for error messages
	value  value
}

// member returns the value of the member called name of an object.
func (v *value) member(name string) (*value, bool) {
	i, ok := slices.BinarySearchFunc(v.members, name, func(m member, name string) int {
		return compareUTF16(m.name, name)
	})
	if !ok {
		return nil, false
	}
	return &v.members[i].value, true
}

// decode parses one JSON text.
func decode(raw []byte) (value, error) {
	d := decoder{data: raw}
	d.skipSpace()
	if d.pos == len(d.data) {
		return value{}, invalid("json: empty input")
	}
	v, err := d.value()
	if err != nil {
		return value{}, err
	}
	d.skipSpace()
	if d.pos != len(d.data) {
		return value{}, invalid("json: offset %d: trailing data after the json value", d.pos)
	}
	return v, nil
}

type decoder struct {
	data  []byte
	pos   int
	depth int
}

func (d *decoder) errorf(format string, args ...any) error {
	return invalid("json: offset %d: "+format, append([]any{d.pos}, args...)...)
}

func (d *decoder) skipSpace() {
	for d.pos < len(d.data) {
		switch d.data[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

func (d *decoder) value() (value, error) {
	if d.pos == len(d.data) {
		return value{}, d.errorf("unexpected end of input")
	}
	switch c := d.data[d.pos]; {
	case c == '{':
		return d.object()
	case c == '[':
		return d.array()
	case c == '"':
		s, err := d.string()
		return value{kind: kindString, str: s}, err
	case c == '-' || ('0' <= c && c <= '9'):
		return d.number()
	case c == 't':
		return value{kind: kindBool, boolean: true}, d.literal("true")
	case c == 'f':
		return value{kind: kindBool}, d.literal("false")
	case c == 'n':
		return value{kind: kindNull}, d.literal("null")
	default:
		return value{}, d.errorf("unexpected character %q", c)
	}
}

func (d *decoder) literal(lit string) error {
	if !strings.HasPrefix(string(d.data[d.pos:min(len(d.data), d.pos+len(lit))]), lit) {
		return d.errorf("invalid literal, want %s", lit)
	}
	d.pos += len(lit)
	return nil
}

func (d *decoder) enter() error {
	d.depth++
	if d.depth > MaxDepth {
		return d.errorf("nesting deeper than %d", MaxDepth)
	}
	return nil
}

func (d *decoder) array() (value, error) {
	if err := d.enter(); err != nil {
		return value{}, err
	}
	d.pos++ // '['
	v := value{kind: kindArray}
	d.skipSpace()
	if d.pos < len(d.data) && d.data[d.pos] == ']' {
		d.pos++
		d.depth--
		return v, nil
	}
	for {
		d.skipSpace()
		e, err := d.value()
		if err != nil {
			return value{}, err
		}
		v.elems = append(v.elems, e)
		d.skipSpace()
		if d.pos == len(d.data) {
			return value{}, d.errorf("unterminated array")
		}
		switch d.data[d.pos] {
		case ',':
			d.pos++
		case ']':
			d.pos++
			d.depth--
			return v, nil
		default:
			return value{}, d.errorf("want ',' or ']' in array, got %q", d.data[d.pos])
		}
	}
}

func (d *decoder) object() (value, error) {
	if err := d.enter(); err != nil {
		return value{}, err
	}
	d.pos++ // '{'
	v := value{kind: kindObject}
	d.skipSpace()
	if d.pos < len(d.data) && d.data[d.pos] == '}' {
		d.pos++
		d.depth--
		return v, nil
	}
	for {
		d.skipSpace()
		if d.pos == len(d.data) || d.data[d.pos] != '"' {
			return value{}, d.errorf("want a member name string")
		}
		off := d.pos
		name, err := d.string()
		if err != nil {
			return value{}, err
		}
		d.skipSpace()
		if d.pos == len(d.data) || d.data[d.pos] != ':' {
			return value{}, d.errorf("want ':' after member name")
		}
		d.pos++
		d.skipSpace()
		mv, err := d.value()
		if err != nil {
			return value{}, err
		}
		v.members = append(v.members, member{name: name, offset: off, value: mv})
		d.skipSpace()
		if d.pos == len(d.data) {
			return value{}, d.errorf("unterminated object")
		}
		switch d.data[d.pos] {
		case ',':
			d.pos++
		case '}':
			d.pos++
			d.depth--
			return v, sortMembers(v.members)
		default:
			return value{}, d.errorf("want ',' or '}' in object, got %q", d.data[d.pos])
		}
	}
}

// sortMembers puts members in JCS order and rejects duplicate names.
func sortMembers(ms []member) error {
	slices.SortStableFunc(ms, func(a, b member) int { return compareUTF16(a.name, b.name) })
	for i := 1; i < len(ms); i++ {
		if ms[i].name == ms[i-1].name {
			first, second := ms[i-1].offset, ms[i].offset
			return invalid("json: offset %d: duplicate member name %q (first at offset %d)",
				max(first, second), ms[i].name, min(first, second))
		}
	}
	return nil
}

// string decodes a JSON string starting at its opening quote.
func (d *decoder) string() (string, error) {
	start := d.pos
	d.pos++ // '"'
	// Fast path: no escapes and only ASCII.
	for i := d.pos; i < len(d.data); i++ {
		c := d.data[i]
		if c == '"' {
			s := string(d.data[d.pos:i])
			d.pos = i + 1
			return s, nil
		}
		if c == '\\' || c < 0x20 || c >= utf8.RuneSelf {
			break
		}
	}
	var b strings.Builder
	for {
		if d.pos == len(d.data) {
			d.pos = start
			return "", d.errorf("unterminated string")
		}
		c := d.data[d.pos]
		switch {
		case c == '"':
			d.pos++
			return b.String(), nil
		case c == '\\':
			r, err := d.escape()
			if err != nil {
				return "", err
			}
			b.WriteRune(r)
		case c < 0x20:
			return "", d.errorf("unescaped control character %#02x in string", c)
		case c < utf8.RuneSelf:
			b.WriteByte(c)
			d.pos++
		default:
			r, n := utf8.DecodeRune(d.data[d.pos:])
			if r == utf8.RuneError && n <= 1 {
				return "", d.errorf("invalid utf-8 in string")
			}
			b.Write(d.data[d.pos : d.pos+n])
			d.pos += n
		}
	}
}

// escape decodes one escape sequence starting at its backslash. A
// surrogate pair escape (\uD83D\uDE00) yields one rune; a lone surrogate is
// an error because it cannot be represented in UTF-8.
func (d *decoder) escape() (rune, error) {
	if d.pos+1 >= len(d.data) {
		return 0, d.errorf("unterminated escape sequence")
	}
	c := d.data[d.pos+1]
	switch c {
	case '"', '\\', '/':
		d.pos += 2
		return rune(c), nil
	case 'b':
		d.pos += 2
		return '\b', nil
	case 'f':
		d.pos += 2
		return '\f', nil
	case 'n':
		d.pos += 2
		return '\n', nil
	case 'r':
		d.pos += 2
		return '\r', nil
	case 't':
		d.pos += 2
		return '\t', nil
	case 'u':
	default:
		return 0, d.errorf("invalid escape character %q after backslash", c)
	}
	r, err := d.hex4()
	if err != nil {
		return 0, err
	}
	switch {
	case utf16.IsSurrogate(r) && r >= 0xdc00:
		return 0, d.errorf("lone low surrogate \\u%04x in string", r)
	case utf16.IsSurrogate(r):
		at := d.pos
		d.pos += 6
		if d.pos+1 < len(d.data) && d.data[d.pos] == '\\' && d.data[d.pos+1] == 'u' {
			lo, err := d.hex4()
			if err != nil {
				return 0, err
			}
			if 0xdc00 <= lo && lo <= 0xdfff {
				d.pos += 6
				return utf16.DecodeRune(r, lo), nil
			}
		}
		d.pos = at
		return 0, d.errorf("lone high surrogate \\u%04x in string", r)
	default:
		d.pos += 6
		return r, nil
	}
}

// hex4 decodes the four hex digits of the \u escape at d.pos.
func (d *decoder) hex4() (rune, error) {
	if d.pos+6 > len(d.data) {
		return 0, d.errorf("truncated \\u escape")
	}
	var r rune
	for _, c := range d.data[d.pos+2 : d.pos+6] {
		r <<= 4
		switch {
		case '0' <= c && c <= '9':
			r |= rune(c - '0')
		case 'a' <= c && c <= 'f':
			r |= rune(c - 'a' + 10)
		case 'A' <= c && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, d.errorf("invalid hex digit %q in \\u escape", c)
		}
	}
	return r, nil
}

// number decodes a number with the exact RFC 8259 grammar
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? into the nearest IEEE 754
// double, which is what ECMAScript's JSON.parse does.
func (d *decoder) number() (value, error) {
	start := d.pos
	digits := func() int {
		n := 0
		for d.pos < len(d.data) && '0' <= d.data[d.pos] && d.data[d.pos] <= '9' {
			d.pos++
			n++
		}
		return n
	}
	if d.data[d.pos] == '-' {
		d.pos++
	}
	switch {
	case d.pos < len(d.data) && d.data[d.pos] == '0':
		d.pos++
	case digits() == 0:
		return value{}, d.errorf("invalid number")
	}
	if d.pos < len(d.data) && d.data[d.pos] == '.' {
		d.pos++
		if digits() == 0 {
			return value{}, d.errorf("invalid number: no digits after '.'")
		}
	}
	if d.pos < len(d.data) && (d.data[d.pos] == 'e' || d.data[d.pos] == 'E') {
		d.pos++
		if d.pos < len(d.data) && (d.data[d.pos] == '+' || d.data[d.pos] == '-') {
			d.pos++
		}
		if digits() == 0 {
			return value{}, d.errorf("invalid number: no digits in exponent")
		}
	}
	lit := string(d.data[start:d.pos])
	f, err := strconv.ParseFloat(lit, 64)
	if err != nil || math.IsInf(f, 0) {
		d.pos = start
		return value{}, d.errorf("number %.40s is outside the IEEE 754 double range", lit)
	}
	return value{kind: kindNumber, number: f}, nil
}

// appendCanonical appends the JCS form of v.
func (v *value) appendCanonical(b []byte) []byte {
	switch v.kind {
	case kindNull:
		return append(b, "null"...)
	case kindBool:
		return strconv.AppendBool(b, v.boolean)
	case kindNumber:
		return appendNumber(b, v.number)
	case kindString:
		return appendString(b, v.str)
	case kindArray:
		b = append(b, '[')
		for i := range v.elems {
			if i > 0 {
				b = append(b, ',')
			}
			b = v.elems[i].appendCanonical(b)
		}
		return append(b, ']')
	default:
		b = append(b, '{')
		for i := range v.members {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, v.members[i].name)
			b = append(b, ':')
			b = v.members[i].value.appendCanonical(b)
		}
		return append(b, '}')
	}
}

// appendString appends s as a JSON string with the escaping of RFC 8785
// section 3.2.2.2 (that of ECMAScript JSON.stringify): '"' and '\' are
// escaped, the control characters U+0008, U+0009, U+000A, U+000C and
// U+000D use their two-character escapes, other characters below U+0020
// are written as \u00xx with lowercase hex, and everything else, including
// U+007F and U+2028, is written as-is. s must be valid UTF-8.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c == '\b':
			b = append(b, '\\', 'b')
		case c == '\t':
			b = append(b, '\\', 't')
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\f':
			b = append(b, '\\', 'f')
		case c == '\r':
			b = append(b, '\\', 'r')
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// appendNumber appends f as ECMAScript Number::toString(f) (ECMA-262
// section 6.1.6.1.20) does, which is what RFC 8785 section 3.2.2.3
// requires. f must be finite.
//
// strconv's shortest formatting gives the digits: the fewest decimal
// digits that round-trip, and among those the closest to f, which is the
// digit string ECMAScript specifies.
func appendNumber(b []byte, f float64) []byte {
	if f == 0 { // also -0
		return append(b, '0')
	}
	if f < 0 {
		b = append(b, '-')
		f = -f
	}
	// Shortest form d.ddddde±x, split into digits and exponent.
	var buf [32]byte
	e := strconv.AppendFloat(buf[:0], f, 'e', -1, 64)
	mark := strings.IndexByte(string(e), 'e')
	exp, _ := strconv.Atoi(string(e[mark+1:])) // always well-formed
	digits := make([]byte, 0, 17)
	digits = append(digits, e[0])
	if mark > 1 {
		digits = append(digits, e[2:mark]...)
	}
	k := len(digits) // digit count
	n := exp + 1     // f = 0.digits × 10^n
	switch {
	case k <= n && n <= 21:
		b = append(b, digits...)
		for range n - k {
			b = append(b, '0')
		}
	case 0 < n && n <= 21:
		b = append(b, digits[:n]...)
		b = append(b, '.')
		b = append(b, digits[n:]...)
	case -6 < n && n <= 0:
		b = append(b, '0', '.')
		for range -n {
			b = append(b, '0')
		}
		b = append(b, digits...)
	default:
		b = append(b, digits[0])
		if k > 1 {
			b = append(b, '.')
			b = append(b, digits[1:]...)
		}
		b = append(b, 'e')
		if n-1 >= 0 {
			b = append(b, '+')
		}
		b = strconv.AppendInt(b, int64(n-1), 10)
	}
	return b
}

// compareUTF16 orders strings by their UTF-16 code units, as RFC 8785
// section 3.2.3 requires for member names. Both must be valid UTF-8.
//
// Runes below U+10000 are one code unit equal to the rune. A rune at or
// above U+10000 starts with a high surrogate (U+D800..U+DBFF), which sorts
// above U+0000..U+D7FF and below U+E000..U+FFFF; two such runes compare
// like their code points.
func compareUTF16(a, b string) int {
	for a != "" && b != "" {
		ra, na := utf8.DecodeRuneInString(a)
		rb, nb := utf8.DecodeRuneInString(b)
		if ra != rb {
			ua, ub := firstUnit(ra), firstUnit(rb)
			if ua != ub {
				return int(ua) - int(ub)
			}
			return int(ra) - int(rb)
		}
		a, b = a[na:], b[nb:]
	}
	return len(a) - len(b)
}

func firstUnit(r rune) rune {
	if r < 0x10000 {
		return r
	}
	hi, _ := utf16.EncodeRune(r)
	return hi
}

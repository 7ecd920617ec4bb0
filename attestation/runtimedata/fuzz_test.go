package runtimedata

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// fuzzSeeds are the golden vectors (raw and canonical) plus inputs that
// exercise the corners of the parser.
func fuzzSeeds(f *testing.F) [][]byte {
	var seeds [][]byte
	for _, v := range readVectors(f).Vectors {
		seeds = append(seeds, []byte(v.Raw), []byte(v.Canonical))
	}
	for _, s := range []string{
		``, ` `, `null`, `true`, `-0`, `1e400`, `1E-7`, `0.000001`, `1e21`,
		`9007199254740993`, `[1,2,[3,{"a":4}]]`, `{"a":1,"a":2}`,
		`{"a":1,"\u0061":2}`, `"\ud83d\ude00"`, `"\ud800"`, `"\udc00"`,
		"\"\xff\"", "\"\xed\xa0\x80\"", `"\u0000\u001f\u007f\u2028"`,
		`{"\u20ac":1,"\r":2,"\ufb33":3,"1":4,"\ud83d\ude00":5,"\u0080":6,"\u00f6":7}`,
		`{} x`, `[1,]`, `{"a"}`, `01`, `1.`, `"\x"`,
		strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1),
		goodRaw("n"), goodRaw(""), `{"nonce":"a","nonce":"b","tee-pubkey":` + goodKey + `}`,
		`{"nonce":"n","tee-pubkey":{"kty":"RSA","n":"AQAB","e":"AQAB"}}`,
		`{"nonce":"n","tee-pubkey":{"kty":"OKP","crv":"X25519","x":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}}`,
		`{"nonce":"n","tee-pubkey":{"kty":"OKP","crv":"X25519","x":"CQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}}`,
	} {
		seeds = append(seeds, []byte(s))
	}
	return seeds
}

// FuzzCanonicalize: whatever Canonicalize accepts, its output is valid
// JSON, a fixed point, and the same value as the input as encoding/json
// reads both.
func FuzzCanonicalize(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := Canonicalize(in)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Canonicalize(%q) error %v does not wrap ErrInvalid", in, err)
			}
			return
		}
		if !json.Valid(out) {
			t.Fatalf("Canonicalize(%q) = %q, not valid JSON", in, out)
		}
		again, err := Canonicalize(out)
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("Canonicalize(%q) = %q, %v, want it unchanged", out, again, err)
		}
		var a, b any
		if err := json.Unmarshal(in, &a); err != nil {
			t.Fatalf("encoding/json rejects %q, which Canonicalize accepted: %v", in, err)
		}
		if err := json.Unmarshal(out, &b); err != nil {
			t.Fatalf("encoding/json rejects %q: %v", out, err)
		}
		// reflect.DeepEqual, not cmp: cmp's diff of deeply nested []any
		// takes exponential time.
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("Canonicalize(%q) = %q changes the value: %#v became %#v", in, out, a, b)
		}
	})
}

// FuzzParse: Parse never panics; whatever it accepts binds stably: its
// digest verifies with Check, Marshal of the result parses back to the
// same RuntimeData with the same digest, and a changed report data fails.
func FuzzParse(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		rd, err := Parse(raw)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse(%q) error %v does not wrap ErrInvalid", raw, err)
			}
			return
		}
		d, err := Digest(raw)
		if err != nil {
			t.Fatalf("Digest(%q) = %v after Parse accepted it", raw, err)
		}
		if err := Check(raw, d[:]); err != nil {
			t.Fatalf("Check(raw, Digest(raw)) = %v", err)
		}
		bad := d
		bad[len(raw)%ReportDataSize] ^= 0x80
		if err := Check(raw, bad[:]); !errors.Is(err, ErrMismatch) {
			t.Fatalf("Check(raw, altered digest) = %v, want ErrMismatch", err)
		}
		m, err := rd.Marshal()
		if err != nil {
			t.Fatalf("Marshal(Parse(%q)) = %v", raw, err)
		}
		rd2, err := Parse(m)
		if err != nil {
			t.Fatalf("Parse(Marshal()) = %v for %q", err, m)
		}
		if *rd2 != *rd {
			t.Fatalf("Parse(Marshal()) = %+v, want %+v", rd2, rd)
		}
		m2, err := rd2.Marshal()
		if err != nil || !bytes.Equal(m2, m) {
			t.Fatalf("Marshal is not stable: %q then %q (%v)", m, m2, err)
		}
		dm, err := Digest(m)
		if err != nil {
			t.Fatal(err)
		}
		if dm2, _ := Digest(m2); dm2 != dm {
			t.Fatal("Digest of the same Marshal output differs")
		}
		// Without extra members, the guest's bytes and the re-marshaled
		// bytes bind the same way.
		c, _ := Canonicalize(raw)
		if bytes.Equal(c, m) != (dm == d) {
			t.Fatalf("canonical(raw) == Marshal() is %v but digests equal is %v", bytes.Equal(c, m), dm == d)
		}
	})
}

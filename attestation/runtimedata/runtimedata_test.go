package runtimedata

import (
	"bytes"
	"crypto/elliptic"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"go/build"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite testdata/vectors.json")

const vectorsPath = "testdata/vectors.json"

// vector is one golden runtime data example.
type vector struct {
	Name string `json:"name"`
	// Key says how the synthetic key was derived.
	Key string `json:"key"`
	// Raw is runtime data as a guest might send it (not canonical).
	Raw string `json:"raw"`
	// Canonical is its RFC 8785 form, the bytes that are hashed.
	Canonical string `json:"canonical"`
	// ReportData is SHA-384(Canonical) || 16 zero bytes, in hex.
	ReportData string `json:"report_data"`
}

type vectorFile struct {
	Comment []string `json:"comment"`
	Vectors []vector `json:"vectors"`
}

// kv is one JSON member; v is a string or a []kv object.
type kv struct {
	k string
	v any
}

// rawJSON writes members in the order given, with a space after ':' and
// ',': valid JSON that is deliberately not canonical.
func rawJSON(t testing.TB, members []kv) string {
	t.Helper()
	quote := func(s string) string {
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	var b strings.Builder
	b.WriteString("{")
	for i, m := range members {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(quote(m.k) + ": ")
		switch v := m.v.(type) {
		case string:
			b.WriteString(quote(v))
		case []kv:
			b.WriteString(rawJSON(t, v))
		default:
			t.Fatalf("rawJSON: unexpected %T", v)
		}
	}
	b.WriteString("}")
	return b.String()
}

// syntheticNonce imitates a Trustee nonce: standard base64 of 32 bytes.
func syntheticNonce(label string) string {
	return base64.StdEncoding.EncodeToString(seed("cvm runtimedata synthetic nonce "+label, 32))
}

func keyMembers(k JWK) []kv {
	var ms []kv
	// The member order JOSE libraries commonly use, not JCS order.
	for _, f := range []field{{"kty", k.Kty}, {"crv", k.Crv}, {"alg", k.Alg}, {"x", k.X}, {"y", k.Y}, {"n", k.N}, {"e", k.E}} {
		if f.value != "" {
			ms = append(ms, kv{f.name, f.value})
		}
	}
	return ms
}

// buildVectors derives the golden vectors from the synthetic keys.
func buildVectors(t testing.TB) []vector {
	t.Helper()
	const scalarNote = "private scalar = first %d bytes of SHA-512(%q || 0x00000000); SYNTHETIC test key, not secret, never use"
	jwk := func(pub any, alg string) JWK {
		k, err := JWKFromPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		k.Alg = alg
		return k
	}
	const (
		p256Label   = "cvm runtimedata synthetic key ec-p256"
		p384Label   = "cvm runtimedata synthetic key ec-p384"
		x25519Label = "cvm runtimedata synthetic key x25519"
	)
	p256 := jwk(&syntheticECDSA(t, elliptic.P256(), p256Label).PublicKey, "ECDH-ES+A256KW")
	p384 := jwk(&syntheticECDSA(t, elliptic.P384(), p384Label).PublicKey, "ECDH-ES+A256KW")
	rsaKey := jwk(syntheticRSA2048(), "RSA-OAEP")
	x25519 := jwk(syntheticX25519(t, x25519Label).PublicKey(), "")

	vs := []vector{
		{
			Name: "ec-p256",
			Key:  "EC P-256 (ECDSA/ECDH): " + fmt.Sprintf(scalarNote, 32, p256Label),
			Raw:  rawJSON(t, []kv{{"tee-pubkey", keyMembers(p256)}, {"nonce", syntheticNonce("1")}}),
		},
		{
			Name: "ec-p384",
			Key:  "EC P-384 (ECDSA/ECDH): " + fmt.Sprintf(scalarNote, 48, p384Label),
			Raw:  rawJSON(t, []kv{{"tee-pubkey", keyMembers(p384)}, {"nonce", syntheticNonce("2")}}),
		},
		{
			Name: "rsa-2048",
			Key: "RSA-2048, e = 65537: p and q are the first primes >= the 128 bytes of SHA-512(label || be32(i)) blocks " +
				"for label \"cvm runtimedata synthetic key rsa-2048/p\" and \".../q\", top two bits and low bit set, gcd(e, p-1) = 1; " +
				"SYNTHETIC test key, not secret, never use",
			Raw: rawJSON(t, []kv{{"tee-pubkey", keyMembers(rsaKey)}, {"nonce", syntheticNonce("3")}}),
		},
		{
			Name: "x25519-okp",
			Key:  "OKP X25519 (RFC 8037): " + fmt.Sprintf(scalarNote, 32, x25519Label) + "; no alg; Trustee has no OKP key type",
			Raw:  rawJSON(t, []kv{{"tee-pubkey", keyMembers(x25519)}, {"nonce", syntheticNonce("4")}}),
		},
		{
			Name: "ec-p256-additional-evidence",
			Key: "the ec-p256 key; an extra top-level member (as Trustee's \"additional-evidence\") " +
				"is part of the canonical form and so of the digest",
			Raw: rawJSON(t, []kv{
				{"nonce", syntheticNonce("5")},
				{"tee-pubkey", keyMembers(p256)},
				{"additional-evidence", `{"device":"synthetic"}`},
			}),
		},
	}
	for i := range vs {
		c, err := Canonicalize([]byte(vs[i].Raw))
		if err != nil {
			t.Fatalf("%s: Canonicalize = %v", vs[i].Name, err)
		}
		d, err := Digest([]byte(vs[i].Raw))
		if err != nil {
			t.Fatalf("%s: Digest = %v", vs[i].Name, err)
		}
		vs[i].Canonical = string(c)
		vs[i].ReportData = hex.EncodeToString(d[:])
	}
	return vs
}

var vectorComment = []string{
	"Golden runtime data vectors for github.com/greatjail/cvm/attestation/runtimedata.",
	"REPORT_DATA = SHA-384(RFC 8785 canonical form of raw) || 16 zero bytes (Trustee's scheme).",
	"All keys and nonces are SYNTHETIC, derived from fixed labels (see each key field); they are not secret and must never be used.",
	"Regenerate with: go test ./attestation/runtimedata -run TestGoldenVectors -update",
}

func readVectors(t testing.TB) vectorFile {
	t.Helper()
	b, err := os.ReadFile(vectorsPath)
	if err != nil {
		t.Fatal(err)
	}
	var f vectorFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("%s: %v", vectorsPath, err)
	}
	return f
}

func TestGoldenVectors(t *testing.T) {
	want := vectorFile{Comment: vectorComment, Vectors: buildVectors(t)}
	if *update {
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		if err := enc.Encode(want); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(vectorsPath, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got := readVectors(t)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("%s is stale (-derived +file); run with -update:\n%s", vectorsPath, diff)
	}
	// Check the file's contents on their own terms too.
	for _, v := range got.Vectors {
		t.Run(v.Name, func(t *testing.T) {
			raw := []byte(v.Raw)
			rd, err := Parse(raw)
			if err != nil {
				t.Fatalf("Parse(raw) = %v", err)
			}
			c, err := Canonicalize(raw)
			if err != nil || string(c) != v.Canonical {
				t.Errorf("Canonicalize(raw) = %s, %v, want %s", c, err, v.Canonical)
			}
			if v.Raw == v.Canonical {
				t.Errorf("raw is already canonical; the vector should show canonicalization")
			}
			rdata, err := hex.DecodeString(v.ReportData)
			if err != nil || len(rdata) != ReportDataSize {
				t.Fatalf("report_data = %q, want %d bytes of hex", v.ReportData, ReportDataSize)
			}
			sum := sha512.Sum384([]byte(v.Canonical))
			if !bytes.Equal(rdata[:48], sum[:]) || !bytes.Equal(rdata[48:], make([]byte, 16)) {
				t.Errorf("report_data = %x, want sha384(canonical) %x and 16 zero bytes", rdata, sum)
			}
			if err := Check(raw, rdata); err != nil {
				t.Errorf("Check(raw, report_data) = %v", err)
			}
			m, err := rd.Marshal()
			if err != nil {
				t.Fatalf("Marshal() = %v", err)
			}
			extra := strings.Contains(v.Raw, "additional-evidence")
			if got := string(m) == v.Canonical; got == extra {
				t.Errorf("Marshal() == canonical is %v, want %v (Marshal drops extra members)", got, !extra)
			}
		})
	}
}

// TestCrossCheckP256 computes the ec-p256 REPORT_DATA by a path independent
// of Canonicalize and Marshal: a canonical form written out by hand
// (members sorted, no whitespace) hashed with SHA-384 and padded.
func TestCrossCheckP256(t *testing.T) {
	const canonical = `{"nonce":"` + p256Nonce + `","tee-pubkey":{"alg":"ECDH-ES+A256KW","crv":"P-256","kty":"EC","x":"` + p256X + `","y":"` + p256Y + `"}}`
	sum := sha512.Sum384([]byte(canonical))
	want := append(sum[:], make([]byte, 16)...)

	var v vector
	for _, x := range readVectors(t).Vectors {
		if x.Name == "ec-p256" {
			v = x
		}
	}
	if v.Name == "" {
		t.Fatal("no ec-p256 vector")
	}
	got, err := Digest([]byte(v.Raw))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:], want) {
		t.Errorf("Digest(ec-p256 raw) = %x, want %x", got, want)
	}

	k, err := JWKFromPublicKey(&syntheticECDSA(t, elliptic.P256(), "cvm runtimedata synthetic key ec-p256").PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	k.Alg = "ECDH-ES+A256KW"
	m, err := RuntimeData{Nonce: syntheticNonce("1"), TEEPubKey: k}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if string(m) != canonical {
		t.Errorf("Marshal() = %s, want %s", m, canonical)
	}
}

// The ec-p256 vector's nonce and coordinates, copied from the derivation
// and checked independently (OpenSSL via node: the public point of the
// scalar; npm canonicalize 2.1.0 and SHA-384: the report data).
const (
	p256Nonce = "lQXZSVZldGtmPi8QB50p8BF8ZUn83RAw9hkl80QLPk0="
	p256X     = "Q68orwmTRPxxFqsIo7MDlV86ERXjhmY480zPaZ2BlWs"
	p256Y     = "RKQl48QXvhXa5urldgjteLV31jm8b3QdN2a-Vlf9aRI"
)

// goodRaw is valid runtime data with the ec-p256 key, built by hand.
func goodRaw(nonce string) string {
	return `{"nonce":"` + nonce + `","tee-pubkey":` + goodKey + `}`
}

const goodKey = `{"kty":"EC","crv":"P-256","x":"` + p256X + `","y":"` + p256Y + `"}`

func TestParse(t *testing.T) {
	rd, err := Parse([]byte(goodRaw("bm9uY2U=")))
	if err != nil {
		t.Fatalf("Parse() = %v", err)
	}
	want := &RuntimeData{Nonce: "bm9uY2U=", TEEPubKey: JWK{Kty: "EC", Crv: "P-256", X: p256X, Y: p256Y}}
	if diff := cmp.Diff(want, rd); diff != "" {
		t.Errorf("Parse() mismatch (-want +got):\n%s", diff)
	}

	// Extra top-level members are allowed and change the digest.
	extra := `{"additional-evidence":"{}","nonce":"bm9uY2U=","tee-pubkey":` + goodKey + `}`
	rd2, err := Parse([]byte(extra))
	if err != nil {
		t.Fatalf("Parse(extra member) = %v", err)
	}
	if diff := cmp.Diff(want, rd2); diff != "" {
		t.Errorf("Parse(extra member) mismatch (-want +got):\n%s", diff)
	}
	d1, _ := Digest([]byte(goodRaw("bm9uY2U=")))
	d2, _ := Digest([]byte(extra))
	if d1 == d2 {
		t.Error("Digest ignores an extra top-level member")
	}
}

// TestParseAttacks feeds Parse hostile runtime data. Each must fail with
// ErrInvalid and its own message.
func TestParseAttacks(t *testing.T) {
	big := goodRaw("n") + strings.Repeat(" ", MaxSize+1-len(goodRaw("n")))
	deep := `{"nonce":"n","tee-pubkey":` + goodKey + `,"x":` + strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth) + `}`
	offCurve := strings.Replace(goodRaw("n"), p256Y, p256YPlus1(t), 1)
	tests := []struct {
		name, raw, want string
	}{
		{"duplicate nonce", `{"nonce":"a","nonce":"b","tee-pubkey":` + goodKey + `}`, `duplicate member name "nonce"`},
		{"duplicate tee-pubkey", `{"nonce":"a","tee-pubkey":` + goodKey + `,"tee-pubkey":` + goodKey + `}`, `duplicate member name "tee-pubkey"`},
		{"duplicate jwk member", strings.Replace(goodRaw("n"), `"kty":"EC"`, `"kty":"EC","kty":"RSA"`, 1), `duplicate member name "kty"`},
		{"invalid utf-8", goodRaw("a\xffb"), "invalid utf-8 in string"},
		{"lone surrogate", goodRaw(`a\ud800b`), "lone high surrogate"},
		{"oversized", big, "runtime data is 16385 bytes, limit is 16384"},
		{"missing nonce", `{"tee-pubkey":` + goodKey + `}`, `missing member "nonce"`},
		{"nonce not a string", `{"nonce":1,"tee-pubkey":` + goodKey + `}`, `member "nonce" is a json number, want a string`},
		{"nonce null", `{"nonce":null,"tee-pubkey":` + goodKey + `}`, `member "nonce" is a json null, want a string`},
		{"empty nonce", goodRaw(""), `member "nonce" is empty`},
		{"missing key", `{"nonce":"n"}`, `missing member "tee-pubkey"`},
		{"key is a string", `{"nonce":"n","tee-pubkey":"-----BEGIN PUBLIC KEY-----"}`, `member "tee-pubkey" is a json string, want an object`},
		{"unknown jwk member", strings.Replace(goodRaw("n"), `"kty":"EC"`, `"kty":"EC","kid":"1"`, 1), `jwk: unknown member "kid"`},
		{"jwk member not a string", strings.Replace(goodRaw("n"), `"kty":"EC"`, `"kty":"EC","alg":7`, 1), `jwk: member "alg" is a json number`},
		{"empty jwk member", strings.Replace(goodRaw("n"), `"kty":"EC"`, `"kty":"EC","alg":""`, 1), `jwk: member "alg" is empty`},
		{"not on curve", offCurve, "not a point on the curve P-256"},
		{"wrong kty", strings.Replace(goodRaw("n"), `"kty":"EC"`, `"kty":"oct"`, 1), `unsupported kty "oct"`},
		{"trailing garbage", goodRaw("n") + "x", "trailing data after the json value"},
		{"deep nesting", deep, "nesting deeper than 128"},
		{"array", `[` + goodRaw("n") + `]`, "runtime data is a json array, want an object"},
		{"string", `"n"`, "runtime data is a json string, want an object"},
		{"not json", `key=value`, "unexpected character 'k'"},
		{"empty", ``, "empty input"},
	}
	seen := map[string]string{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.raw))
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse() = %+v, %v, want error wrapping ErrInvalid", got, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse() error = %q, want it to contain %q", err, tt.want)
			}
			if other, ok := seen[err.Error()]; ok {
				t.Errorf("Parse() error %q is the same as for %q", err, other)
			}
			seen[err.Error()] = tt.name
		})
	}
}

// p256YPlus1 returns the ec-p256 y coordinate plus one, which is off the
// curve.
func p256YPlus1(t *testing.T) string {
	y, err := base64.RawURLEncoding.DecodeString(p256Y)
	if err != nil {
		t.Fatal(err)
	}
	for i := len(y) - 1; i >= 0; i-- {
		y[i]++
		if y[i] != 0 {
			break
		}
	}
	return base64.RawURLEncoding.EncodeToString(y)
}

func TestCheck(t *testing.T) {
	raw := []byte(goodRaw("bm9uY2U="))
	d, err := Digest(raw)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) []byte {
		b := bytes.Clone(d[:])
		b[i] ^= 0x01
		return b
	}
	// The same data with other whitespace and member order binds the
	// same way: the digest is of the canonical form.
	equivalent := []byte("{\n  \"tee-pubkey\": {\"y\": \"" + p256Y + "\", \"x\": \"" + p256X + "\", \"kty\": \"EC\", \"crv\": \"P-256\"},\n  \"nonce\": \"bm9uY2U=\"\n}\n")
	tests := []struct {
		name       string
		raw        []byte
		reportData []byte
		sentinel   error
		want       string
	}{
		{"match", raw, d[:], nil, ""},
		{"equivalent json", equivalent, d[:], nil, ""},
		{"hash bit flipped", raw, flip(0), ErrMismatch, "want sha384 of canonical runtime data"},
		{"padding bit flipped", raw, flip(63), ErrMismatch, "want sha384 of canonical runtime data"},
		{"other nonce", []byte(goodRaw("bm9uY2V=")), d[:], ErrMismatch, "want sha384 of canonical runtime data"},
		{"unpadded digest", raw, d[:48], ErrMismatch, "report data is 48 bytes, want 64"},
		{"nil report data", raw, nil, ErrMismatch, "report data is 0 bytes, want 64"},
		{"invalid runtime data", []byte(`{"a":1,"a":1}`), d[:], ErrInvalid, "duplicate member name"},
		{"oversized runtime data", bytes.Repeat([]byte(" "), MaxSize+1), d[:], ErrInvalid, "limit is 16384"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Check(tt.raw, tt.reportData)
			if tt.sentinel == nil {
				if err != nil {
					t.Fatalf("Check() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tt.sentinel) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Check() = %v, want error wrapping %v containing %q", err, tt.sentinel, tt.want)
			}
		})
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	for _, v := range readVectors(t).Vectors {
		t.Run(v.Name, func(t *testing.T) {
			rd, err := Parse([]byte(v.Raw))
			if err != nil {
				t.Fatal(err)
			}
			m, err := rd.Marshal()
			if err != nil {
				t.Fatalf("Marshal() = %v", err)
			}
			if c, err := Canonicalize(m); err != nil || !bytes.Equal(c, m) {
				t.Errorf("Marshal() = %s is not canonical (%s, %v)", m, c, err)
			}
			again, err := Parse(m)
			if err != nil {
				t.Fatalf("Parse(Marshal()) = %v", err)
			}
			if diff := cmp.Diff(rd, again); diff != "" {
				t.Errorf("Parse(Marshal()) mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMarshalRejects(t *testing.T) {
	k := JWK{Kty: "EC", Crv: "P-256", X: p256X, Y: p256Y}
	tests := []struct {
		name string
		rd   RuntimeData
		want string
	}{
		{"empty nonce", RuntimeData{TEEPubKey: k}, "nonce is empty"},
		{"invalid utf-8 nonce", RuntimeData{Nonce: "\xff", TEEPubKey: k}, "nonce is not valid utf-8"},
		{"no key", RuntimeData{Nonce: "n"}, "missing kty"},
		{"invalid key", RuntimeData{Nonce: "n", TEEPubKey: with(k, func(k *JWK) { k.Y = p256X })}, "not a point on the curve"},
		{"invalid utf-8 alg", RuntimeData{Nonce: "n", TEEPubKey: with(k, func(k *JWK) { k.Alg = "\xc0" })}, "alg is not valid utf-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.rd.Marshal()
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Marshal() = %q, %v, want error wrapping ErrInvalid containing %q", got, err, tt.want)
			}
		})
	}
}

// TestImportsOnlyStd: the guest agent and the broker share this package,
// so it may import nothing outside the standard library.
func TestImportsOnlyStd(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(pkg.Imports) == 0 {
		t.Fatal("no imports found; is the package directory right?")
	}
	for _, path := range pkg.Imports {
		p, err := build.Import(path, ".", build.FindOnly)
		if err != nil {
			t.Errorf("import %q: %v", path, err)
			continue
		}
		if !p.Goroot || !strings.HasPrefix(filepath.ToSlash(p.Dir), filepath.ToSlash(filepath.Join(build.Default.GOROOT, "src"))+"/") {
			t.Errorf("package imports %q from %s, outside the standard library", path, p.Dir)
		}
	}
}

func BenchmarkDigest(b *testing.B) {
	raw := []byte(readVectors(b).Vectors[0].Raw)
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if _, err := Digest(raw); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParse(b *testing.B) {
	raw := []byte(readVectors(b).Vectors[0].Raw)
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if _, err := Parse(raw); err != nil {
			b.Fatal(err)
		}
	}
}

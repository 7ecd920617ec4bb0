package token

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/google/go-cmp/cmp"

	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/attestation/runtimedata"
)

var update = flag.Bool("update", false, "rewrite testdata golden files")

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// signingKey is a SYNTHETIC P-256 key derived from a public label, for
// tests only.
func signingKey(t testing.TB, label string) *ecdsa.PrivateKey {
	t.Helper()
	s := sha256.Sum256([]byte("cvm token synthetic key " + label))
	k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), s[:])
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// teeKey is the guest's SYNTHETIC X25519 key as a JWK.
func teeKey(t testing.TB) runtimedata.JWK {
	t.Helper()
	s := sha512.Sum512([]byte("cvm token synthetic tee key"))
	k, err := ecdh.X25519().NewPrivateKey(s[:32])
	if err != nil {
		t.Fatal(err)
	}
	j, err := runtimedata.JWKFromPublicKey(k.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func testClaims() *attestation.Claims {
	vmpl := 0
	return &attestation.Claims{
		TEE:         attestation.TEESim,
		Product:     "Milan",
		Measurement: bytes.Repeat([]byte{0xab}, 48),
		ReportData:  bytes.Repeat([]byte{0x01}, 64),
		HostData:    bytes.Repeat([]byte{0x02}, 32),
		VMPL:        &vmpl,
		Signer:      "vcek",
		Unchecked:   []string{"crl"},
		VerifiedAt:  t0,
	}
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func newSigner(t testing.TB, label string, c *clock) *Signer {
	t.Helper()
	s, err := NewSigner(signingKey(t, label), Options{Now: c.Now, Rand: rand.NewChaCha8([32]byte{1}), Issuer: "https://kbs.example", Build: "cvm test"})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newVerifier(t testing.TB, c *clock, signers ...*Signer) *Verifier {
	t.Helper()
	var keys []*ecdsa.PublicKey
	for _, s := range signers {
		keys = append(keys, &s.key.PublicKey)
	}
	jwks, err := JWKS(keys...)
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewVerifier(jwks, c.Now)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func sampleToken(t testing.TB) Token {
	k := teeKey(t)
	return Token{Status: StatusAffirming, Claims: testClaims(), TEEPubKey: k, PolicyID: "default"}
}

func TestRoundTrip(t *testing.T) {
	c := &clock{t: t0}
	s := newSigner(t, "current", c)
	v := newVerifier(t, c, s)
	for _, status := range []string{StatusAffirming, StatusWarning, StatusContraindicated} {
		in := sampleToken(t)
		in.Status = status
		in.TEEPubKey.Alg = "ECDH-ES+A256KW" // not carried: see package doc
		tok, err := s.Sign(in)
		if err != nil {
			t.Fatalf("Sign = %v", err)
		}
		got, err := v.Verify(tok)
		if err != nil {
			t.Fatalf("Verify = %v", err)
		}
		want := &Token{
			Status:    status,
			TEE:       attestation.TEESim,
			Claims:    testClaims(),
			TEEPubKey: teeKey(t),
			PolicyID:  "default",
			IssuedAt:  t0,
			Expires:   t0.Add(DefaultLifetime),
			ID:        got.ID,
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Verify(Sign(%s)) mismatch (-want +got):\n%s", status, diff)
		}
		if len(got.ID) != 22 {
			t.Errorf("ID %q is not 16 bytes of base64url", got.ID)
		}
	}
}

func TestSignFields(t *testing.T) {
	c := &clock{t: t0.Add(1500 * time.Millisecond)}
	s := newSigner(t, "current", c)
	v := newVerifier(t, c, s)
	rsaKey, err := rsa.GenerateKey(nil, 2048) // random source ignored since Go 1.26
	if err != nil {
		t.Fatal(err)
	}
	rsaJWK, err := runtimedata.JWKFromPublicKey(&rsaKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	in := sampleToken(t)
	in.TEE = attestation.TEESim
	in.ID = "fixed-id"
	in.IssuedAt = t0
	in.Expires = t0.Add(time.Minute)
	in.TEEPubKey = rsaJWK
	tok, err := s.Sign(in)
	if err != nil {
		t.Fatal(err)
	}
	got, err := v.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	want := in
	if diff := cmp.Diff(&want, got); diff != "" {
		t.Errorf("explicit fields mismatch (-want +got):\n%s", diff)
	}
}

func TestSignErrors(t *testing.T) {
	c := &clock{t: t0}
	s := newSigner(t, "current", c)
	tests := []struct {
		name string
		edit func(*Token)
	}{
		{"unknown status", func(t *Token) { t.Status = "none" }},
		{"empty status", func(t *Token) { t.Status = "" }},
		{"no claims", func(t *Token) { t.Claims = nil }},
		{"tee differs from claims", func(t *Token) { t.TEE = attestation.TEESEVSNP }},
		{"claims without tee", func(t *Token) { t.Claims.TEE = "" }},
		{"invalid tee key", func(t *Token) { t.TEEPubKey.X = "AAAA" }},
		{"no tee key", func(t *Token) { t.TEEPubKey = runtimedata.JWK{} }},
		{"expires before issued", func(t *Token) { t.IssuedAt = t0; t.Expires = t0.Add(-time.Second) }},
		{"expires within the issuing second", func(t *Token) { t.IssuedAt = t0; t.Expires = t0.Add(500 * time.Millisecond) }},
		{"too large", func(t *Token) { t.Claims.Unchecked = []string{strings.Repeat("x", MaxSize)} }},
	}
	for _, tc := range tests {
		in := sampleToken(t)
		tc.edit(&in)
		if tok, err := s.Sign(in); err == nil {
			t.Errorf("%s: Sign = %.40q..., want an error", tc.name, tok)
		}
	}
	bad, err := NewSigner(signingKey(t, "x"), Options{Now: c.Now, Rand: failingReader{}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bad.Sign(sampleToken(t)); err == nil || !strings.Contains(err.Error(), "entropy") {
		t.Errorf("Sign with a failing random source = %v", err)
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("entropy exhausted") }

func TestNewSignerErrors(t *testing.T) {
	now := func() time.Time { return t0 }
	r := rand.NewChaCha8([32]byte{})
	p384, err := ecdsa.ParseRawPrivateKey(elliptic.P384(), bytes.Repeat([]byte{7}, 48))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		key  *ecdsa.PrivateKey
		opts Options
	}{
		{"nil key", nil, Options{Now: now, Rand: r}},
		{"P-384 key", p384, Options{Now: now, Rand: r}},
		{"no clock", signingKey(t, "a"), Options{Rand: r}},
		{"no random source", signingKey(t, "a"), Options{Now: now}},
		{"lifetime under a second", signingKey(t, "a"), Options{Now: now, Rand: r, Lifetime: time.Millisecond}},
	}
	for _, tc := range tests {
		if _, err := NewSigner(tc.key, tc.opts); err == nil {
			t.Errorf("%s: NewSigner succeeded", tc.name)
		}
	}
	if _, err := JWKS(&p384.PublicKey); err == nil {
		t.Error("JWKS(P-384 key) succeeded")
	}
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// forge builds a compact JWS with the given header, payload and signature
// segments (already encoded).
func forge(header map[string]any, payload string, sig string) string {
	h, _ := json.Marshal(header)
	return b64(h) + "." + payload + "." + sig
}

// signRaw signs an arbitrary payload with key, as a token would be.
func signRaw(t testing.TB, key *ecdsa.PrivateKey, payload []byte, opts *jose.SignerOptions) string {
	t.Helper()
	kid, err := thumbprint(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if opts == nil {
		opts = (&jose.SignerOptions{}).WithType("JWT")
	}
	sg, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, opts)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := sg.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// attackTokens are tokens an attacker could present, each with the
// reason Verify must give. They also seed FuzzVerify.
func attackTokens(t testing.TB, s *Signer) []struct {
	name, tok string
	want      error
	reason    string
} {
	c := &clock{t: t0}
	good, err := s.Sign(sampleToken(t))
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(good, ".")
	body, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var header map[string]any
	hb, _ := base64.RawURLEncoding.DecodeString(parts[0])
	if err := json.Unmarshal(hb, &header); err != nil {
		t.Fatal(err)
	}
	withAlg := func(alg string) map[string]any {
		h := map[string]any{}
		for k, v := range header {
			h[k] = v
		}
		h["alg"] = alg
		return h
	}
	contra := sampleToken(t)
	contra.Status = StatusContraindicated
	contraTok, err := s.Sign(contra)
	if err != nil {
		t.Fatal(err)
	}
	contraParts := strings.Split(contraTok, ".")

	// HS256 keyed with the public key, the classic alg-confusion forgery.
	jwks, _ := s.JWKS()
	hsInput := b64(mustJSON(withAlg("HS256"))) + "." + parts[1]
	mac := hmac.New(sha256.New, jwks)
	mac.Write([]byte(hsInput))
	hs256 := hsInput + "." + b64(mac.Sum(nil))

	attacker := newSigner(t, "attacker", c)
	attackerTok, err := attacker.Sign(sampleToken(t))
	if err != nil {
		t.Fatal(err)
	}
	// The attacker's signature under our kid.
	ap := strings.Split(attackerTok, ".")
	stolenKid := parts[0] + "." + ap[1] + "." + ap[2]

	embedded := signRaw(t, attacker.key, body, (&jose.SignerOptions{EmbedJWK: true}).WithType("JWT"))
	jsonSerialized := func() string {
		jws, err := jose.ParseSignedCompact(good, []jose.SignatureAlgorithm{jose.ES256})
		if err != nil {
			t.Fatal(err)
		}
		return jws.FullSerialize()
	}()
	promoted := strings.Replace(string(body), `"ear.status":"affirming"`, `"ear.status":"affirming" `, 1)

	return []struct {
		name, tok string
		want      error
		reason    string
	}{
		{"genuine", good, nil, ""},
		{"payload tampered: status edited", parts[0] + "." + b64([]byte(promoted)) + "." + parts[2], ErrInvalid, "signature does not verify"},
		{"payload of another token", parts[0] + "." + contraParts[1] + "." + parts[2], ErrInvalid, "signature does not verify"},
		{"signature of another token", contraParts[0] + "." + parts[1] + "." + contraParts[2], ErrInvalid, "signature does not verify"},
		{"alg none, no signature", forge(withAlg("none"), parts[1], ""), ErrInvalid, `unexpected signature algorithm "none"`},
		{"alg none, signature kept", forge(withAlg("none"), parts[1], parts[2]), ErrInvalid, `unexpected signature algorithm "none"`},
		{"alg NONE", forge(withAlg("NONE"), parts[1], ""), ErrInvalid, `unexpected signature algorithm "NONE"`},
		{"alg HS256 keyed with the public JWKS", hs256, ErrInvalid, `unexpected signature algorithm "HS256"`},
		{"alg ES384", forge(withAlg("ES384"), parts[1], parts[2]), ErrInvalid, `unexpected signature algorithm "ES384"`},
		{"alg RS256", forge(withAlg("RS256"), parts[1], parts[2]), ErrInvalid, `unexpected signature algorithm "RS256"`},
		{"alg missing", forge(map[string]any{"kid": header["kid"], "typ": "JWT"}, parts[1], parts[2]), ErrInvalid, `unexpected signature algorithm ""`},
		{"signed by a key not in the set", attackerTok, ErrInvalid, "unknown kid"},
		{"attacker's signature under our kid", stolenKid, ErrInvalid, "signature does not verify"},
		{"embedded jwk", embedded, ErrInvalid, "embedded jwk"},
		{"signature truncated", good[:len(good)-2], ErrInvalid, "signature does not verify"},
		{"signature empty", parts[0] + "." + parts[1] + ".", ErrInvalid, "signature does not verify"},
		{"JSON serialization", jsonSerialized, ErrInvalid, "parse: "},
		{"two segments", parts[0] + "." + parts[1], ErrInvalid, "parse: "},
		{"empty", "", ErrInvalid, "parse: "},
		{"too large", good + strings.Repeat("A", MaxSize), ErrInvalid, "over the 65536-byte limit"},
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func TestVerifyAttacks(t *testing.T) {
	c := &clock{t: t0}
	s := newSigner(t, "current", c)
	v := newVerifier(t, c, s)
	for _, tc := range attackTokens(t, s) {
		t.Run(tc.name, func(t *testing.T) {
			got, err := v.Verify(tc.tok)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Verify = %v", err)
				}
				return
			}
			if !errors.Is(err, tc.want) || got != nil {
				t.Fatalf("Verify = %v, %v, want %v", got, err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("Verify error %q does not give the reason %q", err, tc.reason)
			}
			if errors.Is(err, ErrExpired) {
				t.Errorf("Verify error %v also wraps ErrExpired", err)
			}
		})
	}
}

// TestVerifyPayloads signs malformed payloads with the genuine key: a
// valid signature does not make bad claims acceptable.
func TestVerifyPayloads(t *testing.T) {
	c := &clock{t: t0}
	s := newSigner(t, "current", c)
	v := newVerifier(t, c, s)
	good, err := s.Sign(sampleToken(t))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := base64.RawURLEncoding.DecodeString(strings.Split(good, ".")[1])
	edit := func(f func(m map[string]any)) []byte {
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatal(err)
		}
		f(m)
		return mustJSON(m)
	}
	cpu := func(m map[string]any) map[string]any { return m["submods"].(map[string]any)["cpu"].(map[string]any) }
	p256, _ := ecdh.P256().NewPrivateKey(bytes.Repeat([]byte{3}, 32))
	tests := []struct {
		name    string
		payload []byte
		want    error
		reason  string
	}{
		{"unchanged", body, nil, ""},
		{"not JSON", []byte("not json"), ErrInvalid, "payload: "},
		{"trailing data", append(bytes.Clone(body), []byte(" {}")...), ErrInvalid, "trailing data"},
		{"JSON array", []byte("[]"), ErrInvalid, "payload: "},
		{"other profile", edit(func(m map[string]any) { m["eat_profile"] = "tag:github.com,2024:confidential-containers/Trustee" }), ErrInvalid, "eat_profile"},
		{"no iat", edit(func(m map[string]any) { delete(m, "iat") }), ErrInvalid, "iat or exp missing"},
		{"no exp", edit(func(m map[string]any) { delete(m, "exp") }), ErrInvalid, "iat or exp missing"},
		{"exp as string", edit(func(m map[string]any) { m["exp"] = "9999999999" }), ErrInvalid, "payload: "},
		{"exp fractional", edit(func(m map[string]any) { m["exp"] = 1.5e9 + 0.5 }), ErrInvalid, "payload: "},
		{"exp before iat", edit(func(m map[string]any) { m["exp"] = m["iat"] }), ErrInvalid, "is not after iat"},
		{"no jti", edit(func(m map[string]any) { delete(m, "jti") }), ErrInvalid, "jti missing"},
		{"other developer", edit(func(m map[string]any) {
			m["ear.verifier-id"] = map[string]any{"developer": "https://veraison-project.org", "build": "x"}
		}), ErrInvalid, "developer"},
		{"no submods", edit(func(m map[string]any) { delete(m, "submods") }), ErrInvalid, "submods must hold"},
		{"submod renamed", edit(func(m map[string]any) { m["submods"] = map[string]any{"cpu0": cpu(m)} }), ErrInvalid, "submods must hold"},
		{"second submod", edit(func(m map[string]any) { m["submods"].(map[string]any)["gpu0"] = cpu(m) }), ErrInvalid, "submods must hold"},
		{"status none", edit(func(m map[string]any) { cpu(m)["ear.status"] = "none" }), ErrInvalid, `ear.status "none"`},
		{"status missing", edit(func(m map[string]any) { delete(cpu(m), "ear.status") }), ErrInvalid, `ear.status ""`},
		{"no annotated evidence", edit(func(m map[string]any) { delete(cpu(m), "ear.veraison.annotated-evidence") }), ErrInvalid, "annotated evidence missing"},
		{"annotated evidence without tee", edit(func(m map[string]any) {
			delete(cpu(m)["ear.veraison.annotated-evidence"].(map[string]any), "tee")
		}), ErrInvalid, "annotated evidence missing"},
		{"annotated evidence ill-typed", edit(func(m map[string]any) {
			cpu(m)["ear.veraison.annotated-evidence"] = map[string]any{"tee": "sim", "measurement": "zz"}
		}), ErrInvalid, "payload: "},
		{"no key attestation", edit(func(m map[string]any) { delete(cpu(m), "ear.veraison.key-attestation") }), ErrInvalid, "key attestation missing"},
		{"akpub not base64url", edit(func(m map[string]any) {
			cpu(m)["ear.veraison.key-attestation"] = map[string]any{"akpub": "MCowBQYDK2VuAyEA+/="}
		}), ErrInvalid, "akpub"},
		{"akpub not SPKI", edit(func(m map[string]any) {
			cpu(m)["ear.veraison.key-attestation"] = map[string]any{"akpub": b64([]byte("key"))}
		}), ErrInvalid, "akpub"},
		{"akpub replaced by another key", edit(func(m map[string]any) {
			spki := mustSPKI(t, p256.PublicKey())
			cpu(m)["ear.veraison.key-attestation"] = map[string]any{"akpub": b64(spki)}
		}), nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := v.Verify(signRaw(t, s.key, tc.payload, nil))
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Verify = %v", err)
				}
				return
			}
			if !errors.Is(err, tc.want) || got != nil {
				t.Fatalf("Verify = %+v, %v, want %v", got, err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("Verify error %q does not give the reason %q", err, tc.reason)
			}
		})
	}
	// typ other than JWT, with a genuine signature.
	if _, err := v.Verify(signRaw(t, s.key, body, (&jose.SignerOptions{}).WithType("at+jwt"))); !errors.Is(err, ErrInvalid) {
		t.Errorf("typ at+jwt: Verify = %v, want ErrInvalid", err)
	}
	if _, err := v.Verify(signRaw(t, s.key, body, &jose.SignerOptions{})); !errors.Is(err, ErrInvalid) {
		t.Errorf("no typ: Verify = %v, want ErrInvalid", err)
	}
}

func TestExpiry(t *testing.T) {
	c := &clock{t: t0}
	s := newSigner(t, "current", c)
	v := newVerifier(t, c, s)
	tok, err := s.Sign(sampleToken(t))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		at   time.Time
		want error
	}{
		{t0.Add(-ClockSkew - time.Second), ErrInvalid}, // issued in the future
		{t0.Add(-ClockSkew), nil},
		{t0, nil},
		{t0.Add(DefaultLifetime - time.Nanosecond), nil},
		{t0.Add(DefaultLifetime), ErrExpired},
		{t0.Add(24 * time.Hour), ErrExpired},
	}
	for _, tc := range tests {
		c.Set(tc.at)
		got, err := v.Verify(tok)
		if tc.want == nil {
			if err != nil || got == nil {
				t.Errorf("Verify at %v = %v", tc.at, err)
			}
			continue
		}
		if !errors.Is(err, tc.want) || got != nil {
			t.Errorf("Verify at %v = %v, want %v", tc.at, err, tc.want)
		}
	}
	// An expired forgery is invalid, not expired: the signature is
	// checked first.
	c.Set(t0.Add(time.Hour))
	parts := strings.Split(tok, ".")
	if _, err := v.Verify(parts[0] + "." + parts[1] + "." + parts[2][:len(parts[2])-4] + "AAAA"); !errors.Is(err, ErrInvalid) || errors.Is(err, ErrExpired) {
		t.Errorf("expired forgery: Verify = %v, want ErrInvalid only", err)
	}
}

func TestLifetime(t *testing.T) {
	c := &clock{t: t0}
	s, err := NewSigner(signingKey(t, "current"), Options{Now: c.Now, Rand: rand.NewChaCha8([32]byte{}), Lifetime: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	v := newVerifier(t, c, s)
	tok, err := s.Sign(sampleToken(t))
	if err != nil {
		t.Fatal(err)
	}
	got, err := v.Verify(tok)
	if err != nil || !got.Expires.Equal(t0.Add(30*time.Second)) {
		t.Fatalf("Verify = %v, %v, want expiry %v", got, err, t0.Add(30*time.Second))
	}
}

// TestKeyRotation: during a rotation the verifier holds both keys and
// accepts tokens from each; after it, only the new key's.
func TestKeyRotation(t *testing.T) {
	c := &clock{t: t0}
	oldS, newS := newSigner(t, "2025", c), newSigner(t, "2026", c)
	if oldS.KeyID() == newS.KeyID() {
		t.Fatal("two keys with one kid")
	}
	during := newVerifier(t, c, oldS, newS)
	after := newVerifier(t, c, newS)
	oldTok, err := oldS.Sign(sampleToken(t))
	if err != nil {
		t.Fatal(err)
	}
	newTok, err := newS.Sign(sampleToken(t))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		v    *Verifier
		tok  string
		want error
	}{
		{"old token during rotation", during, oldTok, nil},
		{"new token during rotation", during, newTok, nil},
		{"old token after rotation", after, oldTok, ErrInvalid},
		{"new token after rotation", after, newTok, nil},
	}
	for _, tc := range tests {
		_, err := tc.v.Verify(tc.tok)
		if (tc.want == nil) != (err == nil) || !errors.Is(err, tc.want) {
			t.Errorf("%s: Verify = %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestJWKS(t *testing.T) {
	c := &clock{t: t0}
	s := newSigner(t, "current", c)
	raw, err := s.JWKS()
	if err != nil {
		t.Fatal(err)
	}
	var set struct {
		Keys []map[string]string `json:"keys"`
	}
	if err := json.Unmarshal(raw, &set); err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 1 {
		t.Fatalf("JWKS has %d keys, want 1", len(set.Keys))
	}
	k := set.Keys[0]
	// RFC 7638: SHA-256 of {"crv","kty","x","y"} in lexicographic order.
	canon := `{"crv":"P-256","kty":"EC","x":"` + k["x"] + `","y":"` + k["y"] + `"}`
	sum := sha256.Sum256([]byte(canon))
	want := map[string]string{"kty": "EC", "crv": "P-256", "x": k["x"], "y": k["y"], "kid": b64(sum[:]), "alg": "ES256", "use": "sig"}
	if diff := cmp.Diff(want, k); diff != "" {
		t.Errorf("JWKS key mismatch (-want +got):\n%s", diff)
	}
	if s.KeyID() != b64(sum[:]) {
		t.Errorf("KeyID = %q, want %q", s.KeyID(), b64(sum[:]))
	}
}

func TestNewVerifierErrors(t *testing.T) {
	now := func() time.Time { return t0 }
	good, err := JWKS(&signingKey(t, "a").PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	var set map[string][]map[string]any
	if err := json.Unmarshal(good, &set); err != nil {
		t.Fatal(err)
	}
	key := set["keys"][0]
	edited := func(k, v string) map[string]any {
		m := map[string]any{}
		for kk, vv := range key {
			m[kk] = vv
		}
		if v == "" {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	with := func(k, v string) []byte { return mustJSON(map[string]any{"keys": []any{edited(k, v)}}) }
	priv := signingKey(t, "a")
	privJWK, err := jose.JSONWebKey{Key: priv}.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	p384, _ := ecdsa.ParseRawPrivateKey(elliptic.P384(), bytes.Repeat([]byte{7}, 48))
	p384JWK, _ := jose.JSONWebKey{Key: &p384.PublicKey}.MarshalJSON()
	tests := []struct {
		name string
		jwks []byte
	}{
		{"not JSON", []byte("{")},
		{"no keys", []byte(`{"keys":[]}`)},
		{"kid not the thumbprint", with("kid", "my-key")},
		{"alg RS256", with("alg", "RS256")},
		{"alg HS256", with("alg", "HS256")},
		{"use enc", with("use", "enc")},
		{"private key", []byte(`{"keys":[` + string(privJWK) + `]}`)},
		{"P-384 key", []byte(`{"keys":[` + string(p384JWK) + `]}`)},
		{"symmetric key", []byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}]}`)},
		{"duplicate key", mustJSON(map[string]any{"keys": []any{key, edited("kid", "")}})},
	}
	for _, tc := range tests {
		if _, err := NewVerifier(tc.jwks, now); err == nil {
			t.Errorf("%s: NewVerifier(%s) succeeded", tc.name, tc.jwks)
		}
	}
	if _, err := NewVerifier(with("kid", ""), now); err != nil {
		t.Errorf("key without kid: NewVerifier = %v", err)
	}
	if _, err := NewVerifier(good, nil); err == nil {
		t.Error("NewVerifier without a clock succeeded")
	}
}

// TestGoldenPayload pins the EAR payload for fixed inputs (see
// testdata/README.md). Refresh with -update.
func TestGoldenPayload(t *testing.T) {
	c := &clock{t: t0}
	s := newSigner(t, "current", c)
	in := sampleToken(t)
	in.ID = "golden-token-id"
	tok, err := s.Sign(in)
	if err != nil {
		t.Fatal(err)
	}
	body, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
	if err != nil {
		t.Fatal(err)
	}
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, body, "", "  "); err != nil {
		t.Fatal(err)
	}
	pretty.WriteByte('\n')
	path := filepath.Join("testdata", "payload.json")
	if *update {
		if err := os.WriteFile(path, pretty.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), pretty.String()); diff != "" {
		t.Errorf("payload mismatch (-want +got):\n%s", diff)
	}
}

func mustSPKI(t testing.TB, pub any) []byte {
	t.Helper()
	b, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

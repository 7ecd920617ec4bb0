package seal

import (
	"bytes"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hpke"
	"crypto/rsa"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/greatjail/cvm/attestation/runtimedata"
)

// testKey is a SYNTHETIC key for tests only, derived from a public label.
type testKey struct {
	name  string
	priv  crypto.PrivateKey
	jwk   runtimedata.JWK
	suite Suite
}

func scalar(label string, size int) []byte {
	a := sha512.Sum512([]byte("cvm seal synthetic key " + label))
	b := sha512.Sum512(a[:])
	return append(a[:], b[:]...)[:size]
}

func ecdsaKey(t testing.TB, c elliptic.Curve, size int, label string) *ecdsa.PrivateKey {
	t.Helper()
	b := scalar(label, size)
	if c == elliptic.P521() {
		b[0] &= 1 // below the group order
	}
	k, err := ecdsa.ParseRawPrivateKey(c, b)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func testKeys(t testing.TB) []testKey {
	t.Helper()
	x, err := ecdh.X25519().NewPrivateKey(scalar("x25519", 32))
	if err != nil {
		t.Fatal(err)
	}
	p256 := ecdsaKey(t, elliptic.P256(), 32, "p256")
	p384 := ecdsaKey(t, elliptic.P384(), 48, "p384")
	p521 := ecdsaKey(t, elliptic.P521(), 66, "p521")
	p256ecdh, err := ecdh.P256().NewPrivateKey(scalar("p256-ecdh", 32))
	if err != nil {
		t.Fatal(err)
	}
	keys := []testKey{
		{"x25519", x, mustJWK(t, x.PublicKey()), SuiteX25519},
		{"p256-ecdsa", p256, mustJWK(t, &p256.PublicKey), SuiteP256},
		{"p256-ecdh", p256ecdh, mustJWK(t, p256ecdh.PublicKey()), SuiteP256},
		{"p384", p384, mustJWK(t, &p384.PublicKey), SuiteP384},
		{"p521", p521, mustJWK(t, &p521.PublicKey), SuiteP521},
	}
	// Trustee-style guests set alg; it does not change the suite.
	keys[1].jwk.Alg = "ECDH-ES+A256KW"
	return keys
}

func mustJWK(t testing.TB, pub crypto.PublicKey) runtimedata.JWK {
	t.Helper()
	j, err := runtimedata.JWKFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

var secret = []byte("SYNTHETIC disk key: 0123456789abcdef0123456789abcdef")

func TestRoundTrip(t *testing.T) {
	info := Info("repo/disk/root", 3)
	for _, k := range testKeys(t) {
		t.Run(k.name, func(t *testing.T) {
			ct, suite, err := Seal(k.jwk, info, secret)
			if err != nil {
				t.Fatalf("Seal = %v", err)
			}
			if suite != k.suite {
				t.Errorf("Seal suite = %v, want %v", suite, k.suite)
			}
			if s, err := SuiteFor(k.jwk); err != nil || s != k.suite {
				t.Errorf("SuiteFor = %v, %v, want %v", s, err, k.suite)
			}
			if bytes.Contains(ct, secret[:16]) {
				t.Error("ciphertext contains the plaintext")
			}
			pt, err := Open(k.priv, suite, info, ct)
			if err != nil {
				t.Fatalf("Open = %v", err)
			}
			if diff := cmp.Diff(secret, pt); diff != "" {
				t.Errorf("Open mismatch (-want +got):\n%s", diff)
			}
			// Sealing is randomized: the same input seals differently.
			ct2, _, err := Seal(k.jwk, info, secret)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Equal(ct, ct2) {
				t.Error("two Seals of the same plaintext are equal")
			}
			// An empty resource seals too.
			ct3, _, err := Seal(k.jwk, info, nil)
			if err != nil {
				t.Fatal(err)
			}
			if pt, err := Open(k.priv, suite, info, ct3); err != nil || len(pt) != 0 {
				t.Errorf("Open(Seal(empty)) = %q, %v", pt, err)
			}
		})
	}
}

// TestOpenAttacks: each way a ciphertext can be misdirected or altered
// fails, with its own reason.
func TestOpenAttacks(t *testing.T) {
	keys := testKeys(t)
	info := Info("repo/disk/root", 3)
	for _, k := range keys {
		t.Run(k.name, func(t *testing.T) {
			ct, suite, err := Seal(k.jwk, info, secret)
			if err != nil {
				t.Fatal(err)
			}
			encLen := len(ct) - len(secret) - 16
			flip := func(i int) []byte {
				b := bytes.Clone(ct)
				b[i] ^= 1
				return b
			}
			// Another key on the same curve.
			mine, err := privateKey(k.priv)
			if err != nil {
				t.Fatal(err)
			}
			other := bytes.Clone(mine.Bytes())
			other[len(other)-1] ^= 1
			sameCurve, err := mine.Curve().NewPrivateKey(other)
			if err != nil {
				t.Fatal(err)
			}
			var otherCurve crypto.PrivateKey = keys[3].priv // p384
			if k.suite == SuiteP384 {
				otherCurve = keys[0].priv
			}
			tests := []struct {
				name  string
				priv  crypto.PrivateKey
				suite Suite
				info  []byte
				ct    []byte
				want  error
			}{
				{"another key on the same curve", sameCurve, suite, info, ct, ErrOpen},
				{"a key on another curve", otherCurve, suite, info, ct, ErrSuite},
				{"resource name swapped", k.priv, suite, Info("repo/disk/home", 3), ct, ErrOpen},
				{"version swapped", k.priv, suite, Info("repo/disk/root", 2), ct, ErrOpen},
				{"empty info", k.priv, suite, nil, ct, ErrOpen},
				{"encapsulated key altered", k.priv, suite, info, flip(encLen / 2), ErrOpen},
				{"ciphertext altered", k.priv, suite, info, flip(encLen + 1), ErrOpen},
				{"tag altered", k.priv, suite, info, flip(len(ct) - 1), ErrOpen},
				{"truncated", k.priv, suite, info, ct[:len(ct)-1], ErrOpen},
				{"only the encapsulated key", k.priv, suite, info, ct[:encLen], ErrOpen},
				{"too short for a key", k.priv, suite, info, ct[:encLen-1], ErrOpen},
				{"extended", k.priv, suite, info, append(bytes.Clone(ct), 0), ErrOpen},
				{"empty", k.priv, suite, info, nil, ErrOpen},
				{"AEAD downgraded to AES-128-GCM", k.priv, Suite{suite.KEM, suite.KDF, 0x0001}, info, ct, ErrSuite},
				{"KDF changed", k.priv, Suite{suite.KEM, KDFSHA512 ^ suite.KDF ^ KDFSHA384, suite.AEAD}, info, ct, ErrSuite},
				{"zero suite", k.priv, Suite{}, info, ct, ErrSuite},
			}
			for _, tc := range tests {
				pt, err := Open(tc.priv, tc.suite, tc.info, tc.ct)
				if !errors.Is(err, tc.want) || pt != nil {
					t.Errorf("%s: Open = %q, %v, want %v", tc.name, pt, err, tc.want)
				}
			}
		})
	}
}

func TestUnsupportedKeys(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(nil, 2048) // random source ignored since Go 1.26
	if err != nil {
		t.Fatal(err)
	}
	rsaJWK := mustJWK(t, &rsaKey.PublicKey)
	rsaJWK.Alg = "RSA-OAEP"
	good := testKeys(t)[1].jwk
	offCurve := good
	offCurve.Y = good.X
	tests := []struct {
		name    string
		jwk     runtimedata.JWK
		mention string
	}{
		{"rsa", rsaJWK, "RSA keys cannot be sealed to"},
		{"point off the curve", offCurve, "not a point on the curve"},
		{"empty", runtimedata.JWK{}, "missing kty"},
		{"ed25519", runtimedata.JWK{Kty: "OKP", Crv: "Ed25519", X: good.X}, "unsupported crv"},
		{"secp256k1", runtimedata.JWK{Kty: "EC", Crv: "secp256k1", X: good.X, Y: good.Y}, "unsupported crv"},
	}
	for _, tc := range tests {
		ct, _, err := Seal(tc.jwk, nil, secret)
		if !errors.Is(err, ErrUnsupportedKey) || ct != nil {
			t.Errorf("%s: Seal = %v, want ErrUnsupportedKey", tc.name, err)
			continue
		}
		if !strings.Contains(err.Error(), tc.mention) {
			t.Errorf("%s: Seal error %q does not say %q", tc.name, err, tc.mention)
		}
		if _, err := SuiteFor(tc.jwk); !errors.Is(err, ErrUnsupportedKey) {
			t.Errorf("%s: SuiteFor = %v, want ErrUnsupportedKey", tc.name, err)
		}
	}
	for _, priv := range []crypto.PrivateKey{rsaKey, nil, (*ecdh.PrivateKey)(nil), (*ecdsa.PrivateKey)(nil), "key"} {
		if _, err := Open(priv, SuiteP256, nil, make([]byte, 100)); !errors.Is(err, ErrUnsupportedKey) {
			t.Errorf("Open with %T = %v, want ErrUnsupportedKey", priv, err)
		}
	}
}

func TestInfo(t *testing.T) {
	tests := []struct {
		name    string
		version int
		want    string
	}{
		{"repo/disk/root", 1, "cvm-kbs-v1 resource repo/disk/root version 1"},
		{"a", 1234567, "cvm-kbs-v1 resource a version 1234567"},
	}
	for _, tc := range tests {
		if got := string(Info(tc.name, tc.version)); got != tc.want {
			t.Errorf("Info(%q, %d) = %q, want %q", tc.name, tc.version, got, tc.want)
		}
	}
}

func TestSuiteString(t *testing.T) {
	tests := []struct {
		s    Suite
		want string
	}{
		{SuiteX25519, "DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM"},
		{SuiteP384, "DHKEM(P-384, HKDF-SHA384), HKDF-SHA384, AES-256-GCM"},
		{Suite{0x41, 9, 0xffff}, "0x0041, 0x0009, 0xffff"},
	}
	for _, tc := range tests {
		if got := tc.s.String(); got != tc.want {
			t.Errorf("%#v.String() = %q, want %q", tc.s, got, tc.want)
		}
	}
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRFC9180Vectors opens the first encryption of RFC 9180 Appendix A.1.1
// (DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM, base mode) and
// A.3.1 (DHKEM(P-256, HKDF-SHA256), same KDF and AEAD) with the recipient
// key going through this package's key conversion. skRm, pkRm, enc and
// info also appear in Go's crypto/hpke/testdata/rfc9180.json; pt, aad and
// ct are from the RFC's text.
//
// Only the receiving side can be checked against the RFC: crypto/hpke
// draws the sender's ephemeral key itself (its deterministic hook is
// unexported), and the one-shot Open this package calls takes no AAD
// while the RFC's encryptions all have one, so the test calls
// hpke.NewRecipient directly.
func TestRFC9180Vectors(t *testing.T) {
	tests := []struct {
		name           string
		curve          ecdh.Curve
		skRm, pkRm     string
		enc, aad, ct   string
		wantSuiteKEM   uint16
		wantPlaintext  string
		recipientInput func(*ecdh.PrivateKey) crypto.PrivateKey
	}{
		{
			name:          "A.1.1",
			curve:         ecdh.X25519(),
			skRm:          "4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8",
			pkRm:          "3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d",
			enc:           "37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431",
			aad:           "436f756e742d30",
			ct:            "f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a96d8770ac83d07bea87e13c512a",
			wantSuiteKEM:  KEMX25519,
			wantPlaintext: "Beauty is truth, truth beauty",
		},
		{
			name:          "A.3.1",
			curve:         ecdh.P256(),
			skRm:          "f3ce7fdae57e1a310d87f1ebbde6f328be0a99cdbcadf4d6589cf29de4b8ffd2",
			pkRm:          "04fe8c19ce0905191ebc298a9245792531f26f0cece2460639e8bc39cb7f706a826a779b4cf969b8a0e539c7f62fb3d30ad6aa8f80e30f1d128aafd68a2ce72ea0",
			enc:           "04a92719c6195d5085104f469a8b9814d5838ff72b60501e2c4466e5e67b325ac98536d7b61a1af4b78e5b7f951c0900be863c403ce65c9bfcb9382657222d18c4",
			aad:           "436f756e742d30",
			ct:            "5ad590bb8baa577f8619db35a36311226a896e7342a6d836d8b7bcd2f20b6c7f9076ac232e3ab2523f39513434",
			wantSuiteKEM:  KEMP256,
			wantPlaintext: "Beauty is truth, truth beauty",
		},
	}
	info := unhex(t, "4f6465206f6e2061204772656369616e2055726e") // "Ode on a Grecian Urn"
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sk, err := tc.curve.NewPrivateKey(unhex(t, tc.skRm))
			if err != nil {
				t.Fatal(err)
			}
			if got := hex.EncodeToString(sk.PublicKey().Bytes()); got != tc.pkRm {
				t.Fatalf("pkRm = %s, want %s", got, tc.pkRm)
			}
			// The public key as a guest would send it selects the KEM.
			suite, err := SuiteFor(mustJWK(t, sk.PublicKey()))
			if err != nil || suite.KEM != tc.wantSuiteKEM || suite.KDF != KDFSHA256 {
				t.Fatalf("SuiteFor = %v, %v", suite, err)
			}
			k, err := privateKey(sk)
			if err != nil {
				t.Fatal(err)
			}
			hk, err := hpke.NewDHKEMPrivateKey(k)
			if err != nil {
				t.Fatal(err)
			}
			r, err := hpke.NewRecipient(unhex(t, tc.enc), hk, hpke.HKDFSHA256(), hpke.AES128GCM(), info)
			if err != nil {
				t.Fatal(err)
			}
			pt, err := r.Open(unhex(t, tc.aad), unhex(t, tc.ct))
			if err != nil || string(pt) != tc.wantPlaintext {
				t.Fatalf("Open = %q, %v, want %q", pt, err, tc.wantPlaintext)
			}
		})
	}
}

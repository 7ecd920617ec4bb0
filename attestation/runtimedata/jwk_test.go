package runtimedata

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"testing"
)

type equaler interface{ Equal(crypto.PublicKey) bool }

func TestJWKRoundTrip(t *testing.T) {
	p256 := syntheticECDSA(t, elliptic.P256(), "jwk test p256")
	p384 := syntheticECDSA(t, elliptic.P384(), "jwk test p384")
	p521 := syntheticECDSA(t, elliptic.P521(), "jwk test p521")
	ecdhP256, err := p256.ECDH()
	if err != nil {
		t.Fatal(err)
	}
	ecdhP384, err := p384.ECDH()
	if err != nil {
		t.Fatal(err)
	}
	x25519 := syntheticX25519(t, "jwk test x25519")
	tests := []struct {
		name     string
		pub      crypto.PublicKey
		kty, crv string
		coord    int // decoded size of x (and y)
	}{
		{"ecdsa P-256", &p256.PublicKey, "EC", "P-256", 32},
		{"ecdsa P-384", &p384.PublicKey, "EC", "P-384", 48},
		{"ecdsa P-521", &p521.PublicKey, "EC", "P-521", 66},
		{"ecdh P-256", ecdhP256.PublicKey(), "EC", "P-256", 32},
		{"ecdh P-384", ecdhP384.PublicKey(), "EC", "P-384", 48},
		{"ecdh X25519", x25519.PublicKey(), "OKP", "X25519", 32},
		{"rsa 2048", syntheticRSA2048(), "RSA", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := JWKFromPublicKey(tt.pub)
			if err != nil {
				t.Fatalf("JWKFromPublicKey() = %v", err)
			}
			if k.Kty != tt.kty || k.Crv != tt.crv || k.Alg != "" {
				t.Errorf("JWKFromPublicKey() kty, crv, alg = %q, %q, %q, want %q, %q, \"\"", k.Kty, k.Crv, k.Alg, tt.kty, tt.crv)
			}
			if tt.coord > 0 {
				for name, s := range map[string]string{"x": k.X, "y": k.Y} {
					if name == "y" && tt.kty == "OKP" {
						if s != "" {
							t.Errorf("OKP JWK has y = %q", s)
						}
						continue
					}
					if b, err := base64.RawURLEncoding.DecodeString(s); err != nil || len(b) != tt.coord {
						t.Errorf("%s = %q decodes to %d bytes, %v; want %d", name, s, len(b), err, tt.coord)
					}
				}
			}
			got, err := k.PublicKey()
			if err != nil {
				t.Fatalf("PublicKey() = %v", err)
			}
			// EC keys come back as *ecdsa.PublicKey even when they went in
			// as *ecdh.PublicKey; compare in the input's type.
			if _, ok := tt.pub.(*ecdh.PublicKey); ok && tt.kty == "EC" {
				e, ok := got.(*ecdsa.PublicKey)
				if !ok {
					t.Fatalf("PublicKey() = %T, want *ecdsa.PublicKey", got)
				}
				got, err = e.ECDH()
				if err != nil {
					t.Fatal(err)
				}
			}
			if !tt.pub.(equaler).Equal(got) {
				t.Errorf("PublicKey() = %v, want the original key", got)
			}
			again, err := JWKFromPublicKey(got)
			if err != nil || again != k {
				t.Errorf("JWKFromPublicKey(PublicKey()) = %+v, %v, want %+v", again, err, k)
			}
		})
	}
}

// TestJWKLeftPadding finds a synthetic P-256 key whose x coordinate has a
// leading zero byte and checks it is kept (RFC 7518 section 6.2.1.2: the
// full field size).
func TestJWKLeftPadding(t *testing.T) {
	for i := 0; i < 10000; i++ {
		k := syntheticECDSA(t, elliptic.P256(), fmt.Sprintf("jwk padding %d", i))
		pt, err := k.PublicKey.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		if pt[1] != 0 {
			continue
		}
		j, err := JWKFromPublicKey(&k.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		x, err := base64.RawURLEncoding.DecodeString(j.X)
		if err != nil || len(x) != 32 || x[0] != 0 || len(j.X) != 43 {
			t.Fatalf("JWK x = %q (%d bytes, %v), want 32 bytes with a leading zero", j.X, len(x), err)
		}
		// The same coordinate without its leading zero is rejected.
		short := j
		short.X = base64.RawURLEncoding.EncodeToString(x[1:])
		if _, err := short.PublicKey(); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "x is 31 bytes, want 32") {
			t.Errorf("PublicKey() with an unpadded x = %v, want a length error", err)
		}
		return
	}
	t.Fatal("no synthetic P-256 key with a leading zero in x among 10000")
}

func TestJWKFromPublicKeyRejects(t *testing.T) {
	p224 := syntheticECDSA(t, elliptic.P224(), "jwk test p224")
	small := &rsa.PublicKey{N: new(big.Int).SetBytes(seed("jwk test rsa 1024", 128)), E: 65537}
	small.N.SetBit(small.N, 0, 1)
	small.N.SetBit(small.N, 1023, 1)
	edPub := ed25519.NewKeyFromSeed(seed("jwk test ed25519", 32)).Public()
	tests := []struct {
		name string
		pub  crypto.PublicKey
		want string
	}{
		{"ed25519", edPub, "unsupported public key type ed25519.PublicKey"},
		{"nil", nil, "unsupported public key type <nil>"},
		{"P-224", &p224.PublicKey, "unsupported ecdsa curve P-224"},
		{"nil ecdsa", (*ecdsa.PublicKey)(nil), "nil *ecdsa.PublicKey"},
		{"nil ecdh", (*ecdh.PublicKey)(nil), "nil *ecdh.PublicKey"},
		{"nil rsa", (*rsa.PublicKey)(nil), "nil rsa modulus"},
		{"rsa 1024", small, "rsa modulus is 1024 bits, want at least 2048"},
		{"rsa exponent 0", &rsa.PublicKey{N: syntheticRSA2048().N, E: 0}, "rsa exponent 0 is not positive"},
		{"rsa exponent even", &rsa.PublicKey{N: syntheticRSA2048().N, E: 65536}, "rsa exponent 65536 is not an odd number"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := JWKFromPublicKey(tt.pub)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("JWKFromPublicKey() = %+v, %v, want error wrapping ErrInvalid containing %q", got, err, tt.want)
			}
		})
	}
}

func TestJWKPublicKeyRejects(t *testing.T) {
	ec, err := JWKFromPublicKey(&syntheticECDSA(t, elliptic.P256(), "jwk test p256").PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	p521, err := JWKFromPublicKey(&syntheticECDSA(t, elliptic.P521(), "jwk test p521").PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	okp, err := JWKFromPublicKey(syntheticX25519(t, "jwk test x25519").PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := JWKFromPublicKey(syntheticRSA2048())
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	dec := func(s string) []byte {
		b, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// y+1 moves the point off the curve.
	yPlus1 := func() string {
		y := new(big.Int).SetBytes(dec(ec.Y))
		return enc(y.Add(y, big.NewInt(1)).FillBytes(make([]byte, 32)))
	}()
	// A modulus with a prepended zero octet.
	nZero := enc(append([]byte{0}, dec(rsaKey.N)...))
	n1024 := enc(dec(rsaKey.N)[:128])
	nEven := func() string {
		b := dec(rsaKey.N)
		b[len(b)-1] &^= 1
		return enc(b)
	}()
	tests := []struct {
		name string
		k    JWK
		want string
	}{
		{"missing kty", JWK{}, "missing kty"},
		{"lowercase kty", with(ec, func(k *JWK) { k.Kty = "ec" }), `unsupported kty "ec"`},
		{"oct kty", JWK{Kty: "oct"}, `unsupported kty "oct"`},
		{"missing crv", with(ec, func(k *JWK) { k.Crv = "" }), "missing crv"},
		{"P-224", with(ec, func(k *JWK) { k.Crv = "P-224" }), `unsupported crv "P-224"`},
		{"secp256k1", with(ec, func(k *JWK) { k.Crv = "secp256k1" }), `unsupported crv "secp256k1"`},
		{"X25519 as EC", with(ec, func(k *JWK) { k.Crv = "X25519" }), `unsupported crv "X25519" for kty "EC"`},
		{"missing x", with(ec, func(k *JWK) { k.X = "" }), "missing x"},
		{"missing y", with(ec, func(k *JWK) { k.Y = "" }), "missing y"},
		{"not on curve", with(ec, func(k *JWK) { k.Y = yPlus1 }), "not a point on the curve P-256"},
		{"zero point", with(ec, func(k *JWK) { k.X, k.Y = enc(make([]byte, 32)), enc(make([]byte, 32)) }), "not a point on the curve P-256"},
		{"x too long", with(ec, func(k *JWK) { k.X = enc(append([]byte{0}, dec(ec.X)...)) }), "x is 33 bytes, want 32 for P-256"},
		{"P-521 x short", with(p521, func(k *JWK) { k.X = enc(dec(p521.X)[1:]) }), "x is 65 bytes, want 66 for P-521"},
		{"padded base64", with(ec, func(k *JWK) { k.X += "=" }), "x is not canonical unpadded base64url"},
		{"std alphabet", with(ec, func(k *JWK) { k.X = strings.NewReplacer("-", "+", "_", "/").Replace(k.X) + "+" }), "x is not canonical unpadded base64url"},
		{"line break", with(ec, func(k *JWK) { k.X = k.X[:10] + "\n" + k.X[10:] }), "x is not canonical unpadded base64url"},
		{"non-zero trailing bits", with(ec, func(k *JWK) { k.X = k.X[:42] + nonCanonicalLast(k.X[42]) }), "x is not canonical unpadded base64url"},
		{"n on EC", with(ec, func(k *JWK) { k.N = "AQAB" }), `member "n" is not allowed for kty "EC"`},
		{"y on OKP", with(okp, func(k *JWK) { k.Y = okp.X }), `member "y" is not allowed for kty "OKP"`},
		{"Ed25519 OKP", with(okp, func(k *JWK) { k.Crv = "Ed25519" }), `unsupported crv "Ed25519" for kty "OKP"`},
		{"X25519 zero", with(okp, func(k *JWK) { k.X = enc(make([]byte, 32)) }), "X25519 x is a low-order point"},
		{"X25519 one", with(okp, func(k *JWK) { k.X = enc(append([]byte{1}, make([]byte, 31)...)) }), "X25519 x is a low-order point"},
		{"X25519 order 8", with(okp, func(k *JWK) { k.X = hexB64(t, "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800") }), "X25519 x is a low-order point"},
		{"OKP short x", with(okp, func(k *JWK) { k.X = enc(dec(okp.X)[:31]) }), "x is 31 bytes, want 32 for X25519"},
		{"crv on RSA", with(rsaKey, func(k *JWK) { k.Crv = "P-256" }), `member "crv" is not allowed for kty "RSA"`},
		{"missing n", with(rsaKey, func(k *JWK) { k.N = "" }), "missing n"},
		{"missing e", with(rsaKey, func(k *JWK) { k.E = "" }), "missing e"},
		{"rsa 1024", with(rsaKey, func(k *JWK) { k.N = n1024 }), "rsa modulus is 1024 bits, want at least 2048"},
		{"rsa huge", with(rsaKey, func(k *JWK) { k.N = enc(append([]byte{1}, make([]byte, 2048)...)) }), "rsa modulus is 16385 bits, want at most 16384"},
		{"rsa even", with(rsaKey, func(k *JWK) { k.N = nEven }), "rsa modulus is even"},
		{"rsa leading zero", with(rsaKey, func(k *JWK) { k.N = nZero }), "n has a leading zero octet"},
		{"e leading zero", with(rsaKey, func(k *JWK) { k.E = "AAEAAQ" }), "e has a leading zero octet"},
		{"e one", with(rsaKey, func(k *JWK) { k.E = "AQ" }), "rsa exponent 1 is not an odd number"},
		{"e even", with(rsaKey, func(k *JWK) { k.E = "AQAA" }), "rsa exponent 65536 is not an odd number"},
		{"e too big", with(rsaKey, func(k *JWK) { k.E = "gAAAAQ" }), "rsa exponent 2147483649 is not an odd number"},
		{"e five bytes", with(rsaKey, func(k *JWK) { k.E = "AQAAAAE" }), "rsa exponent is 5 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.k.PublicKey()
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("PublicKey(%+v) = %v, %v, want error wrapping ErrInvalid containing %q", tt.k, got, err, tt.want)
			}
		})
	}
}

// hexB64 re-encodes hex as unpadded base64url.
func hexB64(t *testing.T, h string) string {
	b, err := hex.DecodeString(h)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// with returns a copy of k changed by f.
func with(k JWK, f func(*JWK)) JWK {
	f(&k)
	return k
}

// nonCanonicalLast returns a base64url character that decodes to the same
// byte as c in the last position of a 43-character (32-byte) encoding but
// has non-zero trailing bits.
func nonCanonicalLast(c byte) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.IndexByte(alphabet, c)
	return string(alphabet[i|1])
}

package runtimedata

import (
	"bytes"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"math/big"
	"sync"
)

// RSA modulus limits of JWK.PublicKey.
const (
	minRSABits = 2048
	maxRSABits = 16384
)

// JWK is a public JSON Web Key (RFC 7517) as used for tee-pubkey: "EC"
// keys on P-256, P-384 and P-521 (RFC 7518 section 6.2), "RSA" keys
// (RFC 7518 section 6.3) and "OKP" X25519 keys (RFC 8037). Binary members
// are base64url without padding. Alg is carried through unchecked; Trustee
// requires it (its guests send "ECDH-ES+A256KW" with their P-256 keys), so
// set it when talking to a Trustee broker.
type JWK struct {
	Kty string `json:"kty"`
	Crv string `json:"crv,omitempty"`
	X   string `json:"x,omitempty"`
	Y   string `json:"y,omitempty"`
	N   string `json:"n,omitempty"`
	E   string `json:"e,omitempty"`
	Alg string `json:"alg,omitempty"`
}

type field struct{ name, value string }

// fields lists k's members by JSON name.
func (k JWK) fields() []field {
	return []field{
		{"kty", k.Kty}, {"crv", k.Crv}, {"x", k.X}, {"y", k.Y},
		{"n", k.N}, {"e", k.E}, {"alg", k.Alg},
	}
}

// fieldPtrs maps JSON member names to k's fields.
func (k *JWK) fieldPtrs() map[string]*string {
	return map[string]*string{
		"kty": &k.Kty, "crv": &k.Crv, "x": &k.X, "y": &k.Y,
		"n": &k.N, "e": &k.E, "alg": &k.Alg,
	}
}

// JWKFromPublicKey returns the JWK of pub, which must be an
// *ecdsa.PublicKey on P-256, P-384 or P-521, an *rsa.PublicKey of at least
// 2048 bits, or an *ecdh.PublicKey on X25519 (as "OKP") or a NIST curve
// (as "EC"). EC coordinates are left-padded to the field size. Alg is left
// empty for the caller to set. The result always passes JWK.PublicKey.
func JWKFromPublicKey(pub crypto.PublicKey) (JWK, error) {
	var k JWK
	switch p := pub.(type) {
	case *ecdsa.PublicKey:
		if p == nil {
			return JWK{}, invalid("jwk: nil *ecdsa.PublicKey")
		}
		crv, ok := ecdsaCurveName(p.Curve)
		if !ok {
			return JWK{}, invalid("jwk: unsupported ecdsa curve %v", curveLabel(p.Curve))
		}
		pt, err := p.Bytes()
		if err != nil {
			return JWK{}, invalid("jwk: invalid ecdsa public key: %v", err)
		}
		k = ecJWK(crv, pt)
	case *ecdh.PublicKey:
		if p == nil {
			return JWK{}, invalid("jwk: nil *ecdh.PublicKey")
		}
		switch p.Curve() {
		case ecdh.X25519():
			k = JWK{Kty: "OKP", Crv: "X25519", X: b64(p.Bytes())}
		case ecdh.P256():
			k = ecJWK("P-256", p.Bytes())
		case ecdh.P384():
			k = ecJWK("P-384", p.Bytes())
		case ecdh.P521():
			k = ecJWK("P-521", p.Bytes())
		default:
			return JWK{}, invalid("jwk: unsupported ecdh curve %v", p.Curve())
		}
	case *rsa.PublicKey:
		if p == nil || p.N == nil {
			return JWK{}, invalid("jwk: nil rsa modulus")
		}
		if p.E <= 0 {
			return JWK{}, invalid("jwk: rsa exponent %d is not positive", p.E)
		}
		k = JWK{Kty: "RSA", N: b64(p.N.Bytes()), E: b64(big.NewInt(int64(p.E)).Bytes())}
	default:
		return JWK{}, invalid("jwk: unsupported public key type %T", pub)
	}
	if _, err := k.PublicKey(); err != nil {
		return JWK{}, err
	}
	return k, nil
}

// ecJWK splits an uncompressed point 04||X||Y into an EC JWK.
func ecJWK(crv string, pt []byte) JWK {
	size := (len(pt) - 1) / 2
	return JWK{Kty: "EC", Crv: crv, X: b64(pt[1 : 1+size]), Y: b64(pt[1+size:])}
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// PublicKey returns the key k describes: an *ecdsa.PublicKey for "EC" (use
// its ECDH method for key agreement), an *rsa.PublicKey for "RSA", an
// *ecdh.PublicKey for "OKP" X25519. It is strict: members that do not
// belong to the key type, base64 other than unpadded base64url (or with
// non-zero trailing bits, or line breaks), coordinates not exactly the
// field size, points not on the curve, RSA moduli below 2048 or above
// 16384 bits or even, RSA integers with leading zero octets, RSA exponents
// that are even, below 3 or above 2^31-1, and low-order X25519 points are
// all rejected with an error wrapping ErrInvalid.
func (k JWK) PublicKey() (crypto.PublicKey, error) {
	switch k.Kty {
	case "EC":
		return k.ec()
	case "RSA":
		return k.rsa()
	case "OKP":
		return k.okp()
	case "":
		return nil, invalid("jwk: missing kty")
	default:
		return nil, invalid("jwk: unsupported kty %q", k.Kty)
	}
}

// only rejects members that are set but not in allowed ("kty" and "alg"
// are always allowed).
func (k JWK) only(allowed ...string) error {
	for _, f := range k.fields() {
		if f.value == "" || f.name == "kty" || f.name == "alg" {
			continue
		}
		ok := false
		for _, a := range allowed {
			ok = ok || a == f.name
		}
		if !ok {
			return invalid("jwk: member %q is not allowed for kty %q", f.name, k.Kty)
		}
	}
	return nil
}

func (k JWK) ec() (crypto.PublicKey, error) {
	if err := k.only("crv", "x", "y"); err != nil {
		return nil, err
	}
	var curve elliptic.Curve
	switch k.Crv {
	case "P-256":
		curve = elliptic.P256()
	case "P-384":
		curve = elliptic.P384()
	case "P-521":
		curve = elliptic.P521()
	case "":
		return nil, invalid("jwk: missing crv")
	default:
		return nil, invalid("jwk: unsupported crv %q for kty \"EC\"", k.Crv)
	}
	size := (curve.Params().BitSize + 7) / 8
	x, err := decodeFixed("x", k.X, size, k.Crv)
	if err != nil {
		return nil, err
	}
	y, err := decodeFixed("y", k.Y, size, k.Crv)
	if err != nil {
		return nil, err
	}
	pt := make([]byte, 0, 1+2*size)
	pt = append(append(append(pt, 4), x...), y...)
	pub, err := ecdsa.ParseUncompressedPublicKey(curve, pt)
	if err != nil {
		return nil, invalid("jwk: (x, y) is not a point on the curve %s", k.Crv)
	}
	return pub, nil
}

func (k JWK) okp() (crypto.PublicKey, error) {
	if err := k.only("crv", "x"); err != nil {
		return nil, err
	}
	switch k.Crv {
	case "X25519":
	case "":
		return nil, invalid("jwk: missing crv")
	default:
		return nil, invalid("jwk: unsupported crv %q for kty \"OKP\"", k.Crv)
	}
	x, err := decodeFixed("x", k.X, 32, k.Crv)
	if err != nil {
		return nil, err
	}
	pub, err := ecdh.X25519().NewPublicKey(x)
	if err != nil {
		return nil, invalid("jwk: invalid X25519 key: %v", err)
	}
	// A low-order point gives an all-zero shared secret with every
	// private key; crypto/ecdh reports it as an error. The probe key is a
	// fixed, public constant: only the error matters.
	if _, err := x25519Probe().ECDH(pub); err != nil {
		return nil, invalid("jwk: X25519 x is a low-order point")
	}
	return pub, nil
}

func (k JWK) rsa() (crypto.PublicKey, error) {
	if err := k.only("n", "e"); err != nil {
		return nil, err
	}
	nb, err := decodeUint("n", k.N)
	if err != nil {
		return nil, err
	}
	n := new(big.Int).SetBytes(nb)
	switch bits := n.BitLen(); {
	case bits < minRSABits:
		return nil, invalid("jwk: rsa modulus is %d bits, want at least %d", bits, minRSABits)
	case bits > maxRSABits:
		return nil, invalid("jwk: rsa modulus is %d bits, want at most %d", bits, maxRSABits)
	case n.Bit(0) == 0:
		return nil, invalid("jwk: rsa modulus is even")
	}
	eb, err := decodeUint("e", k.E)
	if err != nil {
		return nil, err
	}
	if len(eb) > 4 {
		return nil, invalid("jwk: rsa exponent is %d bytes, want at most 4", len(eb))
	}
	var e int64
	for _, c := range eb {
		e = e<<8 | int64(c)
	}
	if e < 3 || e > 1<<31-1 || e%2 == 0 {
		return nil, invalid("jwk: rsa exponent %d is not an odd number in [3, 2^31-1]", e)
	}
	return &rsa.PublicKey{N: n, E: int(e)}, nil
}

// decodeB64 decodes unpadded base64url, accepting only the canonical
// encoding (so no line breaks, padding or non-zero trailing bits).
func decodeB64(name, s string) ([]byte, error) {
	if s == "" {
		return nil, invalid("jwk: missing %s", name)
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || b64(b) != s {
		return nil, invalid("jwk: %s is not canonical unpadded base64url", name)
	}
	return b, nil
}

// decodeFixed decodes a coordinate that must be exactly size bytes.
func decodeFixed(name, s string, size int, crv string) ([]byte, error) {
	b, err := decodeB64(name, s)
	if err != nil {
		return nil, err
	}
	if len(b) != size {
		return nil, invalid("jwk: %s is %d bytes, want %d for %s", name, len(b), size, crv)
	}
	return b, nil
}

// decodeUint decodes a Base64urlUInt (RFC 7518 section 2), which has no
// leading zero octets.
func decodeUint(name, s string) ([]byte, error) {
	b, err := decodeB64(name, s)
	if err != nil {
		return nil, err
	}
	if b[0] == 0 {
		return nil, invalid("jwk: %s has a leading zero octet", name)
	}
	return b, nil
}

// x25519Probe is a fixed X25519 private key used only to detect low-order
// public keys.
var x25519Probe = sync.OnceValue(func() *ecdh.PrivateKey {
	k, err := ecdh.X25519().NewPrivateKey(bytes.Repeat([]byte{0x5a}, 32))
	if err != nil {
		panic(err) // unreachable: any 32 bytes are an X25519 private key
	}
	return k
})

func ecdsaCurveName(c elliptic.Curve) (string, bool) {
	switch c {
	case elliptic.P256():
		return "P-256", true
	case elliptic.P384():
		return "P-384", true
	case elliptic.P521():
		return "P-521", true
	}
	return "", false
}

func curveLabel(c elliptic.Curve) string {
	if c == nil || c.Params() == nil {
		return "<nil>"
	}
	return c.Params().Name
}

// Package seal encrypts a released resource to the attested TEE public key
// with HPKE (RFC 9180, Go's crypto/hpke), base mode, single shot.
//
// The suite follows from the key the guest bound into its REPORT_DATA
// (the runtime data's tee-pubkey JWK):
//
//	key                KEM                            KDF          AEAD
//	OKP X25519         DHKEM(X25519, HKDF-SHA256) 0x20 HKDF-SHA256  AES-256-GCM
//	EC P-256           DHKEM(P-256, HKDF-SHA256)  0x10 HKDF-SHA256  AES-256-GCM
//	EC P-384           DHKEM(P-384, HKDF-SHA384)  0x11 HKDF-SHA384  AES-256-GCM
//	EC P-521           DHKEM(P-521, HKDF-SHA512)  0x12 HKDF-SHA512  AES-256-GCM
//
// RSA keys are refused with ErrUnsupportedKey: RFC 9180 defines no RSA KEM.
// (Trustee wraps to RSA keys with RSA-OAEP in a JWE; a guest that wants
// resources from cvm's broker sends an EC or X25519 key.)
//
// The ciphertext is the KEM encapsulation followed by the AEAD ciphertext
// (enc || ct), as crypto/hpke.Seal returns it; there is no AEAD additional
// data. The HPKE info string binds the context: for a resource it is
// Info(name, version), "cvm-kbs-v1 resource <name> version <n>", so a
// ciphertext released for one resource or version does not open as
// another. Resource names never contain spaces (kbs/resources.ValidName),
// so the string is unambiguous.
//
// Randomness: crypto/hpke draws the ephemeral KEM key from crypto/rand
// itself and offers no way to inject a reader, so Seal takes none. Tests
// that need determinism can use testing/cryptotest.SetGlobalRandom.
package seal

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/hpke"
	"crypto/rsa"
	"errors"
	"fmt"
	"strconv"

	"github.com/greatjail/cvm/attestation/runtimedata"
)

// Sentinel errors.
var (
	// ErrUnsupportedKey: the key is of a type or curve HPKE sealing does
	// not support (RSA, or an unknown key type), or the JWK is invalid.
	ErrUnsupportedKey = errors.New("seal: unsupported key")
	// ErrSuite: the suite is not the one Seal uses for the key.
	ErrSuite = errors.New("seal: suite does not match the key")
	// ErrOpen: the ciphertext does not open: wrong key, wrong info, or
	// altered or truncated ciphertext.
	ErrOpen = errors.New("seal: ciphertext does not open")
)

// Suite identifies an HPKE ciphersuite by its RFC 9180 registry values. It
// travels with the ciphertext so the guest knows how to open it.
type Suite struct {
	KEM  uint16
	KDF  uint16
	AEAD uint16
}

// RFC 9180 registry values (section 7).
const (
	KEMP256    uint16 = 0x0010
	KEMP384    uint16 = 0x0011
	KEMP521    uint16 = 0x0012
	KEMX25519  uint16 = 0x0020
	KDFSHA256  uint16 = 0x0001
	KDFSHA384  uint16 = 0x0002
	KDFSHA512  uint16 = 0x0003
	AEADAES256 uint16 = 0x0002
)

// The suites Seal uses, one per curve.
var (
	SuiteX25519 = Suite{KEM: KEMX25519, KDF: KDFSHA256, AEAD: AEADAES256}
	SuiteP256   = Suite{KEM: KEMP256, KDF: KDFSHA256, AEAD: AEADAES256}
	SuiteP384   = Suite{KEM: KEMP384, KDF: KDFSHA384, AEAD: AEADAES256}
	SuiteP521   = Suite{KEM: KEMP521, KDF: KDFSHA512, AEAD: AEADAES256}
)

// String names the suite as RFC 9180 does.
func (s Suite) String() string {
	kem := map[uint16]string{
		KEMP256: "DHKEM(P-256, HKDF-SHA256)", KEMP384: "DHKEM(P-384, HKDF-SHA384)",
		KEMP521: "DHKEM(P-521, HKDF-SHA512)", KEMX25519: "DHKEM(X25519, HKDF-SHA256)",
	}
	kdf := map[uint16]string{KDFSHA256: "HKDF-SHA256", KDFSHA384: "HKDF-SHA384", KDFSHA512: "HKDF-SHA512"}
	aead := map[uint16]string{0x0001: "AES-128-GCM", AEADAES256: "AES-256-GCM", 0x0003: "ChaCha20Poly1305"}
	name := func(m map[uint16]string, id uint16) string {
		if n, ok := m[id]; ok {
			return n
		}
		return fmt.Sprintf("0x%04x", id)
	}
	return name(kem, s.KEM) + ", " + name(kdf, s.KDF) + ", " + name(aead, s.AEAD)
}

// suiteFor returns the suite Seal uses for curve.
func suiteFor(curve ecdh.Curve) (Suite, bool) {
	switch curve {
	case ecdh.X25519():
		return SuiteX25519, true
	case ecdh.P256():
		return SuiteP256, true
	case ecdh.P384():
		return SuiteP384, true
	case ecdh.P521():
		return SuiteP521, true
	}
	return Suite{}, false
}

// components returns crypto/hpke's KDF and AEAD for s.
func (s Suite) components() (hpke.KDF, hpke.AEAD, error) {
	kdf, err := hpke.NewKDF(s.KDF)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrSuite, err)
	}
	aead, err := hpke.NewAEAD(s.AEAD)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrSuite, err)
	}
	return kdf, aead, nil
}

// Info returns the HPKE info string for version of the resource called
// name: "cvm-kbs-v1 resource " + name + " version " + decimal version.
func Info(name string, version int) []byte {
	return []byte("cvm-kbs-v1 resource " + name + " version " + strconv.Itoa(version))
}

// SuiteFor returns the suite Seal would use for pub, or an error wrapping
// ErrUnsupportedKey.
func SuiteFor(pub runtimedata.JWK) (Suite, error) {
	k, err := ecdhPublic(pub)
	if err != nil {
		return Suite{}, err
	}
	s, _ := suiteFor(k.Curve())
	return s, nil
}

// ecdhPublic turns a tee-pubkey JWK into an ECDH public key.
func ecdhPublic(pub runtimedata.JWK) (*ecdh.PublicKey, error) {
	key, err := pub.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnsupportedKey, err)
	}
	switch k := key.(type) {
	case *ecdh.PublicKey:
		return k, nil
	case *ecdsa.PublicKey:
		e, err := k.ECDH()
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrUnsupportedKey, err)
		}
		return e, nil
	case *rsa.PublicKey:
		return nil, fmt.Errorf("%w: RSA keys cannot be sealed to (RFC 9180 HPKE has no RSA KEM); send an EC P-256, P-384 or P-521 key or an OKP X25519 key as tee-pubkey", ErrUnsupportedKey)
	default:
		return nil, fmt.Errorf("%w: %T", ErrUnsupportedKey, key)
	}
}

// Seal encrypts plaintext to pub with info as the HPKE info string and
// returns enc || ciphertext and the suite used.
func Seal(pub runtimedata.JWK, info, plaintext []byte) ([]byte, Suite, error) {
	k, err := ecdhPublic(pub)
	if err != nil {
		return nil, Suite{}, err
	}
	suite, ok := suiteFor(k.Curve())
	if !ok {
		return nil, Suite{}, fmt.Errorf("%w: curve %v", ErrUnsupportedKey, k.Curve())
	}
	hk, err := hpke.NewDHKEMPublicKey(k)
	if err != nil {
		return nil, Suite{}, fmt.Errorf("%w: %v", ErrUnsupportedKey, err)
	}
	kdf, aead, err := suite.components()
	if err != nil {
		return nil, Suite{}, err
	}
	ct, err := hpke.Seal(hk, kdf, aead, info, plaintext)
	if err != nil {
		return nil, Suite{}, fmt.Errorf("seal: %w", err)
	}
	return ct, suite, nil
}

// privateKey turns priv into an ECDH private key: priv is an
// *ecdh.PrivateKey or an *ecdsa.PrivateKey.
func privateKey(priv crypto.PrivateKey) (*ecdh.PrivateKey, error) {
	switch k := priv.(type) {
	case *ecdh.PrivateKey:
		if k == nil {
			return nil, fmt.Errorf("%w: nil key", ErrUnsupportedKey)
		}
		return k, nil
	case *ecdsa.PrivateKey:
		if k == nil {
			return nil, fmt.Errorf("%w: nil key", ErrUnsupportedKey)
		}
		e, err := k.ECDH()
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrUnsupportedKey, err)
		}
		return e, nil
	case *rsa.PrivateKey:
		return nil, fmt.Errorf("%w: RSA keys are not supported (RFC 9180 HPKE has no RSA KEM)", ErrUnsupportedKey)
	default:
		return nil, fmt.Errorf("%w: %T", ErrUnsupportedKey, priv)
	}
}

// Open decrypts a ciphertext from Seal with the private key of the TEE
// public key it was sealed to: an *ecdh.PrivateKey or *ecdsa.PrivateKey.
// suite must be the one Seal returned, which is the one Seal uses for that
// key's curve (ErrSuite otherwise), and info the same info. Any other
// failure to decrypt wraps ErrOpen.
func Open(priv crypto.PrivateKey, suite Suite, info, ciphertext []byte) ([]byte, error) {
	k, err := privateKey(priv)
	if err != nil {
		return nil, err
	}
	want, ok := suiteFor(k.Curve())
	if !ok {
		return nil, fmt.Errorf("%w: curve %v", ErrUnsupportedKey, k.Curve())
	}
	if suite != want {
		return nil, fmt.Errorf("%w: got %v, want %v for this key", ErrSuite, suite, want)
	}
	hk, err := hpke.NewDHKEMPrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnsupportedKey, err)
	}
	kdf, aead, err := suite.components()
	if err != nil {
		return nil, err
	}
	pt, err := hpke.Open(hk, kdf, aead, info, ciphertext)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrOpen, err)
	}
	return pt, nil
}

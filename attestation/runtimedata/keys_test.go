package runtimedata

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha512"
	"encoding/binary"
	"math/big"
	"sync"
	"testing"
)

// Synthetic test keys. Every key here is derived deterministically from a
// public label, so anyone can recompute it: they are not secret and must
// never protect anything.

// seed expands label to n bytes: SHA-512(label || be32(counter)) blocks.
func seed(label string, n int) []byte {
	var out []byte
	for ctr := uint32(0); len(out) < n; ctr++ {
		h := sha512.New()
		h.Write([]byte(label))
		h.Write(binary.BigEndian.AppendUint32(nil, ctr))
		out = h.Sum(out)
	}
	return out[:n]
}

// syntheticECDSA returns the P-256/P-384/P-521 key whose private scalar is
// seed(label, size), with the top bit of a P-521 scalar cleared so it is
// below the group order.
func syntheticECDSA(t testing.TB, curve elliptic.Curve, label string) *ecdsa.PrivateKey {
	t.Helper()
	size := (curve.Params().BitSize + 7) / 8
	d := seed(label, size)
	if curve == elliptic.P521() {
		d[0] &= 0x01
	}
	k, err := ecdsa.ParseRawPrivateKey(curve, d)
	if err != nil {
		t.Fatalf("synthetic %s key %q: %v", curve.Params().Name, label, err)
	}
	return k
}

// syntheticX25519 returns the X25519 key whose private scalar is
// seed(label, 32).
func syntheticX25519(t testing.TB, label string) *ecdh.PrivateKey {
	t.Helper()
	k, err := ecdh.X25519().NewPrivateKey(seed(label, 32))
	if err != nil {
		t.Fatalf("synthetic X25519 key %q: %v", label, err)
	}
	return k
}

// syntheticRSA2048 returns a 2048-bit RSA public key, e = 65537, whose
// primes are the first primes p ≥ seed(label+"/p", 128) and
// q ≥ seed(label+"/q", 128) (top two bits and low bit set, gcd(e, p-1) =
// 1). Only the public key is kept.
var syntheticRSA2048 = sync.OnceValue(func() *rsa.PublicKey {
	const label = "cvm runtimedata synthetic key rsa-2048"
	e := big.NewInt(65537)
	prime := func(label string) *big.Int {
		b := seed(label, 128)
		b[0] |= 0xc0
		b[127] |= 1
		p := new(big.Int).SetBytes(b)
		one := big.NewInt(1)
		for two := big.NewInt(2); ; p.Add(p, two) {
			pm1 := new(big.Int).Sub(p, one)
			if new(big.Int).GCD(nil, nil, e, pm1).Cmp(one) == 0 && p.ProbablyPrime(32) {
				return p
			}
		}
	}
	n := new(big.Int).Mul(prime(label+"/p"), prime(label+"/q"))
	if n.BitLen() != 2048 {
		panic("synthetic rsa modulus is not 2048 bits")
	}
	return &rsa.PublicKey{N: n, E: int(e.Int64())}
})

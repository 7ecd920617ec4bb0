package token_test

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"errors"
	"fmt"
	"log"
	"math/rand/v2"
	"time"

	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/attestation/runtimedata"
	"github.com/greatjail/cvm/kbs/token"
)

// After a successful attestation the broker signs an EAR token binding
// the verified claims to the guest's key; GetResource verifies it.
func Example() {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	// SYNTHETIC keys derived from public labels, for the example only.
	seed := sha256.Sum256([]byte("cvm token example signing key"))
	key, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), seed[:])
	if err != nil {
		log.Fatal(err)
	}
	teeSeed := sha256.Sum256([]byte("cvm token example tee key"))
	teeKey, err := ecdh.X25519().NewPrivateKey(teeSeed[:])
	if err != nil {
		log.Fatal(err)
	}
	jwk, err := runtimedata.JWKFromPublicKey(teeKey.PublicKey())
	if err != nil {
		log.Fatal(err)
	}

	signer, err := token.NewSigner(key, token.Options{Now: clock, Rand: rand.NewChaCha8([32]byte{})})
	if err != nil {
		log.Fatal(err)
	}
	tok, err := signer.Sign(token.Token{
		Status:    token.StatusAffirming,
		Claims:    &attestation.Claims{TEE: attestation.TEESim, ReportData: make([]byte, 64), VerifiedAt: now},
		TEEPubKey: jwk,
	})
	if err != nil {
		log.Fatal(err)
	}

	jwks, err := signer.JWKS()
	if err != nil {
		log.Fatal(err)
	}
	verifier, err := token.NewVerifier(jwks, clock)
	if err != nil {
		log.Fatal(err)
	}
	t, err := verifier.Verify(tok)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(t.Status, t.TEE, t.Expires, t.TEEPubKey == jwk)

	// Five minutes later the token has expired.
	now = now.Add(token.DefaultLifetime)
	_, err = verifier.Verify(tok)
	fmt.Println(errors.Is(err, token.ErrExpired))
	// Output:
	// affirming sim 2026-03-01 12:05:00 +0000 UTC true
	// true
}

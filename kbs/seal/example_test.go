package seal_test

import (
	"crypto/ecdh"
	"crypto/sha256"
	"fmt"
	"log"

	"github.com/greatjail/cvm/attestation/runtimedata"
	"github.com/greatjail/cvm/kbs/seal"
)

// The broker seals a resource to the key the guest bound into its
// REPORT_DATA; only the guest, holding the private half, opens it.
func Example() {
	// Guest: an ephemeral key (SYNTHETIC, derived from a public label,
	// for the example only; a guest generates a fresh one).
	seed := sha256.Sum256([]byte("cvm seal example key"))
	priv, err := ecdh.X25519().NewPrivateKey(seed[:])
	if err != nil {
		log.Fatal(err)
	}
	jwk, err := runtimedata.JWKFromPublicKey(priv.PublicKey())
	if err != nil {
		log.Fatal(err)
	}

	// Broker: seal version 4 of repo/disk/root to the attested key.
	info := seal.Info("repo/disk/root", 4)
	ct, suite, err := seal.Seal(jwk, info, []byte("disk passphrase"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(suite)
	fmt.Println(string(info))

	// Guest: open it.
	pt, err := seal.Open(priv, suite, info, ct)
	fmt.Printf("%s %v\n", pt, err)
	// Output:
	// DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM
	// cvm-kbs-v1 resource repo/disk/root version 4
	// disk passphrase <nil>
}

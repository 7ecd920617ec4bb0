package runtimedata_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"errors"
	"fmt"
	"log"

	"github.com/greatjail/cvm/attestation/runtimedata"
)

// The guest binds its ephemeral key to the broker's nonce; the broker
// parses the runtime data and checks it against the verified report's
// REPORT_DATA.
func Example() {
	// SYNTHETIC key derived from a public label, for the example only. A
	// real guest generates a fresh key.
	scalar := sha256.Sum256([]byte("cvm runtimedata example key"))
	priv, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), scalar[:])
	if err != nil {
		log.Fatal(err)
	}

	// Guest: build the runtime data and the REPORT_DATA for its report.
	jwk, err := runtimedata.JWKFromPublicKey(&priv.PublicKey)
	if err != nil {
		log.Fatal(err)
	}
	jwk.Alg = "ECDH-ES+A256KW"
	raw, err := runtimedata.RuntimeData{Nonce: "bm9uY2UtZnJvbS10aGUtYnJva2Vy", TEEPubKey: jwk}.Marshal()
	if err != nil {
		log.Fatal(err)
	}
	reportData, err := runtimedata.Digest(raw)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s\n%x\n", raw, reportData)

	// Broker: parse, then compare with the REPORT_DATA of the verified
	// report.
	rd, err := runtimedata.Parse(raw)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(rd.Nonce, rd.TEEPubKey.Crv)
	fmt.Println(runtimedata.Check(raw, reportData[:]))

	tampered := reportData
	tampered[0] ^= 1
	fmt.Println(errors.Is(runtimedata.Check(raw, tampered[:]), runtimedata.ErrMismatch))
	// Output:
	// {"nonce":"bm9uY2UtZnJvbS10aGUtYnJva2Vy","tee-pubkey":{"alg":"ECDH-ES+A256KW","crv":"P-256","kty":"EC","x":"l4qxIkMOBFkrtBrqVqKqCfiB3RirP-X6JnVAGkgn7oY","y":"sZnQqvS0UCBso2uqxrw31EfTo7v2xMKLT-k4T5vmRA0"}}
	// 211a660b9f24eca62cb0e45bcf5f8ba9d0c25407e8a8f89de69a286a68cb0fe3e65181397bdba0a03a0418d7d421a32500000000000000000000000000000000
	// bm9uY2UtZnJvbS10aGUtYnJva2Vy P-256
	// <nil>
	// true
}

func ExampleCanonicalize() {
	out, err := runtimedata.Canonicalize([]byte(`{"b": [1.50, 1e21, -0], "a": "\u00e9\u000f"}`))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(out))
	// Output: {"a":"é\u000f","b":[1.5,1e+21,0]}
}

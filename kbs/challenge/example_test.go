package challenge_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"math/rand/v2"
	"time"

	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/kbs/challenge"
	"github.com/greatjail/cvm/kbs/store/storetest"
)

// A broker issues a challenge, checks it when the evidence comes back and
// consumes it, so that a replay, at this or any replica sharing the store,
// is refused.
func Example() {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	// SYNTHETIC secret and seeded randomness for the example; a broker
	// reads its secret from a file and uses crypto/rand.Reader.
	iss, err := challenge.NewIssuer(bytes.Repeat([]byte{0x42}, challenge.KeySize), challenge.Options{
		Now:  func() time.Time { return now },
		Rand: rand.NewChaCha8([32]byte{}),
	})
	if err != nil {
		log.Fatal(err)
	}
	used := challenge.NewUsedNonces(storetest.NewMemory())
	ctx := context.Background()

	ch, err := iss.Issue(attestation.TEESEVSNP)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(ch.Nonce), ch.Expires)

	// Attest: check, then consume.
	expires, err := iss.Check(ch.Nonce, attestation.TEESEVSNP)
	fmt.Println(err)
	fmt.Println(used.Consume(ctx, ch.Nonce, expires))

	// The same evidence replayed.
	fmt.Println(errors.Is(used.Consume(ctx, ch.Nonce, expires), challenge.ErrReplayed))
	// The nonce presented with TDX evidence.
	_, err = iss.Check(ch.Nonce, attestation.TEETDX)
	fmt.Println(errors.Is(err, challenge.ErrWrongTEE))
	// Output:
	// 103 2026-03-01 12:05:00 +0000 UTC
	// <nil>
	// <nil>
	// true
	// true
}

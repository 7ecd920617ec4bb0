package tpmtest_test

import (
	"crypto/elliptic"
	"fmt"

	"github.com/google/go-tpm/tpm2"

	"github.com/greatjail/cvm/attestation/tpm/tpmtest"
)

// Build a synthetic quote over PCRs 0 and 7 of the SHA-256 bank.
func Example() {
	key, err := tpmtest.ECDSAKey(elliptic.P256(), "example") // SYNTHETIC key
	if err != nil {
		panic(err)
	}
	pcrs := map[int][]byte{0: make([]byte, 32), 7: make([]byte, 32)}
	ev, err := tpmtest.Quote(key, tpm2.TPMAlgSHA256, pcrs, []int{0, 7}, []byte("nonce"))
	if err != nil {
		panic(err)
	}
	a, err := tpm2.Unmarshal[tpm2.TPMSAttest](ev.Report)
	if err != nil {
		panic(err)
	}
	q, err := a.Attested.Quote()
	if err != nil {
		panic(err)
	}
	fmt.Printf("%s %q %x\n", ev.TEE, a.ExtraData.Buffer, q.PCRSelect.PCRSelections[0].PCRSelect)
	// Output: tpm "nonce" 810000
}

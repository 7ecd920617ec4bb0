package tpm_test

import (
	"context"
	"crypto"
	"crypto/elliptic"
	"fmt"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/greatjail/cvm/attestation/tpm"
	"github.com/greatjail/cvm/attestation/tpm/tpmtest"
	"github.com/greatjail/cvm/testdata"
)

// Verify a quote over PCRs 0-7 together with the firmware event log. The
// quote here is synthetic (tpmtest) over the PCR values that the recorded
// RHEL 8 event log replays to; a real one comes from TPM2_Quote.
func Example() {
	events, err := tpm.ParseEventLog(testdata.TPMEventLogRHEL8)
	if err != nil {
		panic(err)
	}
	pcrs, err := tpm.Replay(events, tpm2.TPMAlgSHA256)
	if err != nil {
		panic(err)
	}
	ak, err := tpmtest.ECDSAKey(elliptic.P256(), "example") // SYNTHETIC key
	if err != nil {
		panic(err)
	}
	ev, err := tpmtest.Quote(ak, tpm2.TPMAlgSHA256, pcrs, []int{0, 1, 2, 3, 4, 5, 6, 7}, []byte("fresh nonce"))
	if err != nil {
		panic(err)
	}
	ev.EventLog = testdata.TPMEventLogRHEL8

	// The AK public key was registered at enrollment.
	v, err := tpm.New(tpm.Options{
		Now:        func() time.Time { return time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC) },
		TrustedAKs: []crypto.PublicKey{ak.Public()},
	})
	if err != nil {
		panic(err)
	}
	claims, err := v.Verify(context.Background(), ev)
	if err != nil {
		panic(err)
	}
	fmt.Println(len(events), "events")
	fmt.Println(claims.TEE, claims.PCRs.Hash, len(claims.PCRs.Values), "PCRs")
	fmt.Printf("PCR 7 %s\n", claims.PCRs.Values[7])
	fmt.Printf("report data %q\n", []byte(claims.ReportData))
	fmt.Println("unchecked", claims.Unchecked)
	// Output:
	// 83 events
	// tpm sha256 8 PCRs
	// PCR 7 5fd54361d580eb7592adb8deb236ff35444ceeac7148f24b3de63c041f12b3da
	// report data "fresh nonce"
	// unchecked []
}

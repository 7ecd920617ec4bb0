package sim_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"log"
	"time"

	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/attestation/sim"
)

// Example plays the secure processor for one guest: create an authority
// (Save it in real use), sign a report for the guest's launch measurement
// and request data, and verify it the way the key broker does, trusting
// only this authority's root.
func Example() {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	a, err := sim.New(rand.Reader, now) // RSA-4096 key generation: about a second
	if err != nil {
		log.Fatal(err)
	}

	var req sim.Request
	copy(req.Measurement[:], "measurement of kernel+initrd+cmdline")
	copy(req.ReportData[:], "hash of {nonce, tee-pubkey}")
	report, err := a.Report(req)
	if err != nil {
		log.Fatal(err)
	}
	table, err := a.CertTable()
	if err != nil {
		log.Fatal(err)
	}

	v, err := sim.NewVerifier(a.RootPEM(), func() time.Time { return now })
	if err != nil {
		log.Fatal(err)
	}
	claims, err := v.Verify(context.Background(), &attestation.Evidence{
		TEE:       attestation.TEESim,
		Report:    report,
		CertTable: table,
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("tee:", claims.TEE)
	fmt.Println("product:", claims.Product, "signer:", claims.Signer)
	fmt.Println("debug:", claims.Debug, "smt:", claims.SMT)
	fmt.Printf("measurement: %q\n", bytes.TrimRight(claims.Measurement, "\x00"))
	fmt.Printf("report data: %q\n", bytes.TrimRight(claims.ReportData, "\x00"))
	// Output:
	// tee: sim
	// product: Milan signer: vcek
	// debug: false smt: true
	// measurement: "measurement of kernel+initrd+cmdline"
	// report data: "hash of {nonce, tee-pubkey}"
}

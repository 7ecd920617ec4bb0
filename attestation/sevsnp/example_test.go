package sevsnp_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/attestation/sevsnp"
	"github.com/greatjail/cvm/testdata"
)

// Verify a real Milan report offline against AMD's pinned roots, then a
// copy with one bit of its measurement flipped.
func Example() {
	v, err := sevsnp.New(sevsnp.Options{
		Now: func() time.Time { return time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC) },
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	ev := &attestation.Evidence{
		TEE:          attestation.TEESEVSNP,
		Report:       testdata.SNPMilanReport,
		Certificates: [][]byte{testdata.SNPMilanVCEK},
	}
	claims, err := v.Verify(context.Background(), ev)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(claims.TEE, claims.Product, claims.Signer)
	fmt.Printf("measurement %x...\n", []byte(claims.Measurement[:8]))
	fmt.Println("debug allowed:", claims.Debug, "unchecked:", claims.Unchecked)

	ev.Report = slices.Clone(testdata.SNPMilanReport)
	ev.Report[0x90] ^= 1 // first byte of MEASUREMENT
	_, err = v.Verify(context.Background(), ev)
	var ae *attestation.Error
	if errors.As(err, &ae) {
		fmt.Println(ae.Check, errors.Is(err, attestation.ErrSignature))
	}
	// Output:
	// snp Milan vcek
	// measurement b07af9620f3b839b...
	// debug allowed: true unchecked: [crl]
	// report signature true
}

package attestcmd_test

import (
	"context"
	"fmt"
	"time"

	"github.com/greatjail/cvm/attestation/attestcmd"
)

// Verify a real SEV-SNP report recorded on an AMD Milan host, offline, with
// its VCEK supplied, at a fixed time inside the VCEK's validity.
func ExampleVerify() {
	claims, err := attestcmd.Verify(context.Background(), attestcmd.VerifyOptions{
		TEE:     "snp",
		Report:  "../../testdata/snp/milan-report.bin",
		Certs:   []string{"../../testdata/snp/milan-vcek.der"},
		Offline: true,
		Now:     time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
	})
	if err != nil {
		fmt.Println("denied:", err)
		return
	}
	fmt.Println(claims.TEE, claims.Product, claims.Signer, "debug:", claims.Debug)
	fmt.Println("measurement:", claims.Measurement.String()[:16]+"...")
	// Output:
	// snp Milan vcek debug: true
	// measurement: b07af9620f3b839b...
}

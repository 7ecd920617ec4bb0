package tdx_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/attestation/tdx"
	"github.com/greatjail/cvm/testdata"
)

// Verify a recorded quote offline: signatures and the PCK chain up to the
// pinned Intel SGX Root CA are checked; the TCB status needs collateral.
func Example() {
	v, err := tdx.New(tdx.Options{
		Now: func() time.Time { return time.Date(2023, 7, 1, 1, 0, 0, 0, time.UTC) },
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	claims, err := v.Verify(context.Background(), &attestation.Evidence{TEE: attestation.TEETDX, Report: testdata.TDXQuote})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(claims.TEE, claims.Product, claims.TDX.FMSPC)
	fmt.Printf("MRTD %s...\n", claims.Measurement.String()[:16])
	fmt.Println("TCB status:", claims.TDX.TCBStatus, "unchecked:", claims.Unchecked)
	// Output:
	// tdx TDX 50806f000000
	// MRTD 6363b8043668a3ad...
	// TCB status: unknown unchecked: [tdx collateral crl]
}

// With collateral from a directory (a cache filled by SaveCollateral, or
// the repository's recorded Intel sample), the platform's TCB level is
// looked up. The sample TCB info is newer than the sample quote's platform.
func ExampleDirCollateral() {
	v, err := tdx.New(tdx.Options{
		Now:              func() time.Time { return time.Date(2023, 7, 1, 1, 0, 0, 0, time.UTC) },
		Collateral:       tdx.DirCollateral{Dir: "../../testdata/tdx"},
		CheckRevocations: true,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	_, err = v.Verify(context.Background(), &attestation.Evidence{TEE: attestation.TEETDX, Report: testdata.TDXQuote})
	var ae *attestation.Error
	if errors.As(err, &ae) {
		fmt.Println(ae.Check, errors.Is(err, attestation.ErrCollateral), errors.Is(err, tdx.ErrNoMatchingTCBLevel))
	}
	// Output:
	// tcb level true true
}

package attestation_test

import (
	"errors"
	"fmt"

	"github.com/greatjail/cvm/attestation"
)

// Callers branch on the sentinel a verification error wraps, never on its
// text; the *Error names the check for the operator.
func Example_errors() {
	var err error = attestation.Errorf(attestation.TEESEVSNP, "chip id", attestation.ErrMismatch,
		"VCEK is for chip %s, report is from chip %s", "3ac3...", "9f00...")
	var ae *attestation.Error
	if errors.Is(err, attestation.ErrMismatch) && errors.As(err, &ae) {
		fmt.Println("denied:", ae.Check)
	}
	fmt.Println(err)
	// Output:
	// denied: chip id
	// attestation snp: chip id: evidence mismatch: VCEK is for chip 3ac3..., report is from chip 9f00...
}

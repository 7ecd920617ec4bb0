package attestation

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every verification failure wraps exactly one of these,
// so callers (policy, the key broker, the CLI) branch with errors.Is and
// never on message text.
var (
	// ErrMalformed: the evidence does not parse (wrong size, bad version,
	// truncated structure, bad encoding).
	ErrMalformed = errors.New("malformed evidence")
	// ErrTooLarge: an input exceeds MaxEvidenceSize or a structure's limit.
	ErrTooLarge = errors.New("evidence too large")
	// ErrSignature: a signature over the report, quote or a structure
	// inside it does not verify.
	ErrSignature = errors.New("signature invalid")
	// ErrChain: a certificate chain does not lead to a trusted root, or a
	// certificate is not the kind the format requires.
	ErrChain = errors.New("certificate chain untrusted")
	// ErrExpired: a certificate, CRL or collateral item is outside its
	// validity period at the verification time.
	ErrExpired = errors.New("expired or not yet valid")
	// ErrRevoked: a certificate in the chain is on a CRL.
	ErrRevoked = errors.New("certificate revoked")
	// ErrMissing: material the check needs (a VCEK, a trusted root, an AK)
	// was not supplied and could not be fetched.
	ErrMissing = errors.New("required material missing")
	// ErrMismatch: two things that must agree do not (a VCEK for another
	// chip or TCB, PCR values that do not match the quote's digest, an
	// event log that does not replay to the quoted registers, a report
	// from another product line than the roots).
	ErrMismatch = errors.New("evidence mismatch")
	// ErrCollateral: TDX collateral (TCB info, QE identity) is invalid or
	// does not describe this platform, including "no matching TCB level".
	ErrCollateral = errors.New("collateral invalid")
	// ErrUnsupported: a TEE kind, report version or algorithm we do not
	// handle.
	ErrUnsupported = errors.New("unsupported")
)

// Error is a verification failure: which check failed, the sentinel it
// wraps, and detail for the operator. Detail is meant for logs and the
// verifier's operator; the key broker never returns it to a guest.
type Error struct {
	// TEE is the evidence kind being verified, if known.
	TEE TEE
	// Check names the failed check, e.g. "report signature",
	// "vcek chain", "tcb level", "pcr digest".
	Check string
	// Err is one of the sentinel errors above.
	Err error
	// Detail is a human-readable explanation.
	Detail string
	// Cause is the underlying library error, if any.
	Cause error
}

func (e *Error) Error() string {
	s := "attestation"
	if e.TEE != "" {
		s += " " + string(e.TEE)
	}
	if e.Check != "" {
		s += ": " + e.Check
	}
	s += ": " + e.Err.Error()
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	if e.Cause != nil {
		s += ": " + e.Cause.Error()
	}
	return s
}

// Unwrap lets errors.Is match both the sentinel and the underlying cause.
func (e *Error) Unwrap() []error {
	if e.Cause != nil {
		return []error{e.Err, e.Cause}
	}
	return []error{e.Err}
}

// Errorf builds an *Error for tee and check wrapping sentinel, with a
// formatted detail.
func Errorf(tee TEE, check string, sentinel error, format string, args ...any) *Error {
	return &Error{TEE: tee, Check: check, Err: sentinel, Detail: fmt.Sprintf(format, args...)}
}

// Wrap builds an *Error for tee and check wrapping sentinel with cause.
func Wrap(tee TEE, check string, sentinel error, cause error) *Error {
	return &Error{TEE: tee, Check: check, Err: sentinel, Cause: cause}
}

// CheckSize returns an ErrTooLarge error if b exceeds limit.
func CheckSize(tee TEE, what string, b []byte, limit int) error {
	if len(b) > limit {
		return Errorf(tee, what, ErrTooLarge, "%d bytes, limit %d", len(b), limit)
	}
	return nil
}

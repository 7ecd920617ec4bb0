package sevsnp

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/testdata"
)

type fetchFunc func(ctx context.Context, url string) ([]byte, error)

func (f fetchFunc) Fetch(ctx context.Context, url string) ([]byte, error) { return f(ctx, url) }

// TestOneSentinel checks the attestation contract that a failure matches
// exactly one sentinel, also when the failure comes from fetching: the
// causes of a failed VCEK lookup must not add their own sentinels.
func TestOneSentinel(t *testing.T) {
	sentinels := []error{attestation.ErrMalformed, attestation.ErrTooLarge, attestation.ErrSignature, attestation.ErrChain,
		attestation.ErrExpired, attestation.ErrRevoked, attestation.ErrMissing, attestation.ErrMismatch,
		attestation.ErrCollateral, attestation.ErrUnsupported}
	notVCEK := fetchFunc(func(context.Context, string) ([]byte, error) {
		return nil, attestation.Errorf(attestation.TEESEVSNP, "fetch", attestation.ErrTooLarge, "body too large")
	})
	v, err := New(Options{Now: func() time.Time { return time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC) }, Fetcher: notVCEK})
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(context.Background(), &attestation.Evidence{TEE: attestation.TEESEVSNP, Report: testdata.SNPMilanReport})
	var n int
	for _, s := range sentinels {
		if errors.Is(err, s) {
			n++
		}
	}
	if n != 1 || !errors.Is(err, attestation.ErrMissing) {
		t.Errorf("Verify() = %v: matches %d sentinels, want exactly ErrMissing", err, n)
	}
}

package attestcmd

import (
	"context"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/greatjail/cvm/attestation/tdx"
)

// FetchCollateralOptions are the inputs of `cvm attest collateral fetch`.
type FetchCollateralOptions struct {
	// Report is a TDX quote from the platform to fetch collateral for.
	Report string
	// Dir receives the collateral in the tdx.DirCollateral layout.
	Dir string
	// PCSURL is the Intel PCS or PCCS base URL ("" = Intel PCS).
	PCSURL     string
	HTTPClient *http.Client
	// Now is the time the quote's PCK chain is checked at.
	Now time.Time
}

// FetchCollateral fetches TDX collateral (TCB info, QE identity, CRLs) for
// the platform that produced the quote in opts.Report and stores it in
// opts.Dir, so that `cvm attest verify --collateral DIR` works offline. It
// returns the platform's FMSPC and PCK CA kind. Nothing is written unless
// the whole fetch succeeded.
func FetchCollateral(ctx context.Context, opts FetchCollateralOptions) (fmspc, ca string, err error) {
	if opts.Dir == "" {
		return "", "", fmt.Errorf("%w: --dir is required", ErrUsage)
	}
	raw, err := readFile("--report", opts.Report)
	if err != nil {
		return "", "", err
	}
	v, err := tdx.New(tdx.Options{Now: func() time.Time { return opts.Now }})
	if err != nil {
		return "", "", err
	}
	f, ca, err := v.Platform(raw)
	if err != nil {
		return "", "", fmt.Errorf("reading the platform from the quote: %w", err)
	}
	pcs := &tdx.PCSClient{BaseURL: opts.PCSURL, Client: opts.HTTPClient}
	c, err := pcs.Collateral(ctx, f, ca)
	if err != nil {
		return "", "", fmt.Errorf("fetching collateral for FMSPC %x: %w", f, err)
	}
	// CRLs are fetched best effort: when one could not be fetched now,
	// keep the copy already in the directory rather than deleting it.
	if old, err := (tdx.DirCollateral{Dir: opts.Dir}).Collateral(ctx, f, ca); err == nil {
		if c.PCKCRL == nil {
			c.PCKCRL, c.PCKCRLIssuerChain = old.PCKCRL, old.PCKCRLIssuerChain
		}
		if c.RootCRL == nil {
			c.RootCRL = old.RootCRL
		}
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return "", "", err
	}
	if err := tdx.SaveCollateral(opts.Dir, f, ca, c); err != nil {
		return "", "", fmt.Errorf("saving collateral: %w", err)
	}
	return hex.EncodeToString(f), ca, nil
}

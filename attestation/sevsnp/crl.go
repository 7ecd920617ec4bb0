package sevsnp

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/greatjail/cvm/attestation"
)

// checkRevocation checks the ARK-signed CRL of the product line when
// Options.CheckRevocations is set. The ARK's CRL can only revoke what the
// ARK issued, the ASK or ASVK (AMD supersedes VCEKs by TCB version rather
// than revoking them), so that is what is looked up.
//
// It returns the checks left undone ("crl" when no fresh CRL was checked)
// and the NextUpdate of the CRL that was.
func (v *Verifier) checkRevocation(ctx context.Context, k keyKind, ek *x509.Certificate, line string, chains []*rootChain, now time.Time) ([]string, *time.Time, error) {
	if !v.opts.CheckRevocations {
		return []string{"crl"}, nil, nil
	}
	url := crlURL(line, k)
	unavailable := func(cause error) ([]string, *time.Time, error) {
		if v.opts.RequireRevocationCheck {
			return nil, nil, &attestation.Error{TEE: v.tee, Check: "crl", Err: attestation.ErrMissing,
				Detail: "revocation check required but the CRL " + url + " is unavailable", Cause: cause}
		}
		return []string{"crl"}, nil, nil
	}
	if v.opts.Fetcher == nil {
		return unavailable(errors.New("no certificate fetcher (offline)"))
	}
	b, err := v.opts.Fetcher.Fetch(ctx, url)
	if err != nil {
		return unavailable(err)
	}
	if len(b) > attestation.MaxEvidenceSize {
		return unavailable(fmt.Errorf("CRL is %d bytes, limit %d: %w", len(b), attestation.MaxEvidenceSize, attestation.ErrTooLarge))
	}
	crl, err := x509.ParseRevocationList(b)
	if err != nil {
		return unavailable(fmt.Errorf("CRL does not parse: %w", err))
	}

	signing := issuedBy(ek, k, chains)
	if len(signing) == 0 { // unreachable: the chain verified
		return nil, nil, attestation.Errorf(v.tee, k.String()+" chain", attestation.ErrChain, "no trusted chain issued the %s", k)
	}
	// Every chain that could vouch for ek must be unrevoked under a CRL
	// from its own ARK; with AMD's roots there is exactly one.
	for _, c := range signing {
		if !bytes.Equal(crl.RawIssuer, c.ark.RawSubject) {
			return nil, nil, attestation.Errorf(v.tee, "crl", attestation.ErrSignature, "the CRL from %s is issued by %q, not by the trusted %s", url, crl.Issuer.CommonName, c.ark.Subject.CommonName)
		}
		if err := crl.CheckSignatureFrom(c.ark); err != nil {
			return nil, nil, &attestation.Error{TEE: v.tee, Check: "crl", Err: attestation.ErrSignature,
				Detail: "the CRL from " + url + " is not signed by the trusted " + c.ark.Subject.CommonName, Cause: err}
		}
		ic := c.intermediate(k)
		for _, r := range crl.RevokedCertificateEntries {
			if r.SerialNumber != nil && r.SerialNumber.Cmp(ic.SerialNumber) == 0 {
				return nil, nil, attestation.Errorf(v.tee, "crl", attestation.ErrRevoked, "%s (serial %x) was revoked at %s", ic.Subject.CommonName, ic.SerialNumber, r.RevocationTime.UTC().Format(time.RFC3339))
			}
		}
	}
	if !crl.NextUpdate.IsZero() && now.After(crl.NextUpdate) {
		if v.opts.RequireRevocationCheck {
			return nil, nil, attestation.Errorf(v.tee, "crl", attestation.ErrExpired, "the CRL from %s is stale: its next update was due %s (verification time %s)", url, crl.NextUpdate.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
		}
		return []string{"crl"}, nil, nil
	}
	next := crl.NextUpdate
	if next.IsZero() {
		return nil, nil, nil
	}
	return nil, &next, nil
}

package sevsnp

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	"github.com/google/go-sev-guest/verify"
	"github.com/google/go-sev-guest/verify/trust"
	"github.com/greatjail/cvm/attestation"
)

// verifyChainAndSignature runs go-sev-guest's verify.SnpAttestation on
// the report and endorsement key certificate, offline, trusting only
// chains, with library state built afresh for this call.
func (v *Verifier) verifyChainAndSignature(ctx context.Context, e *evidence, ek *x509.Certificate, line string, chains []*rootChain, now time.Time) error {
	att := &spb.Attestation{Report: e.report, CertificateChain: &spb.CertificateChain{}}
	if e.kind == vlekKind {
		att.CertificateChain.VlekCert = ek.Raw
	} else {
		att.CertificateChain.VcekCert = ek.Raw
	}
	// Product matters to the library only for version 2 reports, whose
	// VCEK productName must then name this line. No stepping is given:
	// it would have to come from unsigned host data.
	product, err := kds.ParseProductLine(line)
	if err != nil { // unreachable: line is one of productLines
		return attestation.Wrap(v.tee, "product", attestation.ErrUnsupported, err)
	}
	opts := &verify.Options{
		DisableCertFetching: true,
		Now:                 now,
		TrustedRoots:        map[string][]*trust.AMDRootCerts{line: amdRoots(chains)},
		Product:             product,
	}
	if err := verify.SnpAttestationContext(ctx, att, opts); err != nil {
		return v.diagnose(e, ek, chains, now, err)
	}
	return nil
}

// amdRoots returns fresh go-sev-guest root structures for chains. The
// library keeps per-root state (a CRL cache) in them, so they are never
// shared between verifications; the certificates themselves are immutable.
func amdRoots(chains []*rootChain) []*trust.AMDRootCerts {
	out := make([]*trust.AMDRootCerts, 0, len(chains))
	for _, c := range chains {
		r := trust.AMDRootCertsProduct(c.line)
		r.ProductCerts = &trust.ProductCerts{Ark: c.ark, Ask: c.ask, Asvk: c.asvk}
		out = append(out, r)
	}
	return out
}

// validAt returns an error unless now is inside c's validity period.
func validAt(c *x509.Certificate, now time.Time) error {
	switch {
	case now.Before(c.NotBefore):
		return fmt.Errorf("%s is not valid before %s (verification time %s)", c.Subject.CommonName, c.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	case now.After(c.NotAfter):
		return fmt.Errorf("%s expired at %s (verification time %s)", c.Subject.CommonName, c.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	return nil
}

// issuedBy returns the chains whose intermediate for kind k issued and
// signed ek.
func issuedBy(ek *x509.Certificate, k keyKind, chains []*rootChain) []*rootChain {
	var out []*rootChain
	for _, c := range chains {
		ic := c.intermediate(k)
		if bytes.Equal(ek.RawIssuer, ic.RawSubject) && ek.CheckSignatureFrom(ic) == nil {
			out = append(out, c)
		}
	}
	return out
}

// diagnose turns a go-sev-guest verification failure into our error by
// re-running the checks it is made of, in order, rather than by reading
// its message: the endorsement key must be signed by a trusted
// intermediate, that chain must be valid at now, and the report signature
// must verify. If all of those pass, what failed is the library's check
// of the certificate profile AMD's KDS specifies (versions, algorithms,
// names, extensions). The endorsement key's own validity and its binding
// to the report were checked before the library was called.
func (v *Verifier) diagnose(e *evidence, ek *x509.Certificate, chains []*rootChain, now time.Time, libErr error) error {
	chainCheck := e.kind.String() + " chain"
	signing := issuedBy(ek, e.kind, chains)
	if len(signing) == 0 {
		return &attestation.Error{TEE: v.tee, Check: chainCheck, Err: attestation.ErrChain,
			Detail: fmt.Sprintf("the %s (issuer %q) is not signed by any trusted %s key: it chains to a self-made or foreign root", e.kind, ek.Issuer.CommonName, chains[0].line),
			Cause:  libErr}
	}
	var expired *attestation.Error
	for _, c := range signing {
		ic := c.intermediate(e.kind)
		icCheck := "ask validity"
		if e.kind == vlekKind {
			icCheck = "asvk validity"
		}
		switch {
		case validAt(ic, now) != nil:
			expired = attestation.Wrap(v.tee, icCheck, attestation.ErrExpired, validAt(ic, now))
		case validAt(c.ark, now) != nil:
			expired = attestation.Wrap(v.tee, "ark validity", attestation.ErrExpired, validAt(c.ark, now))
		default:
			expired = nil
		}
		if expired == nil {
			break
		}
	}
	if expired != nil {
		return expired
	}
	if err := verify.SnpReportSignature(e.raw, ek); err != nil {
		return &attestation.Error{TEE: v.tee, Check: "report signature", Err: attestation.ErrSignature,
			Detail: fmt.Sprintf("the report is not signed by the %s's key", e.kind), Cause: err}
	}
	return &attestation.Error{TEE: v.tee, Check: chainCheck, Err: attestation.ErrChain,
		Detail: fmt.Sprintf("the %s does not have the certificate profile AMD's KDS specifies", e.kind), Cause: libErr}
}

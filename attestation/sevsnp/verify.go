// Package sevsnp verifies AMD SEV-SNP attestation reports and turns them
// into attestation.Claims.
//
// Verification is built on github.com/google/go-sev-guest v0.15.0
// (verify.SnpAttestation: certificate profile, chain and report
// signature), with trust anchored only in the Roots the Verifier is given
// (AMD's pinned ARK/ASK/ASVK by default; never the ARK or ASK that come
// with the evidence) and with the checks the library leaves out done here:
// the VCEK's HWID and TCB extensions must match the report's CHIP_ID and
// REPORTED_TCB, validity periods are checked at an injected clock, the
// product line is never guessed, and the ARK-signed CRL is checked on
// request. Every failure is an *attestation.Error naming the check.
//
// A Verifier never reads the clock, the network or the filesystem itself:
// Options inject the clock and a Fetcher for AMD's Key Distribution
// Service (KDS). HTTPFetcher talks to KDS; Cache keeps its answers on disk
// so verification works offline, and SeedCache fills it by hand.
//
// The simulated TEE (package attestation/sim) signs reports with a chain
// whose certificates carry SimulatedMarker. Such a chain is refused unless
// the Verifier is built with Options.Simulated and the sim roots, and then
// the claims say tee "sim".
package sevsnp

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/go-sev-guest/kds"
	"github.com/greatjail/cvm/attestation"
)

// Fetcher fetches AMD KDS resources by URL: VCEK certificates, cert_chain
// bundles and CRLs. Implementations must be safe for concurrent use.
type Fetcher interface {
	Fetch(ctx context.Context, url string) ([]byte, error)
}

// Options configure a Verifier.
type Options struct {
	// Now returns the verification time. Required.
	Now func() time.Time
	// Roots are the trusted AMD roots; nil means PinnedRoots().
	Roots *Roots
	// Fetcher fetches a missing VCEK and the CRL from AMD's KDS (usually
	// a Cache over an HTTPFetcher). Nil means never fetch: certificates
	// must come with the evidence.
	Fetcher Fetcher
	// CheckRevocations fetches the ARK-signed CRL through Fetcher and
	// fails if it revokes the ASK or ASVK. If there is no Fetcher or the
	// CRL is unavailable or stale, "crl" is listed in Claims.Unchecked,
	// unless RequireRevocationCheck is set. When false, "crl" is always
	// listed in Claims.Unchecked.
	CheckRevocations bool
	// RequireRevocationCheck implies CheckRevocations and turns an
	// unavailable CRL into an ErrMissing failure (check "crl") and a stale
	// one into ErrExpired.
	RequireRevocationCheck bool
	// Simulated makes the Verifier accept only simulated-TEE chains:
	// Roots must be given, and every root and every VCEK/VLEK must carry
	// SimulatedMarker. Evidence labelled "sim" or "snp" is accepted (a
	// guest cannot tell a simulated secure processor from a real one) and
	// the claims always say tee "sim". When false, any certificate
	// carrying the marker is refused and "sim" evidence is unsupported.
	Simulated bool
}

// Verifier checks SEV-SNP evidence. It is safe for concurrent use: all
// go-sev-guest state is built afresh for every verification.
type Verifier struct {
	opts  Options
	roots *Roots
	tee   attestation.TEE // TEESEVSNP, or TEESim when simulated
}

var _ attestation.Verifier = (*Verifier)(nil)

// New returns a Verifier for opts.
func New(opts Options) (*Verifier, error) {
	if opts.Now == nil {
		return nil, errors.New("sevsnp: Options.Now is required")
	}
	if opts.RequireRevocationCheck {
		opts.CheckRevocations = true
	}
	v := &Verifier{opts: opts, roots: opts.Roots, tee: attestation.TEESEVSNP}
	if opts.Simulated {
		v.tee = attestation.TEESim
		if v.roots == nil {
			return nil, attestation.Errorf(v.tee, "simulated root", attestation.ErrMissing, "a simulated verifier needs the sim roots in Options.Roots; AMD's roots are never simulated")
		}
		for _, c := range v.roots.certificates() {
			if !simulated(c) {
				return nil, attestation.Errorf(v.tee, "simulated root", attestation.ErrChain, "root %q lacks the simulated-TEE marker %q: a simulated verifier trusts only simulated roots", c.Subject.CommonName, SimulatedMarker)
			}
		}
	} else {
		if v.roots == nil {
			v.roots = PinnedRoots()
		}
		for _, c := range v.roots.certificates() {
			if simulated(c) {
				return nil, attestation.Errorf(v.tee, "simulated root", attestation.ErrChain, "root %q carries the simulated-TEE marker %q: a simulated-TEE chain is never accepted as SEV-SNP (set Options.Simulated to verify sim reports)", c.Subject.CommonName, SimulatedMarker)
			}
		}
	}
	if len(v.roots.Products()) == 0 {
		return nil, attestation.Errorf(v.tee, "roots", attestation.ErrMissing, "no trusted roots")
	}
	return v, nil
}

// Verify checks SEV-SNP evidence and returns its claims. ev.Report is the
// 0x4A0-byte report, optionally followed by the extended report's GUID
// certificate table; ev.CertTable may carry that table instead, and
// ev.Certificates any of the VCEK/VLEK/ASK/ASVK/ARK in DER, in any order.
// Other Evidence fields are not used. The ARK, ASK and ASVK in the evidence
// are never trusted; the chain must lead to the Verifier's Roots.
func (v *Verifier) Verify(ctx context.Context, ev *attestation.Evidence) (*attestation.Claims, error) {
	if ev == nil {
		return nil, attestation.Errorf(v.tee, "evidence", attestation.ErrMalformed, "no evidence")
	}
	if err := v.checkTEE(ev.TEE); err != nil {
		return nil, err
	}
	e, err := parseEvidence(v.tee, ev)
	if err != nil {
		return nil, err
	}
	if err := v.screen(e.all()); err != nil {
		return nil, err
	}
	now := v.opts.Now()

	// Product line: from the report if it says, never guessed.
	line, source, err := productFromReport(e)
	if err != nil {
		return nil, attestation.Wrap(v.tee, "product", attestation.ErrUnsupported, err)
	}
	if line != "" {
		if err := v.trusts(line, source); err != nil {
			return nil, err
		}
	}
	// The endorsement key certificate: supplied, or fetched by chip/TCB.
	ek := e.endorsement()
	if ek == nil {
		if ek, err = v.fetchVCEK(ctx, e, line); err != nil {
			return nil, err
		}
		if err := v.screen([]*x509.Certificate{ek}); err != nil {
			return nil, err
		}
	}
	if line, err = v.productLine(e, ek, line); err != nil {
		return nil, err
	}
	if v.opts.Simulated && !simulated(ek) {
		return nil, attestation.Errorf(v.tee, "simulated root", attestation.ErrChain, "the %s certificate lacks the simulated-TEE marker %q: a simulated verifier accepts only simulated chains", e.kind, SimulatedMarker)
	}
	chains, err := v.chainsFor(line, e.kind)
	if err != nil {
		return nil, err
	}
	// Checks go-sev-guest leaves out, done first for clear reasons.
	if err := v.bind(e, ek, line); err != nil {
		return nil, err
	}
	if err := validAt(ek, now); err != nil {
		return nil, attestation.Wrap(v.tee, e.kind.String()+" validity", attestation.ErrExpired, err)
	}

	// Certificate profile, chain to our roots, report signature.
	if err := v.verifyChainAndSignature(ctx, e, ek, line, chains, now); err != nil {
		return nil, err
	}

	unchecked, crlExpiry, err := v.checkRevocation(ctx, e.kind, ek, line, chains, now)
	if err != nil {
		return nil, err
	}
	return claims(v.tee, line, e.kind, e.report, now, unchecked, crlExpiry), nil
}

func (v *Verifier) checkTEE(t attestation.TEE) error {
	switch {
	case t == attestation.TEESEVSNP:
		return nil
	case t == attestation.TEESim && v.opts.Simulated:
		return nil
	case t == attestation.TEESim:
		return attestation.Errorf(v.tee, "tee", attestation.ErrUnsupported, "sim evidence needs a verifier built with Options.Simulated and the sim roots")
	}
	return attestation.Errorf(v.tee, "tee", attestation.ErrUnsupported, "evidence is for TEE %q, this verifier checks %q", t, attestation.TEESEVSNP)
}

// screen refuses certificates carrying SimulatedMarker unless v is
// simulated.
func (v *Verifier) screen(certs []*x509.Certificate) error {
	if v.opts.Simulated {
		return nil
	}
	for _, c := range certs {
		if simulated(c) {
			return attestation.Errorf(v.tee, "simulated root", attestation.ErrChain, "certificate %q carries the simulated-TEE marker %q: a simulated-TEE chain is never accepted as SEV-SNP", c.Subject.CommonName, SimulatedMarker)
		}
	}
	return nil
}

// trusts fails unless v has roots for product line.
func (v *Verifier) trusts(line, source string) error {
	if len(v.roots.chains[line]) > 0 {
		return nil
	}
	return attestation.Errorf(v.tee, "product", attestation.ErrMismatch, "the report is from a %s chip (per %s) but no %s roots are trusted (trusted: %v)", line, source, line, v.roots.Products())
}

// productLine settles the product line once the endorsement key
// certificate is known: the line the report named, which the certificate's
// issuer must agree with, or else the line the issuer names. It never
// guesses.
func (v *Verifier) productLine(e *evidence, ek *x509.Certificate, fromReport string) (string, error) {
	fromIssuer := productFromIssuer(ek, e.kind)
	switch {
	case fromReport != "" && fromIssuer != fromReport:
		return "", attestation.Errorf(v.tee, "product", attestation.ErrMismatch, "the report is from a %s chip but the %s is issued by %q", fromReport, e.kind, ek.Issuer.CommonName)
	case fromReport != "":
		return fromReport, nil
	case fromIssuer == "":
		return "", attestation.Errorf(v.tee, "product", attestation.ErrMissing, "cannot tell the product line: the version %d report has no CPUID fields, there is no platform info, and the %s issuer %q names no product line", e.report.GetVersion(), e.kind, ek.Issuer.CommonName)
	}
	return fromIssuer, v.trusts(fromIssuer, "the "+e.kind.String()+"'s issuer")
}

// chainsFor returns the trusted chains of line that can certify keys of
// kind k.
func (v *Verifier) chainsFor(line string, k keyKind) ([]*rootChain, error) {
	var out []*rootChain
	for _, c := range v.roots.chains[line] {
		if c.intermediate(k) != nil {
			out = append(out, c)
		}
	}
	if len(out) > 0 {
		return out, nil
	}
	if k == vlekKind {
		return nil, attestation.Errorf(v.tee, "asvk", attestation.ErrMissing, "the report is signed by a VLEK but no %s ASVK (SEV-VLEK-%s) is trusted; add AMD's VLEK cert_chain for %s to the roots", line, line, line)
	}
	return nil, attestation.Errorf(v.tee, "ask", attestation.ErrMissing, "the report is signed by a VCEK but no %s ASK (SEV-%s) is trusted", line, line)
}

// fetchVCEK fetches the VCEK the report names, when it did not come with
// the evidence.
func (v *Verifier) fetchVCEK(ctx context.Context, e *evidence, line string) (*x509.Certificate, error) {
	if e.kind == vlekKind {
		return nil, attestation.Errorf(v.tee, "vlek", attestation.ErrMissing, "the report is signed by a VLEK but no VLEK certificate was supplied; VLEKs cannot be fetched from AMD's KDS, the host must supply them (extended report certificate table, or --certs)")
	}
	if line == "" {
		// A version 2 report does not name its product line. Look the VCEK
		// up under each trusted line in turn: a wrong line simply has no
		// such certificate, and whatever is found must still chain to that
		// line's roots and match CHIP_ID and the TCB.
		if v.opts.Fetcher == nil {
			return nil, attestation.Errorf(v.tee, "vcek", attestation.ErrMissing, "no VCEK certificate was supplied and there is no certificate fetcher (offline); this version %d report does not name its product line: pass the VCEK with --certs, or seed the certificate cache ('cvm attest cache seed')", e.report.GetVersion())
		}
		var errs []error
		for _, l := range v.roots.Products() {
			if l == "Turin" {
				continue // Turin firmware produces version 3+ reports only
			}
			c, err := v.fetchVCEK(ctx, e, l)
			if err == nil {
				return c, nil
			}
			errs = append(errs, err)
		}
		return nil, &attestation.Error{TEE: v.tee, Check: "vcek", Err: attestation.ErrMissing,
			Detail: fmt.Sprintf("no VCEK certificate was supplied, and this version %d report does not name its product line; no trusted product line (%s) had its VCEK: pass the VCEK with --certs or seed the certificate cache", e.report.GetVersion(), strings.Join(v.roots.Products(), ", ")),
			Cause:  errors.Join(errs...)}
	}
	chip := e.report.GetChipId()
	if allZero(chip) {
		return nil, attestation.Errorf(v.tee, "vcek", attestation.ErrMissing, "no VCEK certificate was supplied and CHIP_ID is masked, so it cannot be looked up; pass the VCEK with --certs")
	}
	url := vcekURL(line, chip, e.report.GetReportedTcb())
	if v.opts.Fetcher == nil {
		return nil, attestation.Errorf(v.tee, "vcek", attestation.ErrMissing, "no VCEK certificate in the evidence and no certificate fetcher (offline): pass the VCEK with --certs, or seed the certificate cache ('cvm attest cache seed') with the VCEK from %s", url)
	}
	b, err := v.opts.Fetcher.Fetch(ctx, url)
	if err != nil {
		return nil, &attestation.Error{TEE: v.tee, Check: "vcek", Err: attestation.ErrMissing, Detail: "no VCEK certificate in the evidence, and fetching " + url + " failed (pass the VCEK with --certs or seed the certificate cache)", Cause: flatten(err)}
	}
	c, err := x509.ParseCertificate(b)
	if err != nil {
		return nil, &attestation.Error{TEE: v.tee, Check: "vcek", Err: attestation.ErrMalformed, Detail: "the VCEK fetched from " + url + " does not parse", Cause: err}
	}
	if c.Subject.CommonName != "SEV-VCEK" {
		return nil, attestation.Errorf(v.tee, "vcek", attestation.ErrMalformed, "the certificate fetched from %s is %q, not a VCEK", url, c.Subject.CommonName)
	}
	return c, nil
}

// bind checks that the endorsement key certificate is the one for this
// chip and TCB: its HWID extension equals CHIP_ID (unless masked, VCEK
// only) and its TCB extensions equal REPORTED_TCB.
func (v *Verifier) bind(e *evidence, ek *x509.Certificate, line string) error {
	exts, err := kds.CertificateExtensions(ek, e.kind.signer())
	if err != nil {
		detail := fmt.Sprintf("the %s's AMD extensions do not parse", e.kind)
		if line == "Turin" {
			detail += " (go-sev-guest v0.15.0 does not parse Turin VCEK extensions)"
		}
		return &attestation.Error{TEE: v.tee, Check: e.kind.String(), Err: attestation.ErrMalformed, Detail: detail, Cause: err}
	}
	chip := e.report.GetChipId()
	if e.kind == vcekKind && !allZero(chip) && !bytes.Equal(exts.HWID, chip) {
		return attestation.Errorf(v.tee, "chip id", attestation.ErrMismatch, "the VCEK is for chip %x (first 8 bytes), the report is from chip %x", exts.HWID[:8], chip[:8])
	}
	if got, want := uint64(exts.TCBVersion), e.report.GetReportedTcb(); got != want {
		return attestation.Errorf(v.tee, "tcb", attestation.ErrMismatch, "the %s is for TCB %s, the report's REPORTED_TCB is %s", e.kind, tcbString(line, got), tcbString(line, want))
	}
	return nil
}

func tcbString(line string, tcb uint64) string {
	p := splitTCB(line, tcb)
	s := fmt.Sprintf("0x%016x (bl %d, tee %d, snp %d, ucode %d", tcb, p.bootloader, p.tee, p.snp, p.microcode)
	if line == "Turin" {
		s += fmt.Sprintf(", fmc %d", p.fmc)
	}
	return s + ")"
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// flatten keeps the text of an underlying error but none of the sentinels
// it may wrap, so that the *attestation.Error around it matches exactly one
// sentinel, as the attestation contract promises.
func flatten(err error) error {
	if err == nil {
		return nil
	}
	return errors.New(err.Error())
}

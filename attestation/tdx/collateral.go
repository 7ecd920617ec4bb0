package tdx

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"time"

	"github.com/greatjail/cvm/attestation"
)

// Collateral is Intel's verification collateral for one platform (FMSPC)
// and PCK CA, in the form Intel PCS v4 and a PCCS serve it.
type Collateral struct {
	// TCBInfo is the PCS TDX TCB info body,
	// {"tcbInfo":{...},"signature":"<hex r||s>"}; TCBInfoIssuerChain is the
	// PEM issuer chain from the TCB-Info-Issuer-Chain response header
	// ("Intel SGX TCB Signing" then the root).
	TCBInfo            []byte
	TCBInfoIssuerChain []byte
	// QEIdentity is the PCS TD QE identity body,
	// {"enclaveIdentity":{...},"signature":"<hex r||s>"}, and
	// QEIdentityIssuerChain the PEM chain from the
	// SGX-Enclave-Identity-Issuer-Chain header.
	QEIdentity            []byte
	QEIdentityIssuerChain []byte
	// PCKCRL is the DER CRL of the PCK CA that issued the platform's PCK
	// certificate, and PCKCRLIssuerChain the PEM chain from the
	// SGX-PCK-CRL-Issuer-Chain header. Either may be nil. The verifier
	// checks the CRL against the PCK CA certificate of the quote's own
	// verified chain, so it does not need PCKCRLIssuerChain; it is kept so
	// that a cache holds the complete PCS response.
	PCKCRL            []byte
	PCKCRLIssuerChain []byte
	// RootCRL is the DER CRL of the Intel SGX Root CA. May be nil.
	RootCRL []byte
}

// CollateralSource supplies collateral. Implementations must be safe for
// concurrent use.
type CollateralSource interface {
	// Collateral returns collateral for the platform with this FMSPC whose
	// PCK cert was issued by ca ("platform" or "processor").
	Collateral(ctx context.Context, fmspc []byte, ca string) (*Collateral, error)
}

// maxCollateralSize bounds every collateral item (TCB info, QE identity,
// issuer chains, CRLs). Real TCB info is tens of KiB; the processor PCK CRL
// is the largest item.
const maxCollateralSize = 4 << 20

// Names Intel uses in the collateral.
const (
	tcbSigningCN      = "Intel SGX TCB Signing"
	tcbInfoID         = "TDX"
	tcbInfoVersion    = 3
	qeIdentityID      = "TD_QE"
	qeIdentityVersion = 2
)

// tcbStatuses are the statuses a TCB info level may carry; moduleStatuses
// those of TDX module identity and QE identity levels (Intel QVL
// TcbStatus.h, VALID_TCB_INFO_STATUSES and VALID_MODULE_TCB_STATUSES).
var (
	tcbStatuses = []string{
		attestation.TCBStatusUpToDate,
		attestation.TCBStatusSWHardeningNeeded,
		attestation.TCBStatusConfigurationNeeded,
		attestation.TCBStatusConfigurationAndSWHardeningNeeded,
		attestation.TCBStatusOutOfDate,
		attestation.TCBStatusOutOfDateConfigurationNeeded,
		attestation.TCBStatusRevoked,
	}
	moduleStatuses = []string{
		attestation.TCBStatusUpToDate,
		attestation.TCBStatusOutOfDate,
		attestation.TCBStatusRevoked,
	}
)

// evaluateCollateral fetches and checks the collateral for the platform the
// verified quote came from, and fills the TCB fields of claims.
func (v *Verifier) evaluateCollateral(ctx context.Context, q *quote, pck *pckInfo, now time.Time, claims *attestation.Claims) error {
	c, err := v.collateral.Collateral(ctx, pck.fmspc, pck.ca)
	if err != nil {
		return &attestation.Error{TEE: attestation.TEETDX, Check: "tdx collateral", Err: attestation.ErrMissing,
			Detail: fmt.Sprintf("collateral for FMSPC %x (%s CA)", pck.fmspc, pck.ca), Cause: err}
	}
	if c == nil {
		return attestation.Errorf(attestation.TEETDX, "tdx collateral", attestation.ErrMissing,
			"collateral source returned nothing for FMSPC %x (%s CA)", pck.fmspc, pck.ca)
	}

	raw, tcbSigner, err := v.verifySigned("tcb info", "tcbInfo", c.TCBInfo, c.TCBInfoIssuerChain, now)
	if err != nil {
		return err
	}
	ti, err := parseTCBInfo(raw)
	if err != nil {
		return attestation.Wrap(attestation.TEETDX, "tcb info body", attestation.ErrCollateral, err)
	}
	if err := checkValidity("tcb info", ti.issueDate, ti.nextUpdate, now); err != nil {
		return err
	}
	raw, qeSigner, err := v.verifySigned("qe identity", "enclaveIdentity", c.QEIdentity, c.QEIdentityIssuerChain, now)
	if err != nil {
		return err
	}
	qi, err := parseQEIdentity(raw)
	if err != nil {
		return attestation.Wrap(attestation.TEETDX, "qe identity body", attestation.ErrCollateral, err)
	}
	if err := checkValidity("qe identity", qi.issueDate, qi.nextUpdate, now); err != nil {
		return err
	}
	expiry := earliest(ti.nextUpdate, qi.nextUpdate)

	if v.checkRevocations {
		next, complete, err := checkCRLs(c, pck, now, tcbSigner, qeSigner)
		if err != nil {
			return err
		}
		if !complete {
			claims.Unchecked = append(claims.Unchecked, "crl")
		}
		if !next.IsZero() {
			expiry = earliest(expiry, next)
		}
	} else {
		claims.Unchecked = append(claims.Unchecked, "crl")
	}

	body := q.proto.GetTdQuoteBody()
	if !bytes.Equal(ti.fmspc, pck.fmspc) || !bytes.Equal(ti.pceID, pck.pceID) {
		return attestation.Errorf(attestation.TEETDX, "tcb info platform", attestation.ErrCollateral,
			"TCB info is for FMSPC %x PCEID %x, the PCK certificate for FMSPC %x PCEID %x", ti.fmspc, ti.pceID, pck.fmspc, pck.pceID)
	}
	module, err := checkTDXModule(ti, body.GetTeeTcbSvn(), body.GetMrSignerSeam(), body.GetSeamAttributes())
	if err != nil {
		return err
	}
	level, err := matchTCBLevel(ti.levels, pck.cpuSVN, pck.pceSVN, body.GetTeeTcbSvn())
	if err != nil {
		return err
	}
	qeLevel, err := checkQEIdentity(qi, q.qeReport)
	if err != nil {
		return err
	}

	t := claims.TDX
	t.TCBStatus = level.status
	t.AdvisoryIDs = appendUnique(t.AdvisoryIDs, level.advisoryIDs...)
	date := level.date
	if module != nil {
		t.TCBStatus = convergeModuleStatus(level.status, module.status)
		t.AdvisoryIDs = appendUnique(t.AdvisoryIDs, module.advisoryIDs...)
		date = earliest(date, module.date)
	}
	t.TCBDate = &date
	t.QETCBStatus = qeLevel.status
	t.AdvisoryIDs = appendUnique(t.AdvisoryIDs, qeLevel.advisoryIDs...)
	claims.CollateralExpiry = &expiry
	return nil
}

// verifySigned checks one signed PCS body: the issuer chain's first
// certificate must be an "Intel SGX TCB Signing" certificate issued directly
// by a trusted root and valid at now, and its key must have signed the exact
// bytes of the body's field value. It returns those bytes and the signer.
func (v *Verifier) verifySigned(what, field string, body, chainPEM []byte, now time.Time) (json.RawMessage, *x509.Certificate, error) {
	if len(body) == 0 {
		return nil, nil, attestation.Errorf(attestation.TEETDX, what+" body", attestation.ErrMissing, "collateral has no %s", what)
	}
	if err := attestation.CheckSize(attestation.TEETDX, what+" body", body, maxCollateralSize); err != nil {
		return nil, nil, err
	}
	if err := attestation.CheckSize(attestation.TEETDX, what+" chain", chainPEM, maxCollateralSize); err != nil {
		return nil, nil, err
	}
	// Exact keys (a map, not a struct, so no case-insensitive matching);
	// json.RawMessage keeps the value's bytes exactly as they were signed.
	var outer map[string]json.RawMessage
	if err := json.Unmarshal(body, &outer); err != nil {
		return nil, nil, attestation.Wrap(attestation.TEETDX, what+" body", attestation.ErrCollateral, err)
	}
	raw, sigJSON := outer[field], outer["signature"]
	var sigHex string
	if len(raw) == 0 || json.Unmarshal(sigJSON, &sigHex) != nil {
		return nil, nil, attestation.Errorf(attestation.TEETDX, what+" body", attestation.ErrCollateral,
			"want an object with %q and a string \"signature\"", field)
	}
	sig, err := hex.DecodeString(sigHex)
	if err != nil || len(sig) != 64 {
		return nil, nil, attestation.Errorf(attestation.TEETDX, what+" body", attestation.ErrCollateral,
			"signature is not 64 hex-encoded bytes (r||s)")
	}

	signer, err := v.verifySigningChain(what+" chain", chainPEM, now)
	if err != nil {
		return nil, nil, err
	}
	if !verifyP256(signer.PublicKey.(*ecdsa.PublicKey), raw, sig) {
		return nil, nil, attestation.Errorf(attestation.TEETDX, what+" signature", attestation.ErrSignature,
			"%s is not signed by %q (serial %x)", what, signer.Subject.CommonName, signer.SerialNumber)
	}
	return raw, signer, nil
}

// verifySigningChain returns the TCB signing certificate at the head of a
// PEM issuer chain after checking that a trusted root issued it directly.
func (v *Verifier) verifySigningChain(check string, chainPEM []byte, now time.Time) (*x509.Certificate, error) {
	certs, err := parsePEMCerts(chainPEM)
	if err != nil {
		return nil, attestation.Wrap(attestation.TEETDX, check, attestation.ErrCollateral, err)
	}
	if len(certs) == 0 {
		return nil, attestation.Errorf(attestation.TEETDX, check, attestation.ErrMissing, "issuer chain has no certificate")
	}
	signer := certs[0]
	if cn := signer.Subject.CommonName; cn != tcbSigningCN {
		return nil, attestation.Errorf(attestation.TEETDX, check, attestation.ErrChain, "signer is %q, want %q", cn, tcbSigningCN)
	}
	if !isP256(signer) {
		return nil, attestation.Errorf(attestation.TEETDX, check, attestation.ErrChain, "signer does not have an ECDSA P-256 key")
	}
	if now.Before(signer.NotBefore) || now.After(signer.NotAfter) {
		return nil, attestation.Errorf(attestation.TEETDX, check, attestation.ErrExpired,
			"%q (serial %x) is valid from %s to %s, not at %s", signer.Subject.CommonName, signer.SerialNumber,
			signer.NotBefore.UTC().Format(time.RFC3339), signer.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	// No intermediates: the signing certificate must be issued by a root.
	_, err = signer.Verify(x509.VerifyOptions{
		Roots:         v.roots,
		Intermediates: x509.NewCertPool(),
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return nil, &attestation.Error{TEE: attestation.TEETDX, Check: check, Err: attestation.ErrChain,
			Detail: fmt.Sprintf("%q (serial %x) is not issued by a trusted root", signer.Subject.CommonName, signer.SerialNumber), Cause: err}
	}
	return signer, nil
}

// parsePEMCerts parses PEM CERTIFICATE blocks, allowing only whitespace
// around them.
func parsePEMCerts(b []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := bytes.TrimSpace(b)
	for len(rest) > 0 {
		block, r := pem.Decode(rest)
		if block == nil || !bytes.HasPrefix(rest, []byte("-----BEGIN ")) {
			return nil, fmt.Errorf("bytes after certificate %d are not PEM", len(certs))
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %d is %q, want CERTIFICATE", len(certs), block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs), err)
		}
		certs = append(certs, cert)
		rest = bytes.TrimSpace(r)
	}
	return certs, nil
}

// checkValidity checks an issueDate/nextUpdate window.
func checkValidity(what string, issued, next, now time.Time) error {
	if now.Before(issued) || now.After(next) {
		return attestation.Errorf(attestation.TEETDX, what+" validity", attestation.ErrExpired,
			"%s is valid from %s to %s, not at %s", what,
			issued.UTC().Format(time.RFC3339), next.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	return nil
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// checkCRLs checks the PCK CRL against the PCK CA of the quote's verified
// chain and the root CRL against the chain's trusted root, then looks up
// the PCK leaf, the PCK CA and the collateral signers. It returns the
// earliest nextUpdate of the CRLs it checked and whether both were present.
func checkCRLs(c *Collateral, pck *pckInfo, now time.Time, signers ...*x509.Certificate) (time.Time, bool, error) {
	var next time.Time
	complete := len(c.PCKCRL) > 0 && len(c.RootCRL) > 0
	if len(c.PCKCRL) > 0 {
		crl, err := checkCRL("pck crl", c.PCKCRL, pck.intermediate, now)
		if err != nil {
			return time.Time{}, false, err
		}
		next = crl.NextUpdate
		if err := notRevoked(crl, pck.leaf); err != nil {
			return time.Time{}, false, err
		}
	}
	if len(c.RootCRL) > 0 {
		crl, err := checkCRL("root crl", c.RootCRL, pck.root, now)
		if err != nil {
			return time.Time{}, false, err
		}
		if next.IsZero() {
			next = crl.NextUpdate
		}
		next = earliest(next, crl.NextUpdate)
		if err := notRevoked(crl, pck.intermediate); err != nil {
			return time.Time{}, false, err
		}
		for _, s := range signers {
			if bytes.Equal(s.RawIssuer, crl.RawIssuer) {
				if err := notRevoked(crl, s); err != nil {
					return time.Time{}, false, err
				}
			}
		}
	}
	return next, complete, nil
}

// checkCRL parses a DER CRL and checks that issuer signed it and that it is
// current at now.
func checkCRL(check string, der []byte, issuer *x509.Certificate, now time.Time) (*x509.RevocationList, error) {
	if err := attestation.CheckSize(attestation.TEETDX, check, der, maxCollateralSize); err != nil {
		return nil, err
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, attestation.Wrap(attestation.TEETDX, check, attestation.ErrCollateral, err)
	}
	if !bytes.Equal(crl.RawIssuer, issuer.RawSubject) {
		return nil, attestation.Errorf(attestation.TEETDX, check, attestation.ErrCollateral,
			"CRL is issued by %q, want %q", crl.Issuer, issuer.Subject)
	}
	if err := crl.CheckSignatureFrom(issuer); err != nil {
		return nil, &attestation.Error{TEE: attestation.TEETDX, Check: check + " signature", Err: attestation.ErrSignature,
			Detail: fmt.Sprintf("CRL is not signed by %q", issuer.Subject.CommonName), Cause: err}
	}
	if crl.NextUpdate.IsZero() {
		return nil, attestation.Errorf(attestation.TEETDX, check, attestation.ErrCollateral, "CRL has no nextUpdate")
	}
	if now.Before(crl.ThisUpdate) || now.After(crl.NextUpdate) {
		return nil, attestation.Errorf(attestation.TEETDX, check+" validity", attestation.ErrExpired,
			"CRL of %q is valid from %s to %s, not at %s", issuer.Subject.CommonName,
			crl.ThisUpdate.UTC().Format(time.RFC3339), crl.NextUpdate.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	return crl, nil
}

func notRevoked(crl *x509.RevocationList, cert *x509.Certificate) error {
	for _, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber != nil && e.SerialNumber.Cmp(cert.SerialNumber) == 0 {
			return attestation.Errorf(attestation.TEETDX, "crl", attestation.ErrRevoked,
				"%q (serial %x) was revoked at %s by the CRL of %q", cert.Subject.CommonName, cert.SerialNumber,
				e.RevocationTime.UTC().Format(time.RFC3339), crl.Issuer.CommonName)
		}
	}
	return nil
}

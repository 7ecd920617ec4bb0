// Package tdx verifies Intel TDX quotes (version 4) and turns them into
// attestation.Claims.
//
// Verification has two layers. The quote layer runs on every call and needs
// nothing but the quote and the trusted roots: the PCK certificate chain
// embedded in the quote must lead to a trusted root (by default the pinned
// Intel SGX Root CA) at the injected time, the PCK key must sign the quoting
// enclave (QE) report, the QE report must commit to the attestation key, and
// the attestation key must sign the quote header and TD quote body. These
// checks are done here first, so that each failure has its own sentinel and
// check name, and then again by go-tdx-guest's verify.TdxQuote as an
// independent second implementation (except for PCK chains through the PCK
// Processor CA, which go-tdx-guest v0.3.1 does not accept). Without
// collateral the quoting enclave must also be Intel's production TD QE
// (pinned MRSIGNER and ISVPRODID, no DEBUG).
//
// The collateral layer needs Intel's TCB info and QE identity (from Intel PCS,
// a PCCS, or a cache: see CollateralSource). It is implemented here rather
// than in go-tdx-guest v0.3.1, whose collateral path only accepts the
// UpToDate status: the TCB info and QE identity signatures and issuer chains
// are checked, the platform's TCB level is matched, and the matched status is
// reported in Claims.TDX.TCBStatus without being judged. Judging it is
// policy's job; only a platform that no TCB level describes is an error
// (ErrNoMatchingTCBLevel). Without a CollateralSource the TCB status is
// "unknown" and Claims.Unchecked names "tdx collateral" and "crl".
//
// Nothing in this package reads the clock, the network or the filesystem
// while verifying; PCSClient and DirCollateral, which do network and file
// I/O, are CollateralSource implementations injected through Options.
package tdx

import (
	"bytes"
	"context"
	"crypto/x509"
	_ "embed"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/greatjail/cvm/attestation"
)

// intelRootPEM is the Intel SGX Root CA certificate (valid 2018-05-21 to
// 2049-12-31, SHA-256 fingerprint 44:A0:19:6B:...:74:D3), copied byte for
// byte from github.com/google/go-tdx-guest@v0.3.1 verify/trusted_root.pem
// (sha256 194123d2a18be2beb525d0f0cc10a8998be1e63d7a0ecb723cb194f3e9833912).
// Intel publishes it at
// https://certificates.trustedservices.intel.com/Intel_SGX_Provisioning_Certification_RootCA.pem.
//
//go:embed intel_sgx_root_ca.pem
var intelRootPEM []byte

// ErrNoMatchingTCBLevel means the TCB info describes no TCB level this
// platform reaches: Intel does not support the platform's configuration. It is
// returned as the Cause of an *attestation.Error wrapping
// attestation.ErrCollateral, with Check "tcb level" (or "qe tcb level" for
// the quoting enclave), so errors.Is matches both.
var ErrNoMatchingTCBLevel = errors.New("no TCB level in the TCB info matches this platform")

// Options configure a Verifier.
type Options struct {
	// Now returns the verification time. Required.
	Now func() time.Time
	// Roots are the trusted roots for the PCK chain and for the issuer
	// chains of the collateral. Nil means the pinned Intel SGX Root CA.
	Roots *x509.CertPool
	// Collateral supplies TCB info, QE identity and CRLs. Nil means no
	// collateral: the TCB status is "unknown" and Claims.Unchecked lists
	// "tdx collateral" and "crl".
	Collateral CollateralSource
	// CheckRevocations also checks the PCK CRL and the Intel SGX Root CA
	// CRL from the collateral. If they are unavailable, or this is false,
	// Claims.Unchecked lists "crl".
	CheckRevocations bool
}

// Verifier verifies TDX quotes. It is safe for concurrent use: it holds only
// immutable configuration and builds go-tdx-guest's options afresh per call.
type Verifier struct {
	now              func() time.Time
	roots            *x509.CertPool
	collateral       CollateralSource
	checkRevocations bool
}

var _ attestation.Verifier = (*Verifier)(nil)

// New returns a Verifier for opts.
func New(opts Options) (*Verifier, error) {
	if opts.Now == nil {
		return nil, errors.New("tdx: Options.Now is required")
	}
	roots := opts.Roots
	if roots == nil {
		var err error
		if roots, err = IntelRoots(); err != nil {
			return nil, err
		}
	} else {
		roots = roots.Clone()
	}
	return &Verifier{
		now:              opts.Now,
		roots:            roots,
		collateral:       opts.Collateral,
		checkRevocations: opts.CheckRevocations,
	}, nil
}

// IntelRoots returns a new pool holding only the pinned Intel SGX Root CA.
func IntelRoots() (*x509.CertPool, error) {
	root, err := intelRoot()
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	return pool, nil
}

func intelRoot() (*x509.Certificate, error) {
	block, _ := pem.Decode(intelRootPEM)
	if block == nil {
		return nil, errors.New("tdx: embedded Intel SGX Root CA is not PEM")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("tdx: embedded Intel SGX Root CA: %w", err)
	}
	return cert, nil
}

// Verify checks a TDX quote in ev.Report and returns its claims. The quote
// must carry its PCK chain (certification data type 5 inside type 6), as
// quotes from configfs-tsm and the TDX quote generation service do;
// ev.Certificates, ev.EventLog and the TPM fields are not used. A CCEL in
// ev.EventLog is not replayed here: callers replay it against Claims.RTMRs.
func (v *Verifier) Verify(ctx context.Context, ev *attestation.Evidence) (*attestation.Claims, error) {
	if ev == nil {
		return nil, attestation.Errorf(attestation.TEETDX, "evidence", attestation.ErrMissing, "no evidence")
	}
	if ev.TEE != attestation.TEETDX {
		return nil, attestation.Errorf(attestation.TEETDX, "evidence", attestation.ErrUnsupported,
			"evidence is for TEE %q, this verifier checks %q", ev.TEE, attestation.TEETDX)
	}
	if err := attestation.CheckSize(attestation.TEETDX, "quote", ev.Report, attestation.MaxEvidenceSize); err != nil {
		return nil, err
	}
	now := v.now()

	q, err := parseQuote(ev.Report)
	if err != nil {
		return nil, err
	}
	pck, err := v.verifyQuote(q, now)
	if err != nil {
		return nil, err
	}
	claims := quoteClaims(q, pck, now)

	if v.collateral == nil {
		if err := checkPinnedQE(q.qeReport); err != nil {
			return nil, err
		}
		claims.TDX.TCBStatus = attestation.TCBStatusUnknown
		// Without collateral there are no CRLs either: both are named, as
		// every verifier names each check it did not perform.
		claims.Unchecked = append(claims.Unchecked, "tdx collateral", "crl")
		return claims, nil
	}
	if err := v.evaluateCollateral(ctx, q, pck, now, claims); err != nil {
		return nil, err
	}
	return claims, nil
}

// TD_ATTRIBUTES bits, from the Intel TDX Module ABI specification
// (TD_ATTRIBUTES definition) and Linux arch/x86/include/asm/shared/tdx.h
// (TDX_ATTR_DEBUG_BIT 0, TDX_ATTR_MIGRATABLE_BIT 29). TD_ATTRIBUTES is a
// little-endian 64-bit field in the TD quote body.
const (
	tdAttributesDebug      = 1 << 0  // TUD.DEBUG: the host VMM can read and write TD state
	tdAttributesMigratable = 1 << 29 // MIGRATABLE: the TD may be migrated by a migration TD
)

// quoteClaims returns the claims the quote layer vouches for.
func quoteClaims(q *quote, pck *pckInfo, now time.Time) *attestation.Claims {
	b := q.proto.GetTdQuoteBody()
	attrs := binary.LittleEndian.Uint64(b.GetTdAttributes())
	rtmrs := make([]attestation.Hex, 0, len(b.GetRtmrs()))
	for _, r := range b.GetRtmrs() {
		rtmrs = append(rtmrs, clone(r))
	}
	return &attestation.Claims{
		TEE:            attestation.TEETDX,
		Product:        "TDX",
		Measurement:    clone(b.GetMrTd()),
		RTMRs:          rtmrs,
		ReportData:     clone(b.GetReportData()),
		MRConfigID:     clone(b.GetMrConfigId()),
		MROwner:        clone(b.GetMrOwner()),
		MROwnerConfig:  clone(b.GetMrOwnerConfig()),
		Debug:          attrs&tdAttributesDebug != 0,
		MigrationAgent: attrs&tdAttributesMigratable != 0,
		TDX: &attestation.TDXClaims{
			TEETCBSVN:    clone(b.GetTeeTcbSvn()),
			MRSEAM:       clone(b.GetMrSeam()),
			TDAttributes: clone(b.GetTdAttributes()),
			XFAM:         clone(b.GetXfam()),
			FMSPC:        clone(pck.fmspc),
		},
		VerifiedAt: now,
	}
}

func clone(b []byte) attestation.Hex {
	return attestation.Hex(bytes.Clone(b))
}

// appendUnique appends the strings of add that are not yet in list.
func appendUnique(list []string, add ...string) []string {
	for _, s := range add {
		if !slices.Contains(list, s) {
			list = append(list, s)
		}
	}
	return list
}

// Platform reads the FMSPC and the PCK CA kind ("platform" or "processor")
// from the PCK certificate chain embedded in raw, after checking that chain
// against the Verifier's roots at Options.Now. It is what a caller needs to
// fetch or look up collateral for the platform that produced the quote; it
// does not verify the quote itself (Verify does).
func (v *Verifier) Platform(raw []byte) (fmspc []byte, ca string, err error) {
	if err := attestation.CheckSize(attestation.TEETDX, "evidence", raw, attestation.MaxEvidenceSize); err != nil {
		return nil, "", err
	}
	q, err := parseQuote(raw)
	if err != nil {
		return nil, "", err
	}
	pck, err := v.verifyPCKChain(q.pckChain, v.now())
	if err != nil {
		return nil, "", err
	}
	return bytes.Clone(pck.fmspc), pck.ca, nil
}

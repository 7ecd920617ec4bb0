// Package attestcmd implements the `cvm attest` operations as library
// functions: verify an evidence file into claims, manage a simulated-TEE
// authority, and seed the offline SEV-SNP certificate cache. The cobra
// commands in cmd/cvm only parse flags into the option structs here.
//
// This is the one place that turns files and command-line choices into the
// injected dependencies (clock, roots, fetchers) the verifiers take.
package attestcmd

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/attestation/sevsnp"
	"github.com/greatjail/cvm/attestation/sim"
	"github.com/greatjail/cvm/attestation/tdx"
	"github.com/greatjail/cvm/attestation/tpm"
	attestationv1 "github.com/greatjail/cvm/proto/cvm/attestation/v1"
	"google.golang.org/protobuf/encoding/protojson"
)

// ErrUsage marks errors in how the command was invoked (bad flag values,
// unreadable files), as opposed to evidence that failed verification.
var ErrUsage = errors.New("usage")

// VerifyOptions are the inputs of `cvm attest verify`.
type VerifyOptions struct {
	// TEE is "snp", "tdx", "tpm" or "sim".
	TEE string
	// Report is the evidence file: a raw SEV-SNP or sim report (optionally
	// followed by its certificate table), a raw TDX quote, or for TPM a
	// JSON cvm.attestation.v1.Evidence document.
	Report string
	// Certs are certificate files (PEM, possibly several blocks, or DER).
	Certs []string
	// Collateral is a TDX collateral directory (tdx.DirCollateral layout).
	Collateral string
	// SimRoot is the simulated TEE's root.pem; required for TEE "sim".
	SimRoot string
	// AKs are PEM public keys of trusted TPM attestation keys.
	AKs []string
	// EventLog is a TPM event log file, overriding the one in the report.
	EventLog string
	// Now is the verification time.
	Now time.Time
	// Offline forbids network access: SEV-SNP certificates come only from
	// the evidence, Certs and CertCache; TDX collateral only from
	// Collateral.
	Offline bool
	// CertCache is the SEV-SNP certificate cache directory ("" = none).
	CertCache string
	// CheckRevocations asks for CRL checks (SEV-SNP ASK, TDX PCK).
	CheckRevocations bool
	// PCSURL is the Intel PCS or PCCS base URL used when online.
	PCSURL string
	// HTTPClient is used for network fetches when not Offline.
	HTTPClient *http.Client
}

// Verify loads the evidence named by opts, verifies it with the verifier
// for opts.TEE and returns the claims. Verification failures wrap the
// attestation sentinels; problems with the invocation wrap ErrUsage.
func Verify(ctx context.Context, opts VerifyOptions) (*attestation.Claims, error) {
	tee, err := attestation.ParseTEE(opts.TEE)
	if err != nil {
		return nil, fmt.Errorf("%w: --tee: %w", ErrUsage, err)
	}
	if opts.Now.IsZero() {
		return nil, fmt.Errorf("%w: no verification time", ErrUsage)
	}
	now := func() time.Time { return opts.Now }
	if tee != attestation.TEESim && opts.SimRoot != "" {
		return nil, fmt.Errorf("%w: --sim-root is only valid with --tee sim", ErrUsage)
	}
	report, err := readEvidence(tee, opts.Report)
	if err != nil {
		return nil, err
	}
	ev := &attestation.Evidence{TEE: tee, Report: report}
	if tee == attestation.TEETPM {
		if ev, err = tpmEvidence(report); err != nil {
			return nil, err
		}
	}
	for _, f := range opts.Certs {
		certs, err := readCerts(f)
		if err != nil {
			return nil, err
		}
		ev.Certificates = append(ev.Certificates, certs...)
	}
	if opts.EventLog != "" {
		if ev.EventLog, err = readFile("--event-log", opts.EventLog); err != nil {
			return nil, err
		}
	}

	var v attestation.Verifier
	switch tee {
	case attestation.TEESEVSNP:
		v, err = sevsnp.New(sevsnp.Options{
			Now:              now,
			Fetcher:          snpFetcher(opts),
			CheckRevocations: opts.CheckRevocations,
		})
	case attestation.TEESim:
		if opts.SimRoot == "" {
			// Not a usage error: with no sim root trusted, a simulated
			// report is denied like any evidence without a trust anchor.
			return nil, attestation.Errorf(attestation.TEESim, "sim root", attestation.ErrMissing,
				"no simulated-TEE root is trusted: a simulated report is never trusted by default; pass --sim-root FILE (the root.pem written by 'cvm attest sim init')")
		}
		root, rerr := readFile("--sim-root", opts.SimRoot)
		if rerr != nil {
			return nil, rerr
		}
		v, err = sim.NewVerifier(root, now)
	case attestation.TEETDX:
		var src tdx.CollateralSource
		switch {
		case opts.Collateral != "":
			if _, serr := os.Stat(opts.Collateral); serr != nil {
				return nil, fmt.Errorf("%w: --collateral: %w", ErrUsage, serr)
			}
			src = tdx.DirCollateral{Dir: opts.Collateral}
		case !opts.Offline:
			src = &tdx.PCSClient{BaseURL: opts.PCSURL, Client: opts.HTTPClient}
		}
		v, err = tdx.New(tdx.Options{Now: now, Collateral: src, CheckRevocations: opts.CheckRevocations})
	case attestation.TEETPM:
		// With no --ak nothing is trusted: the verifier denies with a
		// reason naming the attestation key.
		var aks []crypto.PublicKey
		for _, f := range opts.AKs {
			k, kerr := readPublicKey(f)
			if kerr != nil {
				return nil, kerr
			}
			aks = append(aks, k)
		}
		v, err = tpm.New(tpm.Options{Now: now, TrustedAKs: aks})
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUsage, err)
	}
	return v.Verify(ctx, ev)
}

func snpFetcher(opts VerifyOptions) sevsnp.Fetcher {
	var upstream sevsnp.Fetcher
	if !opts.Offline {
		upstream = &sevsnp.HTTPFetcher{Client: opts.HTTPClient}
	}
	if opts.CertCache == "" {
		if upstream == nil {
			return nil
		}
		return upstream
	}
	return &sevsnp.Cache{Dir: opts.CertCache, Upstream: upstream, Now: func() time.Time { return opts.Now }}
}

// tpmEvidence parses a TPM evidence document: the protojson form of
// cvm.attestation.v1.Evidence with tee TEE_TPM.
func tpmEvidence(b []byte) (*attestation.Evidence, error) {
	var m attestationv1.Evidence
	if err := (protojson.UnmarshalOptions{}).Unmarshal(b, &m); err != nil {
		return nil, attestation.Wrap(attestation.TEETPM, "evidence file", attestation.ErrMalformed,
			fmt.Errorf("want a JSON cvm.attestation.v1.Evidence document: %w", err))
	}
	if m.GetTee() == attestationv1.Tee_TEE_UNSPECIFIED {
		m.Tee = attestationv1.Tee_TEE_TPM
	}
	if m.GetTee() != attestationv1.Tee_TEE_TPM {
		return nil, attestation.Errorf(attestation.TEETPM, "evidence file", attestation.ErrMismatch, "document says tee %s", m.GetTee())
	}
	return attestation.EvidenceFromProto(&m)
}

// maxFile bounds every file the command reads.
const maxFile = 16 << 20

// readEvidence reads the evidence file. Evidence larger than any verifier
// accepts is a failed check (ErrTooLarge), not a usage error.
func readEvidence(tee attestation.TEE, path string) ([]byte, error) {
	if path == "" {
		return nil, fmt.Errorf("%w: --report is required", ErrUsage)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%w: --report: %w", ErrUsage, err)
	}
	if fi.Size() > maxFile {
		return nil, attestation.Errorf(tee, "evidence", attestation.ErrTooLarge, "%s is %d bytes; no evidence is larger than %d", path, fi.Size(), attestation.MaxEvidenceSize)
	}
	return readFile("--report", path)
}

func readFile(flag, path string) ([]byte, error) {
	if path == "" {
		return nil, fmt.Errorf("%w: %s is required", ErrUsage, flag)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrUsage, flag, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFile+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrUsage, flag, err)
	}
	if len(b) > maxFile {
		return nil, fmt.Errorf("%w: %s: %s is larger than %d bytes", ErrUsage, flag, path, maxFile)
	}
	return b, nil
}

// readCerts returns the DER certificates in a PEM (one or more CERTIFICATE
// blocks) or DER file.
func readCerts(path string) ([][]byte, error) {
	b, err := readFile("--certs", path)
	if err != nil {
		return nil, err
	}
	ders, err := ParseCertificates(b)
	if err != nil {
		return nil, fmt.Errorf("%w: --certs %s: %w", ErrUsage, path, err)
	}
	return ders, nil
}

// ParseCertificates accepts PEM (any number of CERTIFICATE blocks) or a
// single DER certificate and returns the DER bytes of each.
func ParseCertificates(b []byte) ([][]byte, error) {
	if bytes.Contains(b, []byte("-----BEGIN")) {
		var out [][]byte
		rest := b
		for {
			var blk *pem.Block
			blk, rest = pem.Decode(rest)
			if blk == nil {
				break
			}
			if blk.Type != "CERTIFICATE" {
				return nil, fmt.Errorf("PEM block %q is not a CERTIFICATE", blk.Type)
			}
			if _, err := x509.ParseCertificate(blk.Bytes); err != nil {
				return nil, fmt.Errorf("certificate %d: %w", len(out)+1, err)
			}
			out = append(out, blk.Bytes)
		}
		if len(out) == 0 {
			return nil, errors.New("no PEM CERTIFICATE block")
		}
		return out, nil
	}
	if _, err := x509.ParseCertificate(b); err != nil {
		return nil, fmt.Errorf("neither PEM nor a DER certificate: %w", err)
	}
	return [][]byte{b}, nil
}

func readPublicKey(path string) (crypto.PublicKey, error) {
	b, err := readFile("--ak", path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("%w: --ak %s: want a PEM \"PUBLIC KEY\" block", ErrUsage, path)
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: --ak %s: %w", ErrUsage, path, err)
	}
	return k, nil
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

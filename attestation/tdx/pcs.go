package tdx

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// DefaultPCSURL is the base URL of Intel's Provisioning Certification
// Service.
const DefaultPCSURL = "https://api.trustedservices.intel.com"

// intelRootCRLURL is where Intel publishes the Intel SGX Root CA CRL (the
// CRL distribution point of the root certificate).
const intelRootCRLURL = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"

// PCSClient fetches collateral from Intel PCS (API v4) or from a PCCS that
// serves the same API. It is a CollateralSource; it does network I/O and is
// never used by the verifier directly, only when injected.
//
// It requests, relative to BaseURL:
//
//	/tdx/certification/v4/tcb?fmspc=<hex>           TCB info, chain in TCB-Info-Issuer-Chain
//	/tdx/certification/v4/qe/identity               QE identity, chain in SGX-Enclave-Identity-Issuer-Chain
//	/sgx/certification/v4/pckcrl?ca=<ca>&encoding=der  PCK CRL, chain in SGX-PCK-CRL-Issuer-Chain
//
// and the root CA CRL from Intel's distribution point when BaseURL is
// DefaultPCSURL, or from <BaseURL>/sgx/certification/v4/rootcacrl (the
// PCCS endpoint) otherwise. TCB info and QE identity are required; a CRL
// that cannot be fetched is left nil, so a verifier with CheckRevocations
// reports "crl" in Claims.Unchecked instead of failing.
type PCSClient struct {
	// BaseURL defaults to DefaultPCSURL.
	BaseURL string
	// Client defaults to a plain http.Client.
	Client *http.Client
	// Timeout bounds each request; it defaults to 30 seconds.
	Timeout time.Duration
}

var _ CollateralSource = (*PCSClient)(nil)

var defaultHTTPClient = &http.Client{}

// Collateral implements CollateralSource.
func (p *PCSClient) Collateral(ctx context.Context, fmspc []byte, ca string) (*Collateral, error) {
	if len(fmspc) != 6 {
		return nil, fmt.Errorf("tdx: pcs: FMSPC is %d bytes, want 6", len(fmspc))
	}
	if ca != "platform" && ca != "processor" {
		return nil, fmt.Errorf("tdx: pcs: CA %q, want \"platform\" or \"processor\"", ca)
	}
	base := strings.TrimRight(p.BaseURL, "/")
	if base == "" {
		base = DefaultPCSURL
	}
	c := &Collateral{}
	var err error
	c.TCBInfo, c.TCBInfoIssuerChain, err = p.get(ctx, base+"/tdx/certification/v4/tcb?fmspc="+hex.EncodeToString(fmspc),
		"TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain")
	if err != nil {
		return nil, err
	}
	c.QEIdentity, c.QEIdentityIssuerChain, err = p.get(ctx, base+"/tdx/certification/v4/qe/identity",
		"SGX-Enclave-Identity-Issuer-Chain")
	if err != nil {
		return nil, err
	}

	// CRLs are best effort, unless the caller gave up.
	crl, chain, err := p.get(ctx, base+"/sgx/certification/v4/pckcrl?ca="+ca+"&encoding=der", "SGX-PCK-CRL-Issuer-Chain")
	if err == nil {
		if c.PCKCRL, err = crlDER(crl); err == nil {
			c.PCKCRLIssuerChain = chain
		}
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("tdx: pcs: %w", ctx.Err())
	}
	rootURL := base + "/sgx/certification/v4/rootcacrl"
	if base == DefaultPCSURL {
		rootURL = intelRootCRLURL
	}
	if crl, _, err := p.get(ctx, rootURL); err == nil {
		c.RootCRL, _ = crlDER(crl)
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("tdx: pcs: %w", ctx.Err())
	}
	return c, nil
}

// get fetches u and returns the body and, if headers are named, the
// URL-escaped PEM issuer chain from the first of them that is present.
func (p *PCSClient) get(ctx context.Context, u string, chainHeaders ...string) (body, chain []byte, err error) {
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("tdx: pcs: %w", err)
	}
	client := p.Client
	if client == nil {
		client = defaultHTTPClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("tdx: pcs: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("tdx: pcs: GET %s: %s", u, resp.Status)
	}
	body, err = io.ReadAll(io.LimitReader(resp.Body, maxCollateralSize+1))
	if err != nil {
		return nil, nil, fmt.Errorf("tdx: pcs: GET %s: %w", u, err)
	}
	if len(body) > maxCollateralSize {
		return nil, nil, fmt.Errorf("tdx: pcs: GET %s: response larger than %d bytes", u, maxCollateralSize)
	}
	if len(chainHeaders) == 0 {
		return body, nil, nil
	}
	for _, h := range chainHeaders {
		if v := resp.Header.Get(h); v != "" {
			s, err := unescapePEM(v)
			if err != nil {
				return nil, nil, fmt.Errorf("tdx: pcs: GET %s: header %s: %w", u, h, err)
			}
			return body, s, nil
		}
	}
	return nil, nil, fmt.Errorf("tdx: pcs: GET %s: no %s header", u, chainHeaders[0])
}

// unescapePEM decodes a URL-escaped PEM issuer chain header. PathUnescape,
// not QueryUnescape: a literal '+' of base64 must stay a '+'.
func unescapePEM(v string) ([]byte, error) {
	s, err := url.PathUnescape(v)
	if err != nil {
		return nil, err
	}
	if !strings.Contains(s, "-----BEGIN CERTIFICATE-----") {
		return nil, errors.New("not a PEM certificate chain")
	}
	return []byte(s), nil
}

// crlDER returns a CRL body as DER: Intel PCS serves DER with
// encoding=der, a PCCS may serve PEM or hex-encoded DER.
func crlDER(b []byte) ([]byte, error) {
	if len(b) > 0 && b[0] == 0x30 {
		return b, nil
	}
	t := bytes.TrimSpace(b)
	if block, _ := pem.Decode(t); block != nil && block.Type == "X509 CRL" {
		return block.Bytes, nil
	}
	if d, err := hex.DecodeString(string(t)); err == nil && len(d) > 0 && d[0] == 0x30 {
		return d, nil
	}
	return nil, errors.New("tdx: pcs: CRL is neither DER, PEM nor hex-encoded DER")
}

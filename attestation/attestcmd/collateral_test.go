package attestcmd

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/attestation/tdx"
	"github.com/greatjail/cvm/testdata"
)

// fakePCS serves the recorded Intel sample collateral on loopback, as PCS
// API v4 does (issuer chains URL-escaped in response headers).
func fakePCS(t *testing.T) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	serve := func(path, header string, chain, body []byte) {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			if header != "" {
				w.Header().Set(header, url.PathEscape(string(chain)))
			}
			w.Write(body)
		})
	}
	serve("/tdx/certification/v4/tcb", "TCB-Info-Issuer-Chain", testdata.TDXTCBInfoIssuerChain, testdata.TDXTCBInfo)
	serve("/tdx/certification/v4/qe/identity", "SGX-Enclave-Identity-Issuer-Chain", testdata.TDXQEIdentityIssuerChain, testdata.TDXQEIdentity)
	serve("/sgx/certification/v4/pckcrl", "SGX-PCK-CRL-Issuer-Chain", testdata.TDXPCKCRLIssuerChain, testdata.TDXPCKCRLPlatform)
	serve("/sgx/certification/v4/rootcacrl", "", nil, testdata.TDXRootCRL)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestFetchCollateral(t *testing.T) {
	srv := fakePCS(t)
	dir := t.TempDir()
	quote := filepath.Join(dir, "quote.dat")
	if err := os.WriteFile(quote, testdata.TDXQuote, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "collateral")
	at := time.Date(2023, 7, 1, 1, 0, 0, 0, time.UTC)
	fmspc, ca, err := FetchCollateral(context.Background(), FetchCollateralOptions{Report: quote, Dir: out, PCSURL: srv.URL, HTTPClient: srv.Client(), Now: at})
	if err != nil {
		t.Fatal(err)
	}
	if fmspc != "50806f000000" || ca != "platform" {
		t.Errorf("FetchCollateral() = %s, %s; want 50806f000000, platform", fmspc, ca)
	}
	// What was stored is what the PCS served, and the verifier reads it:
	// with this sample collateral that means the documented TCB-level error.
	for name, want := range map[string][]byte{"tcbinfo-50806f000000.json": testdata.TDXTCBInfo, "qe-identity.json": testdata.TDXQEIdentity, "rootcrl.der": testdata.TDXRootCRL} {
		got, err := os.ReadFile(filepath.Join(out, name))
		if err != nil || string(got) != string(want) {
			t.Errorf("%s: stored %d bytes (%v), want the %d bytes served", name, len(got), err, len(want))
		}
	}
	_, err = Verify(context.Background(), VerifyOptions{TEE: "tdx", Report: quote, Collateral: out, Now: at, CheckRevocations: true})
	if !errors.Is(err, tdx.ErrNoMatchingTCBLevel) || !errors.Is(err, attestation.ErrCollateral) {
		t.Errorf("Verify with fetched collateral = %v, want the no-matching-TCB-level error", err)
	}
}

func TestFetchCollateralFailures(t *testing.T) {
	dir := t.TempDir()
	quote := filepath.Join(dir, "quote.dat")
	if err := os.WriteFile(quote, testdata.TDXQuote, 0o644); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2023, 7, 1, 1, 0, 0, 0, time.UTC)
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	out := filepath.Join(dir, "out")
	if _, _, err := FetchCollateral(context.Background(), FetchCollateralOptions{Report: quote, Dir: out, PCSURL: down.URL, Now: at}); err == nil {
		t.Error("FetchCollateral from an unreachable PCS succeeded")
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("a failed fetch created %s (%v); nothing may be written", out, err)
	}
	if _, _, err := FetchCollateral(context.Background(), FetchCollateralOptions{Report: quote, Now: at}); !errors.Is(err, ErrUsage) {
		t.Errorf("FetchCollateral without --dir = %v, want a usage error", err)
	}
	bad := filepath.Join(dir, "bad.dat")
	os.WriteFile(bad, testdata.TDXQuote[:200], 0o644)
	if _, _, err := FetchCollateral(context.Background(), FetchCollateralOptions{Report: bad, Dir: out, Now: at}); !errors.Is(err, attestation.ErrMalformed) {
		t.Errorf("FetchCollateral(truncated quote) = %v, want ErrMalformed", err)
	}
}

// TestFetchCollateralKeepsCRLs: a PCS whose CRL endpoints fail does not
// make a refresh delete the CRLs already stored.
func TestFetchCollateralKeepsCRLs(t *testing.T) {
	dir := t.TempDir()
	quote := filepath.Join(dir, "quote.dat")
	if err := os.WriteFile(quote, testdata.TDXQuote, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "collateral")
	at := time.Date(2023, 7, 1, 1, 0, 0, 0, time.UTC)
	full := fakePCS(t)
	if _, _, err := FetchCollateral(context.Background(), FetchCollateralOptions{Report: quote, Dir: out, PCSURL: full.URL, Now: at}); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/tdx/certification/v4/tcb", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("TCB-Info-Issuer-Chain", url.PathEscape(string(testdata.TDXTCBInfoIssuerChain)))
		w.Write(testdata.TDXTCBInfo)
	})
	mux.HandleFunc("/tdx/certification/v4/qe/identity", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("SGX-Enclave-Identity-Issuer-Chain", url.PathEscape(string(testdata.TDXQEIdentityIssuerChain)))
		w.Write(testdata.TDXQEIdentity)
	})
	noCRL := httptest.NewServer(mux) // CRL endpoints answer 404
	defer noCRL.Close()
	if _, _, err := FetchCollateral(context.Background(), FetchCollateralOptions{Report: quote, Dir: out, PCSURL: noCRL.URL, Now: at}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"pckcrl-platform.der", "rootcrl.der"} {
		if _, err := os.Stat(filepath.Join(out, name)); err != nil {
			t.Errorf("%s after a refresh without CRLs: %v; want the earlier copy kept", name, err)
		}
	}
}

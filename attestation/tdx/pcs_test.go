package tdx

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"encoding/pem"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/testdata"
)

// intelEscape escapes a PEM chain the way Intel PCS does in its
// *-Issuer-Chain headers (%20 for spaces, %0A for newlines, %2B for '+').
func intelEscape(b []byte) string {
	return strings.ReplaceAll(url.QueryEscape(string(b)), "+", "%20")
}

// fakePCS serves the recorded sample collateral like Intel PCS / a PCCS and
// records the requests it saw.
type fakePCS struct {
	mu       sync.Mutex
	requests []string // host + path + query

	tcbStatus   int
	tcbBody     []byte
	tcbHeader   string // header name for the TCB info chain
	chainEscape func([]byte) string
	pckCRL      []byte
	pckCRLFail  bool
	rootCRL     []byte
	delay       time.Duration
}

func newFakePCS() *fakePCS {
	return &fakePCS{
		tcbStatus: http.StatusOK, tcbBody: testdata.TDXTCBInfo, tcbHeader: "TCB-Info-Issuer-Chain",
		chainEscape: intelEscape, pckCRL: testdata.TDXPCKCRLPlatform,
		// A PCCS serves the root CA CRL hex-encoded.
		rootCRL: []byte(hex.EncodeToString(testdata.TDXRootCRL)),
	}
}

func (f *fakePCS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.requests = append(f.requests, r.Host+r.URL.RequestURI())
	f.mu.Unlock()
	if f.delay > 0 {
		select {
		case <-time.After(f.delay):
		case <-r.Context().Done():
			return
		}
	}
	q := r.URL.Query()
	switch r.URL.Path {
	case "/tdx/certification/v4/tcb":
		if q.Get("fmspc") != "50806f000000" {
			http.NotFound(w, r)
			return
		}
		if f.tcbHeader != "" {
			w.Header().Set(f.tcbHeader, f.chainEscape(testdata.TDXTCBInfoIssuerChain))
		}
		w.WriteHeader(f.tcbStatus)
		w.Write(f.tcbBody)
	case "/tdx/certification/v4/qe/identity":
		w.Header().Set("SGX-Enclave-Identity-Issuer-Chain", f.chainEscape(testdata.TDXQEIdentityIssuerChain))
		w.Write(testdata.TDXQEIdentity)
	case "/sgx/certification/v4/pckcrl":
		if f.pckCRLFail || q.Get("ca") != "platform" || q.Get("encoding") != "der" {
			http.Error(w, "no", http.StatusInternalServerError)
			return
		}
		w.Header().Set("SGX-PCK-CRL-Issuer-Chain", f.chainEscape(testdata.TDXPCKCRLIssuerChain))
		w.Write(f.pckCRL)
	case "/sgx/certification/v4/rootcacrl":
		w.Write(f.rootCRL)
	case "/IntelSGXRootCA.der":
		w.Write(testdata.TDXRootCRL)
	default:
		http.NotFound(w, r)
	}
}

var sampleFMSPC = []byte{0x50, 0x80, 0x6f, 0, 0, 0}

func sampleCollateral() *Collateral {
	return &Collateral{
		TCBInfo: testdata.TDXTCBInfo, TCBInfoIssuerChain: testdata.TDXTCBInfoIssuerChain,
		QEIdentity: testdata.TDXQEIdentity, QEIdentityIssuerChain: testdata.TDXQEIdentityIssuerChain,
		PCKCRL: testdata.TDXPCKCRLPlatform, PCKCRLIssuerChain: testdata.TDXPCKCRLIssuerChain,
		RootCRL: testdata.TDXRootCRL,
	}
}

func TestPCSClient(t *testing.T) {
	crlPEM := pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: testdata.TDXPCKCRLPlatform})
	rawPlus := strings.NewReplacer(" ", "%20", "\n", "%0A").Replace
	for _, tc := range []struct {
		name   string
		change func(*fakePCS)
		want   func(*Collateral)
	}{
		{"intel format", nil, nil},
		{"v3 tcb info header", func(f *fakePCS) { f.tcbHeader = "SGX-TCB-Info-Issuer-Chain" }, nil},
		{"unescaped plus", func(f *fakePCS) { f.chainEscape = func(b []byte) string { return rawPlus(string(b)) } }, nil},
		{"pem pck crl", func(f *fakePCS) { f.pckCRL = crlPEM }, nil},
		{"hex pck crl", func(f *fakePCS) { f.pckCRL = []byte(hex.EncodeToString(testdata.TDXPCKCRLPlatform) + "\n") }, nil},
		{"der root crl", func(f *fakePCS) { f.rootCRL = testdata.TDXRootCRL }, nil},
		{"pck crl unavailable", func(f *fakePCS) { f.pckCRLFail = true }, func(c *Collateral) { c.PCKCRL, c.PCKCRLIssuerChain = nil, nil }},
		{"root crl garbage", func(f *fakePCS) { f.rootCRL = []byte("<html>") }, func(c *Collateral) { c.RootCRL = nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakePCS()
			if tc.change != nil {
				tc.change(f)
			}
			srv := httptest.NewServer(f)
			defer srv.Close()
			got, err := (&PCSClient{BaseURL: srv.URL + "/"}).Collateral(context.Background(), sampleFMSPC, "platform")
			if err != nil {
				t.Fatal(err)
			}
			want := sampleCollateral()
			if tc.want != nil {
				tc.want(want)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("collateral (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPCSClientErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*fakePCS)
		client PCSClient
		fmspc  []byte
		ca     string
	}{
		{name: "tcb info not found", fmspc: []byte{1, 2, 3, 4, 5, 6}},
		{name: "tcb info error", change: func(f *fakePCS) { f.tcbStatus = http.StatusServiceUnavailable }},
		{name: "no issuer chain", change: func(f *fakePCS) { f.tcbHeader = "" }},
		{name: "issuer chain not pem", change: func(f *fakePCS) { f.chainEscape = func([]byte) string { return "%zz" } }},
		{name: "tcb info too large", change: func(f *fakePCS) { f.tcbBody = make([]byte, maxCollateralSize+1) }},
		{name: "timeout", change: func(f *fakePCS) { f.delay = time.Second }, client: PCSClient{Timeout: 20 * time.Millisecond}},
		{name: "bad fmspc", fmspc: []byte{1}},
		{name: "bad ca", ca: "../platform"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakePCS()
			if tc.change != nil {
				tc.change(f)
			}
			srv := httptest.NewServer(f)
			defer srv.Close()
			c := tc.client
			c.BaseURL = srv.URL
			fmspc, ca := sampleFMSPC, "platform"
			if tc.fmspc != nil {
				fmspc = tc.fmspc
			}
			if tc.ca != "" {
				ca = tc.ca
			}
			if got, err := c.Collateral(context.Background(), fmspc, ca); err == nil {
				t.Fatalf("got %+v, want an error", got)
			}
		})
	}
	t.Run("canceled", func(t *testing.T) {
		srv := httptest.NewServer(newFakePCS())
		defer srv.Close()
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := (&PCSClient{BaseURL: srv.URL}).Collateral(ctx, sampleFMSPC, "platform"); err == nil {
			t.Fatal("canceled fetch succeeded")
		}
	})
}

// TestPCSClientDefaultURLs routes Intel's host names to a loopback TLS
// server and checks what the client asks Intel for, including the root CA
// CRL from its distribution point on another host.
func TestPCSClientDefaultURLs(t *testing.T) {
	f := newFakePCS()
	srv := httptest.NewTLSServer(f)
	defer srv.Close()
	tr := srv.Client().Transport.(*http.Transport).Clone()
	tr.TLSClientConfig = tr.TLSClientConfig.Clone()
	tr.TLSClientConfig.ServerName = "example.com" // the name in httptest's certificate
	tr.TLSClientConfig.MinVersion = tls.VersionTLS12
	tr.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, srv.Listener.Addr().String())
	}
	c := &PCSClient{Client: &http.Client{Transport: tr}}
	got, err := c.Collateral(context.Background(), sampleFMSPC, "platform")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(sampleCollateral(), got); diff != "" {
		t.Errorf("collateral (-want +got):\n%s", diff)
	}
	want := []string{
		"api.trustedservices.intel.com/tdx/certification/v4/tcb?fmspc=50806f000000",
		"api.trustedservices.intel.com/tdx/certification/v4/qe/identity",
		"api.trustedservices.intel.com/sgx/certification/v4/pckcrl?ca=platform&encoding=der",
		"certificates.trustedservices.intel.com/IntelSGXRootCA.der",
	}
	if diff := cmp.Diff(want, f.requests); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
}

// TestPCSClientVerify runs the verifier against the fake PCS: the sample
// collateral gets as far as the TCB level, as with DirCollateral.
func TestPCSClientVerify(t *testing.T) {
	srv := httptest.NewServer(newFakePCS())
	defer srv.Close()
	v := newVerifier(t, Options{Now: fixed(testNow), Collateral: &PCSClient{BaseURL: srv.URL}, CheckRevocations: true})
	_, err := v.Verify(context.Background(), tdxEvidence(testdata.TDXQuote))
	checkErr(t, err, attestation.ErrCollateral, "tcb level", ErrNoMatchingTCBLevel)
}

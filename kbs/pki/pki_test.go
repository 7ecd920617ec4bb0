package pki

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// testRand is a deterministic source for serial numbers. (Key generation
// ignores it since Go 1.26.)
func testRand(seed byte) io.Reader {
	return rand.NewChaCha8([32]byte{seed})
}

func newCA(t testing.TB, seed byte, name string) *CA {
	t.Helper()
	ca, err := NewCA(testRand(seed), testNow, name)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func parseCert(t testing.TB, certPEM []byte) *x509.Certificate {
	t.Helper()
	certs, err := ParseCertificates(certPEM)
	if err != nil || len(certs) != 1 {
		t.Fatalf("ParseCertificates = %d certificates, %v; want 1", len(certs), err)
	}
	return certs[0]
}

// issueCustom signs an arbitrary end-entity template with ca, for
// certificates IssueClient refuses to make.
func issueCustom(t testing.TB, ca *CA, tmpl *x509.Certificate) (certPEM, keyPEM []byte) {
	t.Helper()
	certPEM, keyPEM, err := ca.issue(testRand(99), testNow, ClientValidity, tmpl)
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, keyPEM
}

func TestNewCA(t *testing.T) {
	ca := newCA(t, 1, "test")
	c := ca.Cert
	got := struct {
		CN             string
		IsCA           bool
		MaxPathLen     int
		MaxPathLenZero bool
		Curve          string
		NotBefore      time.Time
		NotAfter       time.Time
		SelfSigned     bool
	}{
		CN: c.Subject.CommonName, IsCA: c.IsCA, MaxPathLen: c.MaxPathLen, MaxPathLenZero: c.MaxPathLenZero,
		NotBefore: c.NotBefore, NotAfter: c.NotAfter,
		SelfSigned: c.CheckSignatureFrom(c) == nil,
	}
	if k, ok := c.PublicKey.(*ecdsa.PublicKey); ok {
		got.Curve = k.Curve.Params().Name
	}
	want := got
	want.CN, want.IsCA, want.MaxPathLen, want.MaxPathLenZero, want.Curve = "cvm-kbs CA test", true, 0, true, "P-256"
	want.NotBefore, want.NotAfter, want.SelfSigned = testNow.Add(-backdate), testNow.Add(CAValidity), true
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("NewCA certificate (-want +got):\n%s", diff)
	}
	if _, err := NewCA(testRand(1), testNow, ""); err == nil {
		t.Error("NewCA with an empty name succeeded")
	}
}

func TestLoadCA(t *testing.T) {
	ca := newCA(t, 1, "test")
	other := newCA(t, 2, "other")
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	otherKeyPEM, err := other.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	leafPEM, leafKeyPEM, err := ca.IssueClient(testRand(3), testNow, RoleAdmin, "alice")
	if err != nil {
		t.Fatal(err)
	}

	got, err := LoadCA(ca.CertPEM(), keyPEM)
	if err != nil {
		t.Fatalf("LoadCA(CertPEM, KeyPEM) = %v", err)
	}
	if !got.Cert.Equal(ca.Cert) || !publicKeysEqual(got.Key.Public(), ca.Key.Public()) {
		t.Error("LoadCA did not return the saved CA")
	}

	for _, tc := range []struct {
		name          string
		cert, key     []byte
		wantSubstring string
	}{
		{"key of another CA", ca.CertPEM(), otherKeyPEM, "does not match"},
		{"two certificates", append(ca.CertPEM(), other.CertPEM()...), keyPEM, "want 1 certificate, found 2"},
		{"no certificate", nil, keyPEM, "want 1 certificate, found 0"},
		{"leaf, not a CA", leafPEM, leafKeyPEM, "not a CA certificate"},
		{"key PEM is a certificate", ca.CertPEM(), ca.CertPEM(), `want PRIVATE KEY`},
		{"trailing garbage", append(ca.CertPEM(), "junk"...), keyPEM, "not PEM"},
		{"SEC1 key", ca.CertPEM(), sec1(t, ca), `want PRIVATE KEY`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadCA(tc.cert, tc.key)
			if err == nil || !strings.Contains(err.Error(), tc.wantSubstring) {
				t.Errorf("LoadCA = %v, want an error containing %q", err, tc.wantSubstring)
			}
		})
	}
}

func sec1(t *testing.T, ca *CA) []byte {
	der, err := x509.MarshalECPrivateKey(ca.Key.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}

func TestIssueServer(t *testing.T) {
	ca := newCA(t, 1, "test")
	certPEM, keyPEM, err := ca.IssueServer(testRand(2), testNow, []string{"127.0.0.1", "localhost", "::1", "KBS.example.com", "127.0.0.1", "kbs.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	c := parseCert(t, certPEM)
	var ips []string
	for _, ip := range c.IPAddresses {
		ips = append(ips, ip.String())
	}
	got := struct {
		DNS, IPs  []string
		EKU       []x509.ExtKeyUsage
		IsCA      bool
		NotAfter  time.Time
		ChainsOK  bool
		KeyPEMTyp string
	}{DNS: c.DNSNames, IPs: ips, EKU: c.ExtKeyUsage, IsCA: c.IsCA, NotAfter: c.NotAfter}
	got.ChainsOK = c.CheckSignatureFrom(ca.Cert) == nil
	if b, _ := pem.Decode(keyPEM); b != nil {
		got.KeyPEMTyp = b.Type
	}
	want := struct {
		DNS, IPs  []string
		EKU       []x509.ExtKeyUsage
		IsCA      bool
		NotAfter  time.Time
		ChainsOK  bool
		KeyPEMTyp string
	}{
		DNS: []string{"localhost", "kbs.example.com"}, IPs: []string{"127.0.0.1", "::1"},
		EKU: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, NotAfter: testNow.Add(ServerValidity),
		ChainsOK: true, KeyPEMTyp: "PRIVATE KEY",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("IssueServer certificate (-want +got):\n%s", diff)
	}

	for _, hosts := range [][]string{nil, {""}, {"a b"}, {"kbs:8443"}, {"-bad.example"}, {"a..b"}, {"[::1]"}} {
		if _, _, err := ca.IssueServer(testRand(2), testNow, hosts); err == nil {
			t.Errorf("IssueServer(%q) succeeded, want an error", hosts)
		}
	}
}

func TestIssueClient(t *testing.T) {
	ca := newCA(t, 1, "test")
	certPEM, _, err := ca.IssueClient(testRand(2), testNow, RoleAuditor, "bob")
	if err != nil {
		t.Fatal(err)
	}
	c := parseCert(t, certPEM)
	type summary struct {
		CN       string
		OU       []string
		EKU      []x509.ExtKeyUsage
		NotAfter time.Time
	}
	want := summary{"bob", []string{"auditor"}, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, testNow.Add(ClientValidity)}
	if diff := cmp.Diff(want, summary{c.Subject.CommonName, c.Subject.OrganizationalUnit, c.ExtKeyUsage, c.NotAfter}); diff != "" {
		t.Errorf("IssueClient certificate (-want +got):\n%s", diff)
	}
	if _, _, err := ca.IssueClient(testRand(2), testNow, "root", "eve"); err == nil {
		t.Error("IssueClient with role root succeeded")
	}
	if _, _, err := ca.IssueClient(testRand(2), testNow, RoleAdmin, ""); err == nil {
		t.Error("IssueClient with an empty name succeeded")
	}
}

func TestIssueValidityBounds(t *testing.T) {
	ca := newCA(t, 1, "test")
	// Near the end of the CA's life a leaf is cut off at the CA's expiry.
	late := ca.Cert.NotAfter.Add(-24 * time.Hour)
	certPEM, _, err := ca.IssueClient(testRand(2), late, RoleAdmin, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if got := parseCert(t, certPEM).NotAfter; !got.Equal(ca.Cert.NotAfter) {
		t.Errorf("client certificate issued a day before CA expiry: NotAfter = %v, want the CA's %v", got, ca.Cert.NotAfter)
	}
	// An expired CA (or a clock before it) issues nothing.
	for _, at := range []time.Time{ca.Cert.NotAfter.Add(time.Second), ca.Cert.NotBefore.Add(-time.Second)} {
		if _, _, err := ca.IssueServer(testRand(2), at, []string{"localhost"}); err == nil {
			t.Errorf("IssueServer at %v, outside the CA's validity, succeeded", at)
		}
	}
}

func TestRoleOf(t *testing.T) {
	ca := newCA(t, 1, "test")
	adminPEM, _, err := ca.IssueClient(testRand(2), testNow, RoleAdmin, "alice")
	if err != nil {
		t.Fatal(err)
	}
	auditorPEM, _, err := ca.IssueClient(testRand(3), testNow, RoleAuditor, "bob")
	if err != nil {
		t.Fatal(err)
	}
	serverPEM, _, err := ca.IssueServer(testRand(4), testNow, []string{"localhost"})
	if err != nil {
		t.Fatal(err)
	}
	client := func(ou ...string) *x509.Certificate {
		p, _ := issueCustom(t, ca, &x509.Certificate{
			Subject:     pkix.Name{CommonName: "eve", OrganizationalUnit: ou},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		})
		return parseCert(t, p)
	}
	noEKU, _ := issueCustom(t, ca, &x509.Certificate{Subject: pkix.Name{CommonName: "eve", OrganizationalUnit: []string{"admin"}}})
	serverWithOU, _ := issueCustom(t, ca, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "eve", OrganizationalUnit: []string{"admin"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})

	for _, tc := range []struct {
		name string
		cert *x509.Certificate
		want Role
		// wantReason is a substring of the error; "" means no error.
		wantReason string
	}{
		{"admin", parseCert(t, adminPEM), RoleAdmin, ""},
		{"auditor", parseCert(t, auditorPEM), RoleAuditor, ""},
		{"no certificate", nil, "", "no client certificate"},
		{"two OUs admin+auditor", client("auditor", "admin"), "", "has 2 organizational units"},
		{"two OUs admin twice", client("admin", "admin"), "", "has 2 organizational units"},
		{"no OU", client(), "", "has 0 organizational units"},
		{"unknown OU", client("root"), "", `unknown role "root"`},
		{"role in wrong case", client("Admin"), "", `unknown role "Admin"`},
		{"server certificate", parseCert(t, serverPEM), "", "not a client-authentication certificate"},
		{"server certificate with admin OU", parseCert(t, serverWithOU), "", "not a client-authentication certificate"},
		{"no extended key usage", parseCert(t, noEKU), "", "not a client-authentication certificate"},
		{"the CA itself", ca.Cert, "", "is a CA certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := RoleOf(tc.cert)
			if got != tc.want {
				t.Errorf("RoleOf = %q, want %q", got, tc.want)
			}
			switch {
			case tc.wantReason == "" && err != nil:
				t.Errorf("RoleOf error = %v, want nil", err)
			case tc.wantReason != "" && (!errors.Is(err, ErrNoRole) || !strings.Contains(err.Error(), tc.wantReason)):
				t.Errorf("RoleOf error = %v, want ErrNoRole with %q", err, tc.wantReason)
			}
		})
	}
}

// handshakeResult is what each side of a TLS handshake saw.
type handshakeResult struct {
	// Server and Client classify each side's error ("" = none).
	Server, Client string
	// PeerCerts is how many certificates the server saw from the client.
	PeerCerts int
	// Verified reports whether the server verified a client chain.
	Verified bool
	// Role is RoleOf the verified client certificate, or its error class.
	Role string
}

// handshake runs a TLS handshake over loopback TCP, then has the server
// send one byte that the client reads, so a rejection by the server (which
// in TLS 1.3 happens after the client's Handshake returns) reaches the
// client as an error.
func handshake(t *testing.T, serverCfg, clientCfg *tls.Config) handshakeResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	type serverOut struct {
		res handshakeResult
		err error
	}
	done := make(chan serverOut, 1)
	go func() { // exits when the handshake ends or ctx expires
		var out serverOut
		defer func() { done <- out }()
		raw, err := ln.Accept()
		if err != nil {
			out.err = err
			return
		}
		defer raw.Close()
		conn := tls.Server(raw, serverCfg)
		if err := conn.HandshakeContext(ctx); err != nil {
			out.err = err
			return
		}
		st := conn.ConnectionState()
		out.res.PeerCerts = len(st.PeerCertificates)
		out.res.Verified = len(st.VerifiedChains) > 0
		if out.res.Verified {
			if r, err := RoleOf(st.VerifiedChains[0][0]); err != nil {
				out.res.Role = "error"
			} else {
				out.res.Role = string(r)
			}
		}
		_, out.err = conn.Write([]byte{1})
	}()

	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	conn := tls.Client(raw, clientCfg)
	cerr := conn.HandshakeContext(ctx)
	if cerr == nil {
		var b [1]byte
		_, cerr = io.ReadFull(conn, b[:])
	}
	conn.Close()
	out := <-done
	out.res.Server = classify(out.err)
	out.res.Client = classify(cerr)
	return out.res
}

// classify names why a handshake failed, so tests state the reason they
// expect rather than just "an error".
func classify(err error) string {
	var (
		unknown  x509.UnknownAuthorityError
		invalid  x509.CertificateInvalidError
		hostname x509.HostnameError
	)
	switch {
	case err == nil:
		return ""
	case errors.As(err, &unknown):
		return "unknown authority"
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return "expired"
	case errors.As(err, &invalid) && invalid.Reason == x509.IncompatibleUsage:
		return "incompatible usage"
	case errors.As(err, &hostname):
		return "wrong host"
	case strings.Contains(err.Error(), "remote error"):
		return "rejected by peer"
	case strings.Contains(err.Error(), "protocol version"), strings.Contains(err.Error(), "unsupported versions"):
		return "protocol version"
	default:
		return "other: " + err.Error()
	}
}

func TestHandshake(t *testing.T) {
	ca := newCA(t, 1, "test")
	other := newCA(t, 2, "other")
	caPEM := ca.CertPEM()

	serverCert, serverKey, err := ca.IssueServer(testRand(3), testNow, []string{"127.0.0.1", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	rogueServerCert, rogueServerKey, err := other.IssueServer(testRand(4), testNow, []string{"127.0.0.1", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	adminCert, adminKey, err := ca.IssueClient(testRand(5), testNow, RoleAdmin, "alice")
	if err != nil {
		t.Fatal(err)
	}
	auditorCert, auditorKey, err := ca.IssueClient(testRand(6), testNow, RoleAuditor, "bob")
	if err != nil {
		t.Fatal(err)
	}
	rogueAdminCert, rogueAdminKey, err := other.IssueClient(testRand(7), testNow, RoleAdmin, "mallory")
	if err != nil {
		t.Fatal(err)
	}

	at := func(cfg *tls.Config, now time.Time) *tls.Config {
		cfg.Time = func() time.Time { return now }
		return cfg
	}
	server := func(cert, key []byte, now time.Time) *tls.Config {
		cfg, err := ServerTLS(cert, key, caPEM)
		if err != nil {
			t.Fatal(err)
		}
		return at(cfg, now)
	}
	client := func(ca, cert, key []byte, name string) *tls.Config {
		cfg, err := ClientTLS(ca, cert, key, name)
		if err != nil {
			t.Fatal(err)
		}
		return at(cfg, testNow)
	}
	good := func() *tls.Config { return server(serverCert, serverKey, testNow) }

	// Go's client sends a certificate only if the server's
	// CertificateRequest lists its issuer; an attacker sends it anyway.
	forced := func(cert, key []byte) *tls.Config {
		cfg := client(caPEM, nil, nil, "localhost")
		pair, err := tls.X509KeyPair(cert, key)
		if err != nil {
			t.Fatal(err)
		}
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &pair, nil }
		return cfg
	}

	tls12 := client(caPEM, nil, nil, "localhost")
	tls12.MinVersion, tls12.MaxVersion = tls.VersionTLS12, tls.VersionTLS12

	for _, tc := range []struct {
		name           string
		server, client *tls.Config
		want           handshakeResult
	}{
		{"admin", good(), client(caPEM, adminCert, adminKey, "127.0.0.1"),
			handshakeResult{PeerCerts: 1, Verified: true, Role: "admin"}},
		{"auditor", good(), client(caPEM, auditorCert, auditorKey, "localhost"),
			handshakeResult{PeerCerts: 1, Verified: true, Role: "auditor"}},
		{"guest without a client certificate", good(), client(caPEM, nil, nil, "localhost"),
			handshakeResult{}},
		// Attacks, each with its own reason.
		{"client certificate from another CA, forced", good(), forced(rogueAdminCert, rogueAdminKey),
			handshakeResult{Server: "unknown authority", Client: "rejected by peer"}},
		{"client certificate from another CA, offered: Go's client withholds it, no role", good(), client(caPEM, rogueAdminCert, rogueAdminKey, "localhost"),
			handshakeResult{}},
		{"admin certificate forced: same as offered", good(), forced(adminCert, adminKey),
			handshakeResult{PeerCerts: 1, Verified: true, Role: "admin"}},
		{"expired client certificate", server(serverCert, serverKey, testNow.Add(ClientValidity+time.Hour)), client(caPEM, adminCert, adminKey, "localhost"),
			handshakeResult{Server: "expired", Client: "rejected by peer"}},
		{"server certificate used as a client certificate", good(), client(caPEM, serverCert, serverKey, "localhost"),
			handshakeResult{Server: "incompatible usage", Client: "rejected by peer"}},
		{"server certificate from another CA", server(rogueServerCert, rogueServerKey, testNow), client(caPEM, nil, nil, "localhost"),
			handshakeResult{Server: "rejected by peer", Client: "unknown authority"}},
		{"admin client certificate used as a server certificate", server(adminCert, adminKey, testNow), client(caPEM, nil, nil, "localhost"),
			handshakeResult{Server: "rejected by peer", Client: "wrong host"}},
		{"server name not in the certificate", good(), client(caPEM, nil, nil, "kbs.example.com"),
			handshakeResult{Server: "rejected by peer", Client: "wrong host"}},
		{"client trusts another CA", good(), client(other.CertPEM(), adminCert, adminKey, "localhost"),
			handshakeResult{Server: "rejected by peer", Client: "unknown authority"}},
		{"TLS 1.2 client", good(), tls12,
			handshakeResult{Server: "protocol version", Client: "rejected by peer"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, handshake(t, tc.server, tc.client)); diff != "" {
				t.Errorf("handshake (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTLSConfigErrors(t *testing.T) {
	ca := newCA(t, 1, "test")
	certPEM, keyPEM, err := ca.IssueServer(testRand(2), testNow, []string{"localhost"})
	if err != nil {
		t.Fatal(err)
	}
	_, otherKey, err := ca.IssueServer(testRand(3), testNow, []string{"localhost"})
	if err != nil {
		t.Fatal(err)
	}
	caPEM := ca.CertPEM()
	for _, tc := range []struct {
		name string
		fn   func() error
	}{
		{"server: key of another certificate", func() error { _, err := ServerTLS(certPEM, otherKey, caPEM); return err }},
		{"server: no client CA", func() error { _, err := ServerTLS(certPEM, keyPEM, nil); return err }},
		{"server: client CA is a key", func() error { _, err := ServerTLS(certPEM, keyPEM, keyPEM); return err }},
		{"client: no CA", func() error { _, err := ClientTLS(nil, nil, nil, "localhost"); return err }},
		{"client: certificate without key", func() error { _, err := ClientTLS(caPEM, certPEM, nil, "localhost"); return err }},
		{"client: key without certificate", func() error { _, err := ClientTLS(caPEM, nil, keyPEM, "localhost"); return err }},
		{"client: mismatched pair", func() error { _, err := ClientTLS(caPEM, certPEM, otherKey, "localhost"); return err }},
	} {
		if err := tc.fn(); err == nil {
			t.Errorf("%s: succeeded, want an error", tc.name)
		}
	}
	cfg, err := ServerTLS(certPEM, keyPEM, caPEM)
	if err != nil {
		t.Fatal(err)
	}
	got := []any{cfg.MinVersion, cfg.ClientAuth}
	if diff := cmp.Diff([]any{uint16(tls.VersionTLS13), tls.VerifyClientCertIfGiven}, got); diff != "" {
		t.Errorf("ServerTLS (-want +got):\n%s", diff)
	}
}

func TestKeyRoundTrip(t *testing.T) {
	ca := newCA(t, 1, "test")
	b, err := EncodeKey(ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ParseKey(b)
	if err != nil {
		t.Fatal(err)
	}
	if !publicKeysEqual(k.Public(), ca.Key.Public()) {
		t.Error("ParseKey(EncodeKey(k)) is another key")
	}
	for _, bad := range [][]byte{nil, []byte("junk"), append(bytes.Clone(b), b...), ca.CertPEM()} {
		if _, err := ParseKey(bad); err == nil {
			t.Errorf("ParseKey(%.20q...) succeeded", bad)
		}
	}
}

// FuzzRoleOf feeds arbitrary DER to the parser and RoleOf: no panic, and a
// role is returned only for a known role.
func FuzzRoleOf(f *testing.F) {
	ca := newCA(f, 1, "fuzz")
	for _, role := range []Role{RoleAdmin, RoleAuditor} {
		p, _, err := ca.IssueClient(testRand(2), testNow, role, "seed")
		if err != nil {
			f.Fatal(err)
		}
		f.Add(parseCert(f, p).Raw)
	}
	f.Add(ca.Cert.Raw)
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, der []byte) {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return
		}
		r, err := RoleOf(c)
		if err == nil && !r.valid() {
			t.Fatalf("RoleOf = %q, nil", r)
		}
		if err != nil && (r != "" || !errors.Is(err, ErrNoRole)) {
			t.Fatalf("RoleOf = %q, %v; want \"\" and ErrNoRole", r, err)
		}
	})
}

// FuzzLoadCA checks the PEM parsers on arbitrary input: no panic, and a
// loaded CA is a CA whose key matches.
func FuzzLoadCA(f *testing.F) {
	ca := newCA(f, 1, "fuzz")
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(ca.CertPEM(), keyPEM)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"), []byte("-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n"))
	f.Add([]byte{}, []byte{})
	f.Fuzz(func(t *testing.T, certPEM, keyPEM []byte) {
		got, err := LoadCA(certPEM, keyPEM)
		if err != nil {
			return
		}
		if !got.Cert.IsCA || !publicKeysEqual(got.Key.Public(), got.Cert.PublicKey) {
			t.Fatal("LoadCA accepted a non-CA or a mismatched key")
		}
	})
}

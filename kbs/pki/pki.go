// Package pki is the key broker's own small public-key infrastructure: one
// CA per installation, a server certificate for the broker's TLS endpoint,
// and client certificates for the admin API whose role (admin, auditor) is
// the certificate's single Subject OrganizationalUnit.
//
// The broker always speaks TLS 1.3 (plaintext only on loopback, by explicit
// configuration in package config). ServerTLS verifies a client certificate
// when one is presented and accepts connections without one, because guests
// authenticate by attestation, not by certificate. Admin RPCs are
// authorized per RPC: the server takes the verified peer certificate and
// asks RoleOf for its role; no certificate, or no valid role, is a denial.
//
// All keys are ECDSA P-256 and are exchanged as PKCS#8 PEM ("PRIVATE
// KEY"); certificates as PEM ("CERTIFICATE"). The rand arguments supply
// certificate serial numbers. Since Go 1.26 the standard library generates
// keys and randomizes signatures from its own secure source and ignores
// rand unless GODEBUG=cryptocustomrand=1, so tests that need reproducible
// keys use testing/cryptotest.SetGlobalRandom.
//
// Nothing here reads the clock: issuance takes now, and the TLS
// configurations use crypto/tls's clock unless the caller sets
// tls.Config.Time. A CA's methods may be called concurrently when the rand
// readers passed to them are safe for concurrent use (crypto/rand.Reader
// is).
package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"slices"
	"strings"
	"time"
)

// Role is what an admin client may do; it is carried in the client
// certificate's Subject OrganizationalUnit.
type Role string

// Roles.
const (
	// RoleAdmin may change resources, policies and reference values.
	RoleAdmin Role = "admin"
	// RoleAuditor may read configuration and the audit log, never secrets,
	// and change nothing.
	RoleAuditor Role = "auditor"
)

// Validity periods.
const (
	CAValidity     = 10 * 365 * 24 * time.Hour
	ServerValidity = 2 * 365 * 24 * time.Hour
	ClientValidity = 365 * 24 * time.Hour
	// backdate is subtracted from now for NotBefore, so that a peer whose
	// clock is a little behind accepts a certificate issued moments ago.
	backdate = 5 * time.Minute
)

// ErrNoRole is wrapped by RoleOf when a certificate does not carry exactly
// one known role. The server maps it to "permission denied".
var ErrNoRole = errors.New("pki: certificate carries no valid role")

// CA is the installation's certificate authority.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// NewCA creates a CA with an ECDSA P-256 key, valid for ten years from
// now, with common name "cvm-kbs CA <name>". It can sign only end-entity
// certificates (MaxPathLen 0).
func NewCA(rand io.Reader, now time.Time, name string) (*CA, error) {
	if name == "" {
		return nil, errors.New("pki: new CA: empty name")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand)
	if err != nil {
		return nil, fmt.Errorf("pki: new CA: %w", err)
	}
	sn, err := serial(rand)
	if err != nil {
		return nil, fmt.Errorf("pki: new CA: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: "cvm-kbs CA " + name},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("pki: new CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: new CA: %w", err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// LoadCA parses a CA written as CertPEM and KeyPEM: exactly one CA
// certificate, and the PKCS#8 key that matches it.
func LoadCA(certPEM, keyPEM []byte) (*CA, error) {
	certs, err := parseCerts(certPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: load CA: certificate: %w", err)
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("pki: load CA: want 1 certificate, found %d", len(certs))
	}
	cert := certs[0]
	if !cert.IsCA || !cert.BasicConstraintsValid || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("pki: load CA: %q is not a CA certificate", cert.Subject.CommonName)
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: load CA: key: %w", err)
	}
	if !publicKeysEqual(key.Public(), cert.PublicKey) {
		return nil, errors.New("pki: load CA: key does not match the certificate")
	}
	return &CA{Cert: cert, Key: key}, nil
}

// CertPEM returns the CA certificate, PEM-encoded.
func (ca *CA) CertPEM() []byte { return encodeCert(ca.Cert.Raw) }

// KeyPEM returns the CA key as PKCS#8 PEM. Write it with mode 0600.
func (ca *CA) KeyPEM() ([]byte, error) { return EncodeKey(ca.Key) }

// IssueServer issues a TLS server certificate, valid for two years (never
// past the CA's own expiry), naming hosts as subject alternative names:
// each host is an IP address ("127.0.0.1", "::1") or a DNS name
// ("localhost", "kbs.example.com").
func (ca *CA) IssueServer(rand io.Reader, now time.Time, hosts []string) (certPEM, keyPEM []byte, err error) {
	if len(hosts) == 0 {
		return nil, nil, errors.New("pki: issue server certificate: no hosts")
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "cvm-kbs server"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			if !slices.ContainsFunc(tmpl.IPAddresses, ip.Equal) {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			}
			continue
		}
		if !validDNSName(h) {
			return nil, nil, fmt.Errorf("pki: issue server certificate: host %q is neither an IP address nor a DNS name", h)
		}
		h = strings.ToLower(h)
		if !slices.Contains(tmpl.DNSNames, h) {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	certPEM, keyPEM, err = ca.issue(rand, now, ServerValidity, tmpl)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: issue server certificate: %w", err)
	}
	return certPEM, keyPEM, nil
}

// IssueClient issues an admin-API client certificate for role, valid for
// one year (never past the CA's own expiry), with common name name and the
// role as its only OrganizationalUnit.
func (ca *CA) IssueClient(rand io.Reader, now time.Time, role Role, name string) (certPEM, keyPEM []byte, err error) {
	if !role.valid() {
		return nil, nil, fmt.Errorf("pki: issue client certificate: unknown role %q", role)
	}
	if name == "" {
		return nil, nil, errors.New("pki: issue client certificate: empty name")
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: name, OrganizationalUnit: []string{string(role)}},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	certPEM, keyPEM, err = ca.issue(rand, now, ClientValidity, tmpl)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: issue client certificate: %w", err)
	}
	return certPEM, keyPEM, nil
}

// issue completes tmpl (serial, validity, end entity) and signs it with a
// new P-256 key.
func (ca *CA) issue(rand io.Reader, now time.Time, validity time.Duration, tmpl *x509.Certificate) (certPEM, keyPEM []byte, err error) {
	if now.Before(ca.Cert.NotBefore) || now.After(ca.Cert.NotAfter) {
		return nil, nil, fmt.Errorf("CA certificate is not valid at %s (valid %s to %s)",
			now.UTC().Format(time.RFC3339), ca.Cert.NotBefore.UTC().Format(time.RFC3339), ca.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand)
	if err != nil {
		return nil, nil, err
	}
	if tmpl.SerialNumber, err = serial(rand); err != nil {
		return nil, nil, err
	}
	tmpl.NotBefore = now.Add(-backdate)
	if tmpl.NotBefore.Before(ca.Cert.NotBefore) {
		tmpl.NotBefore = ca.Cert.NotBefore
	}
	tmpl.NotAfter = now.Add(validity)
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	tmpl.BasicConstraintsValid = true
	tmpl.IsCA = false
	der, err := x509.CreateCertificate(rand, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err = EncodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return encodeCert(der), keyPEM, nil
}

// RoleOf returns the role of an admin client certificate: its Subject
// must carry exactly one OrganizationalUnit, and that must be a known role;
// the certificate must be an end-entity certificate for client
// authentication. Anything else is an error wrapping ErrNoRole.
//
// RoleOf does not verify the certificate: call it only on a peer
// certificate that TLS verified against the broker's client CA
// (tls.ConnectionState.VerifiedChains non-empty).
func RoleOf(cert *x509.Certificate) (Role, error) {
	if cert == nil {
		return "", fmt.Errorf("%w: no client certificate", ErrNoRole)
	}
	if cert.IsCA {
		return "", fmt.Errorf("%w: %q is a CA certificate", ErrNoRole, cert.Subject.CommonName)
	}
	if !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		return "", fmt.Errorf("%w: %q is not a client-authentication certificate", ErrNoRole, cert.Subject.CommonName)
	}
	ous := cert.Subject.OrganizationalUnit
	if len(ous) != 1 {
		return "", fmt.Errorf("%w: %q has %d organizational units, want exactly 1 (the role)", ErrNoRole, cert.Subject.CommonName, len(ous))
	}
	r := Role(ous[0])
	if !r.valid() {
		return "", fmt.Errorf("%w: %q has unknown role %q", ErrNoRole, cert.Subject.CommonName, ous[0])
	}
	return r, nil
}

func (r Role) valid() bool { return r == RoleAdmin || r == RoleAuditor }

// ServerTLS returns the broker's TLS configuration: TLS 1.3 only, the
// server certificate certPEM with its key keyPEM, and client certificates
// verified against clientCAPEM when a client presents one. A client
// without a certificate (a guest) completes the handshake; a client with a
// certificate that does not verify (another CA, expired, not for client
// authentication) does not.
func ServerTLS(certPEM, keyPEM, clientCAPEM []byte) (*tls.Config, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: server TLS: certificate and key: %w", err)
	}
	pool, err := certPool(clientCAPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: server TLS: client CA: %w", err)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{pair},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    pool,
	}, nil
}

// ClientTLS returns a client's TLS configuration: TLS 1.3 only, trusting
// only the CA in caPEM for the server certificate, which must name
// serverName (a DNS name or an IP address; "" lets gRPC fill it in from
// the dial target). Admin clients pass their certificate and key; guests
// pass nil for both.
func ClientTLS(caPEM []byte, certPEM, keyPEM []byte, serverName string) (*tls.Config, error) {
	pool, err := certPool(caPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: client TLS: CA: %w", err)
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    pool,
		ServerName: serverName,
	}
	switch {
	case certPEM == nil && keyPEM == nil:
	case certPEM == nil || keyPEM == nil:
		return nil, errors.New("pki: client TLS: certificate and key must be given together")
	default:
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("pki: client TLS: certificate and key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// certPool parses a non-empty sequence of PEM certificates into a pool.
func certPool(b []byte) (*x509.CertPool, error) {
	certs, err := parseCerts(b)
	if err != nil {
		return nil, err
	}
	if len(certs) == 0 {
		return nil, errors.New("no certificate")
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}

// ParseCertificates parses a sequence of PEM CERTIFICATE blocks and
// nothing else (other block types and trailing non-PEM data are errors).
// An input without any block yields no certificates and no error.
func ParseCertificates(b []byte) ([]*x509.Certificate, error) {
	certs, err := parseCerts(b)
	if err != nil {
		return nil, fmt.Errorf("pki: parse certificates: %w", err)
	}
	return certs, nil
}

func parseCerts(b []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for n := 1; ; n++ {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != pemCertificate {
			return nil, fmt.Errorf("PEM block %d is %q, want %s", n, block.Type, pemCertificate)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", n, err)
		}
		certs = append(certs, c)
	}
	if rest := bytes.TrimSpace(b); len(rest) != 0 {
		return nil, fmt.Errorf("%d bytes of data that are not PEM", len(rest))
	}
	return certs, nil
}

// serial returns a random positive 127-bit certificate serial number.
func serial(rand io.Reader) (*big.Int, error) {
	var b [16]byte
	if _, err := io.ReadFull(rand, b[:]); err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	b[0] &= 0x7f
	b[0] |= 0x40 // never zero, always 16 bytes of DER
	return new(big.Int).SetBytes(b[:]), nil
}

// validDNSName reports whether h is a plausible DNS name for a SAN:
// letters, digits, hyphens and underscores in dot-separated labels of 1 to
// 63 characters, at most 253 in all.
func validDNSName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range []byte(label) {
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

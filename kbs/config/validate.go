package config

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/greatjail/cvm/attestation/sim"
	"github.com/greatjail/cvm/kbs/pki"
)

// KeySize is the size of a key-encryption key and of the challenge key.
const KeySize = 32

// Bounds Validate enforces.
const (
	MinMaxMessageBytes     = 4 << 10
	MaxMaxMessageBytes     = 64 << 20
	MinLifetime            = Duration(time.Second)
	MaxChallengeLifetime   = Duration(time.Hour)
	MaxTokenLifetime       = Duration(24 * time.Hour)
	MinRequestTimeout      = Duration(time.Second)
	MaxRequestTimeout      = Duration(10 * time.Minute)
	MaxChallengesPerSecond = 1000000
	MaxChallengeBurst      = 1000000
)

// Material is what the files a Server names hold, read and checked.
type Material struct {
	// TLS is the server's TLS configuration (pki.ServerTLS); nil with
	// InsecurePlaintext.
	TLS *tls.Config
	// KEKs are the key-encryption keys, KeySize bytes each; KEKs[0] is
	// current.
	KEKs [][]byte
	// TokenKey signs tokens.
	TokenKey *ecdsa.PrivateKey
	// ChallengeKey authenticates challenges, KeySize bytes.
	ChallengeKey []byte
	// SimRoot is the simulated TEE's root PEM, for sim.NewVerifier; nil
	// when simulated evidence is not trusted.
	SimRoot []byte
	// TrustedAKs are the TPM attestation keys (*rsa.PublicKey,
	// *ecdsa.PublicKey), in the order of TPM.TrustedAKs.
	TrustedAKs []crypto.PublicKey
}

// Validate checks s as LoadServer leaves it, with defaults applied:
// addresses, the plaintext rule, bounds, and every file it names, which
// must exist and hold what the field says (key files are read and
// parsed). It lists every problem, each naming its field, in an *Error.
// Relative paths in a Server built in code are relative to the working
// directory.
func (s *Server) Validate() error {
	_, ps := s.check()
	return ps.err("")
}

// LoadMaterial reads and parses the files s names. It fails with an
// *Error, as Validate does, if any is missing or wrong.
func (s *Server) LoadMaterial() (*Material, error) {
	m, ps := s.check()
	if err := ps.err(""); err != nil {
		return nil, err
	}
	return m, nil
}

// check validates s and, as far as it can, reads its material.
func (s *Server) check() (*Material, problems) {
	var ps problems
	m := &Material{}

	checkAddress(&ps, "listen", s.Listen)
	switch s.MetricsListen {
	case MetricsOff:
	case s.Listen:
		ps.add("metrics_listen", "is the same address as listen")
	default:
		checkAddress(&ps, "metrics_listen", s.MetricsListen)
	}

	if s.InsecurePlaintext {
		if !isLoopback(s.Listen) {
			ps.add("insecure_plaintext", "allowed only when listen is a loopback IP address such as 127.0.0.1:8443 or [::1]:8443; listen is %q", s.Listen)
		}
		if s.TLS != (TLS{}) {
			ps.add("tls", "must be empty when insecure_plaintext is set: a plaintext server uses no certificate")
		}
	} else {
		m.TLS = checkTLS(&ps, s.TLS)
	}

	if s.Store == "" {
		ps.add("store", "required")
	} else if st, err := os.Stat(s.Store); err == nil && st.IsDir() {
		ps.add("store", "%s is a directory, want a database file", s.Store)
	} else if st, err := os.Stat(filepath.Dir(s.Store)); err != nil || !st.IsDir() {
		ps.add("store", "directory %s does not exist", filepath.Dir(s.Store))
	}

	if len(s.KEKFiles) == 0 {
		ps.add("kek_files", "at least one key-encryption key file is required")
	}
	seen := map[string]string{} // key hex -> field
	for i, f := range s.KEKFiles {
		field := "kek_files[" + strconv.Itoa(i) + "]"
		k, err := ReadKeyFile(f)
		if err != nil {
			ps.add(field, "%v", err)
			continue
		}
		if other, dup := seen[string(k)]; dup {
			ps.add(field, "same key as %s", other)
			continue
		}
		seen[string(k)] = field
		m.KEKs = append(m.KEKs, k)
	}

	if s.TokenKey == "" {
		ps.add("token_key", "required")
	} else if k, err := readSigningKey(s.TokenKey); err != nil {
		ps.add("token_key", "%v", err)
	} else {
		m.TokenKey = k
	}

	if s.ChallengeKey == "" {
		ps.add("challenge_key", "required")
	} else if k, err := ReadKeyFile(s.ChallengeKey); err != nil {
		ps.add("challenge_key", "%v", err)
	} else if other, dup := seen[string(k)]; dup {
		ps.add("challenge_key", "same key as %s: use separate keys", other)
	} else {
		m.ChallengeKey = k
	}

	checkDuration(&ps, "challenge_lifetime", s.ChallengeLifetime, MinLifetime, MaxChallengeLifetime)
	checkDuration(&ps, "token_lifetime", s.TokenLifetime, MinLifetime, MaxTokenLifetime)

	if s.SimRoot != "" {
		if b, err := readFile(s.SimRoot); err != nil {
			ps.add("sim_root", "%v", err)
		} else if err := checkSimRoot(b); err != nil {
			ps.add("sim_root", "%s: %v", s.SimRoot, err)
		} else {
			m.SimRoot = b
		}
	}

	if d := s.SNP.CertCache; d != "" {
		if st, err := os.Stat(d); err == nil && !st.IsDir() {
			ps.add("snp.cert_cache", "%s is not a directory", d)
		}
	}
	if d := s.TDX.CollateralDir; d != "" {
		if st, err := os.Stat(d); err != nil {
			ps.add("tdx.collateral_dir", "%v", err)
		} else if !st.IsDir() {
			ps.add("tdx.collateral_dir", "%s is not a directory", d)
		}
	}
	if u := s.TDX.PCSURL; u != "" {
		if pu, err := url.Parse(u); err != nil || (pu.Scheme != "https" && pu.Scheme != "http") || pu.Host == "" {
			ps.add("tdx.pcs_url", "%q is not an http or https URL", u)
		}
	}
	for i, f := range s.TPM.TrustedAKs {
		field := "tpm.trusted_aks[" + strconv.Itoa(i) + "]"
		if k, err := readPublicKey(f); err != nil {
			ps.add(field, "%v", err)
		} else {
			m.TrustedAKs = append(m.TrustedAKs, k)
		}
	}

	l := s.Limits
	if l.MaxMessageBytes < MinMaxMessageBytes || l.MaxMessageBytes > MaxMaxMessageBytes {
		ps.add("limits.max_message_bytes", "%d is outside %d to %d", l.MaxMessageBytes, MinMaxMessageBytes, MaxMaxMessageBytes)
	}
	if !(l.ChallengesPerSecond > 0 && l.ChallengesPerSecond <= MaxChallengesPerSecond) || math.IsNaN(l.ChallengesPerSecond) {
		ps.add("limits.challenges_per_second", "%v is outside (0, %d]", l.ChallengesPerSecond, MaxChallengesPerSecond)
	}
	if l.ChallengeBurst < 1 || l.ChallengeBurst > MaxChallengeBurst {
		ps.add("limits.challenge_burst", "%d is outside 1 to %d", l.ChallengeBurst, MaxChallengeBurst)
	}
	checkDuration(&ps, "limits.request_timeout", l.RequestTimeout, MinRequestTimeout, MaxRequestTimeout)
	return m, ps
}

func checkTLS(ps *problems, t TLS) *tls.Config {
	var certPEM, keyPEM, caPEM []byte
	read := func(field, path string, parse func([]byte) error) []byte {
		if path == "" {
			ps.add(field, "required (or set insecure_plaintext on a loopback listen address)")
			return nil
		}
		b, err := readFile(path)
		if err != nil {
			ps.add(field, "%v", err)
			return nil
		}
		if err := parse(b); err != nil {
			ps.add(field, "%s: %v", path, err)
			return nil
		}
		return b
	}
	certPEM = read("tls.cert", t.Cert, nonEmptyCerts)
	keyPEM = read("tls.key", t.Key, func(b []byte) error { _, err := pki.ParseKey(b); return err })
	caPEM = read("tls.client_ca", t.ClientCA, nonEmptyCerts)
	if certPEM == nil || keyPEM == nil || caPEM == nil {
		return nil
	}
	cfg, err := pki.ServerTLS(certPEM, keyPEM, caPEM)
	if err != nil {
		ps.add("tls.key", "does not match tls.cert: %v", err)
		return nil
	}
	return cfg
}

func nonEmptyCerts(b []byte) error {
	certs, err := pki.ParseCertificates(b)
	if err != nil {
		return err
	}
	if len(certs) == 0 {
		return errors.New("no PEM certificate")
	}
	return nil
}

func checkSimRoot(b []byte) error {
	if err := nonEmptyCerts(b); err != nil {
		return err
	}
	// The verifier is built only to apply sim's own checks (every
	// certificate a simulated-TEE certificate); its clock is never called.
	_, err := sim.NewVerifier(b, func() time.Time { return time.Time{} })
	return err
}

func checkDuration(ps *problems, field string, d, lo, hi Duration) {
	if d < lo || d > hi {
		ps.add(field, "%v is outside %v to %v", d, lo, hi)
	}
}

// checkAddress checks a host:port listen or dial address.
func checkAddress(ps *problems, field, addr string) {
	if _, err := splitAddress(addr); err != nil {
		ps.add(field, "%v", err)
	}
}

// splitAddress checks host:port (host may be empty: all interfaces) and
// returns the host.
func splitAddress(addr string) (host string, err error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("%q is not host:port (IPv6 hosts in brackets: [::1]:8443)", addr)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || port != strconv.FormatUint(n, 10) {
		return "", fmt.Errorf("%q: port %q is not a number from 0 to 65535", addr, port)
	}
	return host, nil
}

// isLoopback reports whether addr's host is a loopback IP literal. Names,
// even "localhost", do not count: what they resolve to is not ours to
// vouch for.
func isLoopback(addr string) bool {
	host, err := splitAddress(addr)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Zone() == "" && ip.Unmap().IsLoopback()
}

// ReadKeyFile reads a key file as Init writes kek.key and challenge.key:
// KeySize bytes in hex (surrounding white space ignored).
func ReadKeyFile(path string) ([]byte, error) {
	b, err := readFile(path)
	if err != nil {
		return nil, err
	}
	k, err := hex.DecodeString(string(bytes.TrimSpace(b)))
	if err != nil || len(k) != KeySize {
		return nil, fmt.Errorf("%s: want %d bytes in hex (%d hex digits)", path, KeySize, 2*KeySize)
	}
	return k, nil
}

// readSigningKey reads an ECDSA P-256 PKCS#8 PEM key.
func readSigningKey(path string) (*ecdsa.PrivateKey, error) {
	b, err := readFile(path)
	if err != nil {
		return nil, err
	}
	k, err := pki.ParseKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok || ek.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%s: want an ECDSA P-256 key", path)
	}
	return ek, nil
}

// readPublicKey reads one PEM "PUBLIC KEY" (PKIX), RSA or ECDSA.
func readPublicKey(path string) (crypto.PublicKey, error) {
	b, err := readFile(path)
	if err != nil {
		return nil, err
	}
	block, rest := pem.Decode(b)
	if block == nil || block.Type != "PUBLIC KEY" || len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%s: want exactly one PEM PUBLIC KEY", path)
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	switch k.(type) {
	case *rsa.PublicKey, *ecdsa.PublicKey:
		return k, nil
	default:
		return nil, fmt.Errorf("%s: %T is not an RSA or ECDSA key", path, k)
	}
}

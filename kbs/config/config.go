// Package config is the key broker's configuration on disk: the server's
// kbs.yaml (Server, LoadServer), the admin client's admin.yaml (Admin,
// LoadAdmin), and Init, which creates a broker installation: CA, server and
// client certificates, keys, and both configuration files.
//
// Files are YAML, mapped onto the JSON field names of the structs here.
// Loading is strict: an unknown field (also one that differs only in
// case), a value of the wrong type, a duration without a unit and a
// duplicate key are errors that name the field. Every problem found is
// reported at once, as an *Error that matches ErrInvalid. Relative paths
// in a file are relative to the file's directory.
//
// Key files (PKCS#8 PEM keys, hex key-encryption and challenge keys) are
// read and checked by Validate, and handed to the server, parsed, by
// Server.LoadMaterial; their formats are defined here and only here.
//
// Nothing in this package reads the clock or the environment; Init takes
// its time and randomness in InitOptions. Functions are safe for
// concurrent use; a Server or Admin value is not synchronized.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// Defaults applied by LoadServer to fields that are absent or zero.
const (
	DefaultListen              = "127.0.0.1:8443"
	DefaultMetricsListen       = "127.0.0.1:9464"
	DefaultStore               = "kbs.db"
	DefaultChallengeLifetime   = Duration(5 * time.Minute)
	DefaultTokenLifetime       = Duration(5 * time.Minute)
	DefaultMaxMessageBytes     = 4 << 20
	DefaultChallengesPerSecond = 10
	DefaultChallengeBurst      = 20
	DefaultRequestTimeout      = Duration(30 * time.Second)
)

// MetricsOff as Server.MetricsListen disables the metrics endpoint. In
// YAML it must be quoted ("off"): a bare off is the boolean false.
const MetricsOff = "off"

// MaxFileSize bounds the configuration files LoadServer and LoadAdmin
// read, and each key or certificate file they name.
const MaxFileSize = 1 << 20

// Server is the key broker's configuration, kbs.yaml.
type Server struct {
	// Listen is the gRPC address, host:port. Default DefaultListen.
	Listen string `json:"listen"`
	// MetricsListen is the Prometheus endpoint (plain HTTP), host:port,
	// or MetricsOff. Default DefaultMetricsListen.
	MetricsListen string `json:"metrics_listen,omitempty"`
	// InsecurePlaintext serves gRPC without TLS. Allowed only when Listen
	// is a loopback IP address, and then TLS must be empty. No client can
	// then present a certificate, so admin RPCs, which take their role
	// from one, cannot be authorized.
	InsecurePlaintext bool `json:"insecure_plaintext,omitempty"`
	// TLS is the server's certificate and the CA of admin clients.
	TLS TLS `json:"tls"`
	// Store is the bbolt database file. Default DefaultStore.
	Store string `json:"store"`
	// KEKFiles are the key-encryption keys that encrypt resources at rest,
	// each 32 bytes in hex. The first encrypts; all decrypt (rotation).
	KEKFiles []string `json:"kek_files"`
	// TokenKey signs attestation tokens: an ECDSA P-256 PKCS#8 PEM key.
	TokenKey string `json:"token_key"`
	// ChallengeKey authenticates stateless challenges: 32 bytes in hex.
	ChallengeKey string `json:"challenge_key"`
	// ChallengeLifetime is how long a challenge may be answered. Default
	// DefaultChallengeLifetime; at most an hour.
	ChallengeLifetime Duration `json:"challenge_lifetime,omitempty"`
	// TokenLifetime is how long a token is valid. Default
	// DefaultTokenLifetime; at most a day.
	TokenLifetime Duration `json:"token_lifetime,omitempty"`
	// SimRoot is the simulated TEE's root (PEM: ARK, ASK) to trust. Empty:
	// simulated evidence is denied.
	SimRoot string `json:"sim_root,omitempty"`
	// SNP configures SEV-SNP verification.
	SNP SNP `json:"snp"`
	// TDX configures TDX verification.
	TDX TDX `json:"tdx"`
	// TPM configures TPM quote verification.
	TPM TPM `json:"tpm"`
	// Limits bounds what one peer can make the broker do.
	Limits Limits `json:"limits"`
}

// TLS names the server's TLS files.
type TLS struct {
	// Cert is the server certificate chain (PEM).
	Cert string `json:"cert"`
	// Key is the server certificate's key (PKCS#8 PEM).
	Key string `json:"key"`
	// ClientCA holds the CA certificates that admin client certificates
	// must chain to (PEM).
	ClientCA string `json:"client_ca"`
}

// SNP configures SEV-SNP verification.
type SNP struct {
	// CertCache is a directory caching AMD KDS certificates and CRLs
	// ("" = no cache); created as needed.
	CertCache string `json:"cert_cache,omitempty"`
	// Offline forbids fetching from AMD KDS: certificates come from the
	// evidence and CertCache only.
	Offline bool `json:"offline,omitempty"`
	// CheckRevocations checks the ARK-signed CRL.
	CheckRevocations bool `json:"check_revocations,omitempty"`
}

// TDX configures TDX verification.
type TDX struct {
	// CollateralDir holds TDX collateral (TCB info, QE identity, CRLs) as
	// `cvm attest collateral fetch` writes it. When set it is used
	// instead of the network.
	CollateralDir string `json:"collateral_dir,omitempty"`
	// Offline forbids fetching collateral from Intel PCS.
	Offline bool `json:"offline,omitempty"`
	// PCSURL is the Intel PCS or PCCS base URL ("" = Intel PCS).
	PCSURL string `json:"pcs_url,omitempty"`
	// CheckRevocations checks PCK CRLs.
	CheckRevocations bool `json:"check_revocations,omitempty"`
}

// TPM configures TPM quote verification.
type TPM struct {
	// TrustedAKs are PEM public key files ("PUBLIC KEY", RSA or ECDSA) of
	// the attestation keys registered at enrollment.
	TrustedAKs []string `json:"trusted_aks,omitempty"`
}

// Limits bounds what one peer can make the broker do.
type Limits struct {
	// MaxMessageBytes is the largest gRPC message accepted. Default
	// DefaultMaxMessageBytes; 4 KiB to 64 MiB.
	MaxMessageBytes int `json:"max_message_bytes,omitempty"`
	// ChallengesPerSecond is the sustained challenge rate per peer.
	// Default DefaultChallengesPerSecond.
	ChallengesPerSecond float64 `json:"challenges_per_second,omitempty"`
	// ChallengeBurst is the challenge burst per peer. Default
	// DefaultChallengeBurst.
	ChallengeBurst int `json:"challenge_burst,omitempty"`
	// RequestTimeout bounds each RPC. Default DefaultRequestTimeout; 1s to
	// 10m.
	RequestTimeout Duration `json:"request_timeout,omitempty"`
}

// Duration is a time.Duration written as a string with units: "30s",
// "5m", "1h30m".
type Duration time.Duration

// String returns the duration in time.Duration's notation without zero
// trailing units: "5m", not "5m0s".
func (d Duration) String() string {
	s := time.Duration(d).String()
	if t, ok := strings.CutSuffix(s, "m0s"); ok {
		s = t + "m"
	}
	if t, ok := strings.CutSuffix(s, "h0m"); ok {
		s = t + "h"
	}
	return s
}

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return errors.New(`want a duration string such as "30s" or "5m"`)
	}
	v, err := parseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

func parseDuration(s string) (time.Duration, error) {
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf(`%q is not a duration (write e.g. "30s", "5m", "1h")`, s)
	}
	return v, nil
}

// ErrInvalid is matched by every *Error: the configuration is wrong, as
// opposed to unreadable.
var ErrInvalid = errors.New("config: invalid")

// Problem is one thing wrong with a configuration.
type Problem struct {
	// Field is the field at fault in the file's notation, e.g. "listen",
	// "tls.cert", "kek_files[1]"; "" for the document as a whole.
	Field string
	// Message says what is wrong.
	Message string
}

// Error lists every problem found in a configuration. It matches
// ErrInvalid.
type Error struct {
	// File is the configuration file, if the configuration came from one.
	File     string
	Problems []Problem
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("config: ")
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteString(": ")
	}
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteString("; ")
		}
		if p.Field != "" {
			b.WriteString(p.Field)
			b.WriteString(": ")
		}
		b.WriteString(p.Message)
	}
	return b.String()
}

// Is reports whether target is ErrInvalid.
func (e *Error) Is(target error) bool { return target == ErrInvalid }

// problems collects Problems.
type problems []Problem

func (ps *problems) add(field, format string, args ...any) {
	*ps = append(*ps, Problem{Field: field, Message: fmt.Sprintf(format, args...)})
}

// err returns nil or an *Error holding ps.
func (ps problems) err(file string) error {
	if len(ps) == 0 {
		return nil
	}
	return &Error{File: file, Problems: ps}
}

// LoadServer reads kbs.yaml at path: strictly parsed, defaults applied,
// relative paths made absolute against the file's directory, and
// validated (see Validate). Configuration mistakes are an *Error listing
// them all: first every problem of the document's shape (unknown fields,
// wrong types, bad durations) if there are any, otherwise every problem
// Validate finds. An unreadable file is another error.
func LoadServer(path string) (*Server, error) {
	abs, data, err := readConfig(path)
	if err != nil {
		return nil, err
	}
	var s Server
	if err := decode(data, &s); err != nil {
		err.File = path
		return nil, err
	}
	s.applyDefaults()
	s.resolve(filepath.Dir(abs))
	if err := s.Validate(); err != nil {
		var e *Error
		if errors.As(err, &e) {
			e.File = path
		}
		return nil, err
	}
	return &s, nil
}

// applyDefaults fills zero fields with their defaults.
func (s *Server) applyDefaults() {
	setDefault(&s.Listen, DefaultListen)
	setDefault(&s.MetricsListen, DefaultMetricsListen)
	setDefault(&s.Store, DefaultStore)
	setDefault(&s.ChallengeLifetime, DefaultChallengeLifetime)
	setDefault(&s.TokenLifetime, DefaultTokenLifetime)
	setDefault(&s.Limits.MaxMessageBytes, DefaultMaxMessageBytes)
	setDefault(&s.Limits.ChallengesPerSecond, DefaultChallengesPerSecond)
	setDefault(&s.Limits.ChallengeBurst, DefaultChallengeBurst)
	setDefault(&s.Limits.RequestTimeout, DefaultRequestTimeout)
}

func setDefault[T comparable](p *T, v T) {
	var zero T
	if *p == zero {
		*p = v
	}
}

// resolve makes every relative path absolute against dir.
func (s *Server) resolve(dir string) {
	for _, p := range []*string{
		&s.TLS.Cert, &s.TLS.Key, &s.TLS.ClientCA, &s.Store, &s.TokenKey, &s.ChallengeKey,
		&s.SimRoot, &s.SNP.CertCache, &s.TDX.CollateralDir,
	} {
		resolvePath(p, dir)
	}
	for i := range s.KEKFiles {
		resolvePath(&s.KEKFiles[i], dir)
	}
	for i := range s.TPM.TrustedAKs {
		resolvePath(&s.TPM.TrustedAKs[i], dir)
	}
}

func resolvePath(p *string, dir string) {
	if *p != "" && !filepath.IsAbs(*p) {
		*p = filepath.Join(dir, *p)
	}
}

// readConfig reads a configuration file of at most MaxFileSize bytes and
// returns its absolute path too.
func readConfig(path string) (abs string, data []byte, err error) {
	abs, err = filepath.Abs(path)
	if err != nil {
		return "", nil, fmt.Errorf("config: %w", err)
	}
	data, err = readFile(path)
	if err != nil {
		return "", nil, fmt.Errorf("config: %w", err)
	}
	return abs, data, nil
}

// readFile reads a file of at most MaxFileSize bytes.
func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxFileSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, MaxFileSize)
	}
	return b, nil
}

// decode parses YAML data strictly into dst, a pointer to a struct: the
// document is converted to JSON (rejecting duplicate keys), its shape is
// checked against dst's type (unknown fields, wrong types, bad durations;
// every problem listed), and only then decoded.
func decode(data []byte, dst any) *Error {
	var ps problems
	j, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		ps.add("", "not valid YAML: %s", strings.ReplaceAll(strings.TrimPrefix(err.Error(), "yaml: "), "\n", " "))
		return &Error{Problems: ps}
	}
	if bytes.Equal(bytes.TrimSpace(j), []byte("null")) {
		ps.add("", "empty document")
		return &Error{Problems: ps}
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		ps.add("", "%v", err)
		return &Error{Problems: ps}
	}
	checkShape(&ps, typeOf(dst), doc, "")
	if len(ps) > 0 {
		return &Error{Problems: ps}
	}
	dec = json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		// checkShape admits only what decodes; this is a backstop.
		ps.add("", "%v", err)
		return &Error{Problems: ps}
	}
	return nil
}

// Package token signs and verifies the key broker's attestation tokens:
// short-lived JWTs in the shape of an EAT Attestation Result (EAR,
// draft-ietf-rats-ear, as Veraison and Trustee issue them), signed ES256
// (ECDSA P-256, SHA-256; RFC 7518 section 3.4).
//
// # What goes where
//
// Protected header: {"alg":"ES256","kid":<RFC 7638 SHA-256 thumbprint of the
// signing key, base64url>,"typ":"JWT"}. Payload:
//
//	claim                          value
//	eat_profile                    "tag:github.com,2023:veraison/ear" (Profile)
//	iat, exp                       Token.IssuedAt, Token.Expires (NumericDate, whole seconds)
//	jti                            Token.ID (16 random bytes, base64url, unless set)
//	iss                            Options.Issuer, if set
//	ear.verifier-id                {"build": Options.Build, "developer": "cvm"}
//	submods.cpu                    the one appraisal, for the CPU TEE:
//	  ear.status                   Token.Status: "affirming", "warning" or "contraindicated"
//	  ear.appraisal-policy-id      Token.PolicyID, if set
//	  ear.veraison.annotated-evidence  Token.Claims, the verified claims, in their
//	                               JSON form (docs/claims.md)
//	  ear.veraison.key-attestation {"akpub": base64url (unpadded) of the DER
//	                               SubjectPublicKeyInfo of Token.TEEPubKey}
//
// Differences from the EAR draft and Veraison: no
// ear.trustworthiness-vector (cvm appraises with its own policy, not
// AR4SI), no ear.raw-evidence, and the submodule is named "cpu" (Trustee
// uses "cpu0"). akpub is the SubjectPublicKeyInfo, as Veraison defines it,
// rather than the JWK the guest sent, so off-the-shelf EAR readers get the
// key; the JWK's optional "alg" member is therefore not carried, and Verify
// returns the key in JWK form with Alg empty. Token.TEE is not a claim of
// its own: it is the "tee" member of the annotated evidence.
//
// # Why go-jose
//
// JWS parsing is the classic place for alg-confusion bugs. go-jose v4
// (already a dependency) makes the caller list the acceptable algorithms
// at parse time, so "none", HS256 and every other algorithm fail before
// any key is looked at; it computes RFC 7638 thumbprints and marshals JWK
// sets. This package adds what go-jose leaves to the application: a size
// limit, compact serialization only, kid lookup in a fixed key set, no
// embedded keys, and the EAR claims.
//
// # Key rotation
//
// A Verifier holds a JWK set; give it the public keys of the current and
// the previous signing key (JWKS(old, new)) until every token signed with
// the old key has expired (Lifetime after the switch), then drop the old
// one.
package token

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/attestation/runtimedata"
)

// Sentinel errors Verify wraps.
var (
	// ErrInvalid: the token is not one this broker signed, or is malformed:
	// bad signature, an algorithm other than ES256, unknown kid, too large,
	// claims missing or ill-formed.
	ErrInvalid = errors.New("token: invalid")
	// ErrExpired: the token is genuine but past its exp.
	ErrExpired = errors.New("token: expired")
)

// EAR status values (draft-ietf-rats-ear, "ear.status").
const (
	StatusAffirming       = "affirming"
	StatusWarning         = "warning"
	StatusContraindicated = "contraindicated"
)

const (
	// Profile is the eat_profile of the EAR draft.
	Profile = "tag:github.com,2023:veraison/ear"
	// Developer is the ear.verifier-id developer.
	Developer = "cvm"
	// Submod is the name of the one appraisal in submods.
	Submod = "cpu"
	// DefaultLifetime is the token lifetime when Options.Lifetime is zero
	// (Trustee's default).
	DefaultLifetime = 5 * time.Minute
	// MaxSize is the largest token Verify parses.
	MaxSize = 64 << 10
	// ClockSkew is how far in the future a token's iat may be (another
	// replica's clock may run ahead).
	ClockSkew = time.Minute

	defaultBuild = "cvm kbs"
	idSize       = 16
)

// Token is an attestation result.
type Token struct {
	// Status is the appraisal: StatusAffirming, StatusWarning or
	// StatusContraindicated.
	Status string
	// TEE is the kind of TEE; it is Claims.TEE (Sign fills it in if empty
	// and refuses a different one).
	TEE attestation.TEE
	// Claims are the verified claims the appraisal was made on. Required.
	Claims *attestation.Claims
	// TEEPubKey is the guest's key, bound in REPORT_DATA, that released
	// resources are sealed to.
	TEEPubKey runtimedata.JWK
	// PolicyID names the appraisal policy (ear.appraisal-policy-id);
	// optional.
	PolicyID string
	// IssuedAt and Expires are iat and exp, in whole seconds. Sign uses
	// the clock and the lifetime for zero values.
	IssuedAt, Expires time.Time
	// ID is the jti. Sign makes a random one if empty.
	ID string
}

// Options configure a Signer.
type Options struct {
	// Now is the clock. Required.
	Now func() time.Time
	// Rand supplies token IDs; crypto/rand.Reader in production.
	// Required. The Signer serializes reads from it. (ECDSA signatures
	// draw their randomness from crypto/rand inside the standard library
	// since Go 1.26, whatever reader is passed.)
	Rand io.Reader
	// Lifetime is how long a token is valid; DefaultLifetime if zero.
	Lifetime time.Duration
	// Issuer is the iss claim; omitted if empty.
	Issuer string
	// Build is the ear.verifier-id build, e.g. the broker's version;
	// "cvm kbs" if empty.
	Build string
}

// Signer signs tokens with one P-256 key. It is safe for concurrent use.
type Signer struct {
	key  *ecdsa.PrivateKey
	kid  string
	opts Options

	// mu guards opts.Rand, which need not be safe for concurrent use.
	mu sync.Mutex
}

// NewSigner returns a Signer for key, which must be on P-256.
func NewSigner(key *ecdsa.PrivateKey, opts Options) (*Signer, error) {
	if key == nil || key.Curve != elliptic.P256() {
		return nil, errors.New("token: signing key must be an ECDSA P-256 key")
	}
	if opts.Now == nil {
		return nil, errors.New("token: Options.Now is required")
	}
	if opts.Rand == nil {
		return nil, errors.New("token: Options.Rand is required")
	}
	switch {
	case opts.Lifetime == 0:
		opts.Lifetime = DefaultLifetime
	case opts.Lifetime < time.Second:
		return nil, fmt.Errorf("token: lifetime %v is shorter than one second", opts.Lifetime)
	}
	if opts.Build == "" {
		opts.Build = defaultBuild
	}
	kid, err := thumbprint(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	return &Signer{key: key, kid: kid, opts: opts}, nil
}

// KeyID returns the kid of the Signer's key: its RFC 7638 thumbprint.
func (s *Signer) KeyID() string { return s.kid }

// JWKS returns the Signer's public key as a JWK set.
func (s *Signer) JWKS() ([]byte, error) { return JWKS(&s.key.PublicKey) }

// Wire form of the payload.
type (
	payload struct {
		Profile    string               `json:"eat_profile"`
		IssuedAt   *int64               `json:"iat"`
		Expires    *int64               `json:"exp"`
		ID         string               `json:"jti"`
		Issuer     string               `json:"iss,omitempty"`
		VerifierID verifierID           `json:"ear.verifier-id"`
		Submods    map[string]appraisal `json:"submods"`
	}
	verifierID struct {
		Build     string `json:"build"`
		Developer string `json:"developer"`
	}
	appraisal struct {
		Status            string              `json:"ear.status"`
		PolicyID          string              `json:"ear.appraisal-policy-id,omitempty"`
		AnnotatedEvidence *attestation.Claims `json:"ear.veraison.annotated-evidence"`
		KeyAttestation    *keyAttestation     `json:"ear.veraison.key-attestation"`
	}
	keyAttestation struct {
		AKPub string `json:"akpub"`
	}
)

func validStatus(s string) bool {
	return s == StatusAffirming || s == StatusWarning || s == StatusContraindicated
}

// Sign returns t as a compact JWS.
func (s *Signer) Sign(t Token) (string, error) {
	if !validStatus(t.Status) {
		return "", fmt.Errorf("token: sign: unknown status %q", t.Status)
	}
	if t.Claims == nil {
		return "", errors.New("token: sign: no claims")
	}
	switch {
	case t.TEE == "":
		t.TEE = t.Claims.TEE
	case t.TEE != t.Claims.TEE:
		return "", fmt.Errorf("token: sign: TEE %q differs from the claims' %q", t.TEE, t.Claims.TEE)
	}
	if t.TEE == "" {
		return "", errors.New("token: sign: no TEE")
	}
	pub, err := t.TEEPubKey.PublicKey()
	if err != nil {
		return "", fmt.Errorf("token: sign: tee public key: %w", err)
	}
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("token: sign: tee public key: %w", err)
	}
	if t.IssuedAt.IsZero() {
		t.IssuedAt = s.opts.Now()
	}
	if t.Expires.IsZero() {
		t.Expires = t.IssuedAt.Add(s.opts.Lifetime)
	}
	iat, exp := t.IssuedAt.Unix(), t.Expires.Unix()
	if exp <= iat {
		return "", fmt.Errorf("token: sign: expires %v is not after issued-at %v", t.Expires, t.IssuedAt)
	}
	if t.ID == "" {
		id := make([]byte, idSize)
		s.mu.Lock()
		_, err := io.ReadFull(s.opts.Rand, id)
		s.mu.Unlock()
		if err != nil {
			return "", fmt.Errorf("token: sign: reading random bytes: %w", err)
		}
		t.ID = base64.RawURLEncoding.EncodeToString(id)
	}
	p := payload{
		Profile:    Profile,
		IssuedAt:   &iat,
		Expires:    &exp,
		ID:         t.ID,
		Issuer:     s.opts.Issuer,
		VerifierID: verifierID{Build: s.opts.Build, Developer: Developer},
		Submods: map[string]appraisal{Submod: {
			Status:            t.Status,
			PolicyID:          t.PolicyID,
			AnnotatedEvidence: t.Claims,
			KeyAttestation:    &keyAttestation{AKPub: base64.RawURLEncoding.EncodeToString(spki)},
		}},
	}
	body, err := json.Marshal(p)
	if err != nil {
		return "", fmt.Errorf("token: sign: %w", err)
	}
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: s.key, KeyID: s.kid}},
		(&jose.SignerOptions{}).WithType("JWT"),
	)
	if err != nil {
		return "", fmt.Errorf("token: sign: %w", err)
	}
	jws, err := signer.Sign(body)
	if err != nil {
		return "", fmt.Errorf("token: sign: %w", err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		return "", fmt.Errorf("token: sign: %w", err)
	}
	if len(tok) > MaxSize {
		return "", fmt.Errorf("token: sign: token is %d bytes, over the %d-byte limit", len(tok), MaxSize)
	}
	return tok, nil
}

// thumbprint returns the RFC 7638 SHA-256 thumbprint of pub, base64url.
func thumbprint(pub *ecdsa.PublicKey) (string, error) {
	jwk := jose.JSONWebKey{Key: pub}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("token: key thumbprint: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(tp), nil
}

// JWKS returns a JWK set (RFC 7517 section 5) of P-256 public keys, each
// with "kid" its RFC 7638 thumbprint, "alg" "ES256" and "use" "sig".
func JWKS(keys ...*ecdsa.PublicKey) ([]byte, error) {
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{}}
	for _, k := range keys {
		if k == nil || k.Curve != elliptic.P256() {
			return nil, errors.New("token: jwks: keys must be ECDSA P-256 public keys")
		}
		kid, err := thumbprint(k)
		if err != nil {
			return nil, err
		}
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: k, KeyID: kid, Algorithm: string(jose.ES256), Use: "sig"})
	}
	return json.Marshal(set)
}

// Verifier checks tokens against a fixed set of public keys. It is
// immutable and safe for concurrent use.
type Verifier struct {
	keys map[string]*ecdsa.PublicKey // by kid
	now  func() time.Time
}

// NewVerifier returns a Verifier that accepts tokens signed by any key in
// jwks (a JWK set as JWKS returns it). Every key must be a P-256 public
// key; a kid, if present, must be the key's RFC 7638 thumbprint; alg and
// use, if present, must be "ES256" and "sig".
func NewVerifier(jwks []byte, now func() time.Time) (*Verifier, error) {
	if now == nil {
		return nil, errors.New("token: verifier needs a clock")
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(jwks, &set); err != nil {
		return nil, fmt.Errorf("token: jwks: %w", err)
	}
	if len(set.Keys) == 0 {
		return nil, errors.New("token: jwks has no keys")
	}
	v := &Verifier{keys: map[string]*ecdsa.PublicKey{}, now: now}
	for i, k := range set.Keys {
		pub, ok := k.Key.(*ecdsa.PublicKey)
		if !ok || pub.Curve != elliptic.P256() {
			return nil, fmt.Errorf("token: jwks key %d: not an ECDSA P-256 public key (%T)", i, k.Key)
		}
		if k.Algorithm != "" && k.Algorithm != string(jose.ES256) {
			return nil, fmt.Errorf("token: jwks key %d: alg %q, want ES256", i, k.Algorithm)
		}
		if k.Use != "" && k.Use != "sig" {
			return nil, fmt.Errorf("token: jwks key %d: use %q, want sig", i, k.Use)
		}
		kid, err := thumbprint(pub)
		if err != nil {
			return nil, err
		}
		if k.KeyID != "" && k.KeyID != kid {
			return nil, fmt.Errorf("token: jwks key %d: kid %q is not its thumbprint %q", i, k.KeyID, kid)
		}
		if _, dup := v.keys[kid]; dup {
			return nil, fmt.Errorf("token: jwks key %d: duplicate key %q", i, kid)
		}
		v.keys[kid] = pub
	}
	return v, nil
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Verify checks tok's signature against the Verifier's keys, then its
// claims and expiry, and returns the token. It fails with an error
// wrapping ErrInvalid or, for a genuine token past its exp, ErrExpired.
// A genuine token may carry any status: Verify does not judge it, the
// release decision must (a contraindicated token is still a valid
// token).
func (v *Verifier) Verify(tok string) (*Token, error) {
	if len(tok) > MaxSize {
		return nil, invalid("%d bytes, over the %d-byte limit", len(tok), MaxSize)
	}
	jws, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return nil, invalid("parse: %v", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, invalid("%d signatures, want 1", len(jws.Signatures))
	}
	h := jws.Signatures[0].Protected
	if h.JSONWebKey != nil {
		return nil, invalid("embedded jwk header")
	}
	if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); typ != "JWT" {
		return nil, invalid("typ %q, want JWT", typ)
	}
	key, ok := v.keys[h.KeyID]
	if !ok {
		return nil, invalid("unknown kid %q", h.KeyID)
	}
	body, err := jws.Verify(key)
	if err != nil {
		return nil, invalid("signature does not verify: %v", err)
	}
	t, err := decode(body)
	if err != nil {
		return nil, err
	}
	now := v.now()
	if t.IssuedAt.After(now.Add(ClockSkew)) {
		return nil, invalid("issued in the future (%v)", t.IssuedAt.UTC().Format(time.RFC3339))
	}
	if !now.Before(t.Expires) {
		return nil, fmt.Errorf("%w at %v", ErrExpired, t.Expires.UTC().Format(time.RFC3339))
	}
	return t, nil
}

// decode checks a verified payload's claims and builds the Token.
func decode(body []byte) (*Token, error) {
	var p payload
	d := json.NewDecoder(bytes.NewReader(body))
	if err := d.Decode(&p); err != nil {
		return nil, invalid("payload: %v", err)
	}
	if d.More() {
		return nil, invalid("payload: trailing data")
	}
	if p.Profile != Profile {
		return nil, invalid("eat_profile %q", p.Profile)
	}
	if p.IssuedAt == nil || p.Expires == nil {
		return nil, invalid("iat or exp missing")
	}
	if *p.Expires <= *p.IssuedAt {
		return nil, invalid("exp %d is not after iat %d", *p.Expires, *p.IssuedAt)
	}
	if p.ID == "" {
		return nil, invalid("jti missing")
	}
	if p.VerifierID.Developer != Developer {
		return nil, invalid("ear.verifier-id developer %q", p.VerifierID.Developer)
	}
	a, ok := p.Submods[Submod]
	if !ok || len(p.Submods) != 1 {
		return nil, invalid("submods must hold exactly %q", Submod)
	}
	if !validStatus(a.Status) {
		return nil, invalid("ear.status %q", a.Status)
	}
	if a.AnnotatedEvidence == nil || a.AnnotatedEvidence.TEE == "" {
		return nil, invalid("annotated evidence missing")
	}
	if a.KeyAttestation == nil {
		return nil, invalid("key attestation missing")
	}
	spki, err := base64.RawURLEncoding.Strict().DecodeString(a.KeyAttestation.AKPub)
	if err != nil {
		return nil, invalid("akpub: %v", err)
	}
	pub, err := x509.ParsePKIXPublicKey(spki)
	if err != nil {
		return nil, invalid("akpub: %v", err)
	}
	jwk, err := runtimedata.JWKFromPublicKey(pub)
	if err != nil {
		return nil, invalid("akpub: %v", err)
	}
	return &Token{
		Status:    a.Status,
		TEE:       a.AnnotatedEvidence.TEE,
		Claims:    a.AnnotatedEvidence,
		TEEPubKey: jwk,
		PolicyID:  a.PolicyID,
		IssuedAt:  time.Unix(*p.IssuedAt, 0).UTC(),
		Expires:   time.Unix(*p.Expires, 0).UTC(),
		ID:        p.ID,
	}, nil
}

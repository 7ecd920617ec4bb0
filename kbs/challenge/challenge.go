// Package challenge issues and checks the key broker's attestation
// challenges, and remembers which ones were used.
//
// A challenge nonce is stateless and self-contained: it carries the TEE it
// was issued for, its expiry and 32 random bytes, authenticated with
// HMAC-SHA256 under a secret shared by every broker replica. Any replica
// holding the secret can check a nonce without a session store. The nonce
// string is unpadded base64url (RFC 4648 section 5), so it is plain ASCII
// and goes verbatim into the guest's runtime data (attestation/runtimedata,
// docs/protocol-kbs.md).
//
// Binary layout before encoding (version 1):
//
//	offset  size  field
//	0       1     version, 0x01
//	1       1     n, length of the TEE name (1..MaxTEELen)
//	2       n     TEE name, ASCII ("snp", "tdx", "tpm", "sim")
//	2+n     8     expiry, Unix seconds, big-endian signed
//	10+n    32    random bytes
//	42+n    32    HMAC-SHA256(key, "cvm-kbs challenge v1" || 0x00 || bytes 0 .. 42+n)
//
// A nonce is accepted once: after Issuer.Check, the broker calls
// UsedNonces.Consume in the same request, which records a digest of the
// nonce in the shared store until the nonce expires and fails with
// ErrReplayed if it was already there. UsedNonces.Purge drops expired
// records; call it periodically from one or more replicas.
//
// Rotating the challenge secret invalidates every outstanding challenge
// (they fail with ErrForged); guests simply ask for a new one. Challenges
// live for minutes, so rotation needs no overlap period.
package challenge

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/greatjail/cvm/attestation"
)

// Sentinel errors Check, Consume and NewIssuer wrap.
var (
	// ErrMalformed: the nonce is not a challenge of a known version (bad
	// encoding, wrong length, unknown version byte, bad TEE field).
	ErrMalformed = errors.New("challenge: malformed nonce")
	// ErrForged: the MAC does not verify: the nonce was tampered with, or
	// was issued by a broker with another secret.
	ErrForged = errors.New("challenge: nonce not issued by this broker")
	// ErrExpired: the nonce is authentic but past its expiry.
	ErrExpired = errors.New("challenge: nonce expired")
	// ErrWrongTEE: the nonce is authentic but was issued for another TEE
	// than the evidence presented with it.
	ErrWrongTEE = errors.New("challenge: nonce issued for another TEE")
	// ErrReplayed: the nonce was already used.
	ErrReplayed = errors.New("challenge: nonce already used")
)

const (
	// KeySize is the size of the shared HMAC-SHA256 secret.
	KeySize = 32
	// DefaultLifetime is how long a challenge is valid when
	// Options.Lifetime is zero (Trustee's default).
	DefaultLifetime = 5 * time.Minute
	// MaxTEELen bounds the TEE name inside a nonce.
	MaxTEELen = 16
	// MaxNonceLen is the longest nonce string Check looks at; longer
	// input fails with ErrMalformed before decoding.
	MaxNonceLen = 128

	version    = 1
	randomSize = 32
	macSize    = sha256.Size
	// fixedSize is every field but the TEE name.
	fixedSize = 1 + 1 + 8 + randomSize + macSize
)

// macLabel separates challenge MACs from any other use of the secret.
var macLabel = []byte("cvm-kbs challenge v1\x00")

// Options configure an Issuer.
type Options struct {
	// Now is the clock. Required.
	Now func() time.Time
	// Rand supplies the random part of each nonce; crypto/rand.Reader in
	// production. Required. The Issuer serializes reads from it.
	Rand io.Reader
	// Lifetime is how long an issued challenge stays valid;
	// DefaultLifetime if zero. Expiry is kept in whole seconds, rounded
	// down.
	Lifetime time.Duration
}

// Issuer issues and checks challenges. It is safe for concurrent use.
type Issuer struct {
	key      [KeySize]byte
	now      func() time.Time
	lifetime time.Duration

	// mu guards rand, which need not be safe for concurrent use.
	mu   sync.Mutex
	rand io.Reader
}

// Challenge is an issued challenge.
type Challenge struct {
	// Nonce is the string the guest puts into its runtime data verbatim.
	Nonce string
	// TEE is the TEE the challenge was issued for.
	TEE attestation.TEE
	// Expires is when the challenge stops being accepted (whole seconds).
	Expires time.Time
}

// NewIssuer returns an Issuer that MACs challenges with key, a KeySize-byte
// secret shared by every replica of the broker.
func NewIssuer(key []byte, opts Options) (*Issuer, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("challenge: key is %d bytes, want %d", len(key), KeySize)
	}
	if bytes.Equal(key, make([]byte, KeySize)) {
		return nil, errors.New("challenge: key is all zeros")
	}
	if opts.Now == nil {
		return nil, errors.New("challenge: Options.Now is required")
	}
	if opts.Rand == nil {
		return nil, errors.New("challenge: Options.Rand is required")
	}
	switch {
	case opts.Lifetime == 0:
		opts.Lifetime = DefaultLifetime
	case opts.Lifetime < time.Second:
		return nil, fmt.Errorf("challenge: lifetime %v is shorter than one second", opts.Lifetime)
	}
	i := &Issuer{now: opts.Now, rand: opts.Rand, lifetime: opts.Lifetime}
	copy(i.key[:], key)
	return i, nil
}

// Issue returns a new challenge for tee, valid for the configured lifetime.
func (i *Issuer) Issue(tee attestation.TEE) (Challenge, error) {
	if _, err := attestation.ParseTEE(string(tee)); err != nil {
		return Challenge{}, fmt.Errorf("challenge: issue: %w", err)
	}
	expires := i.now().Add(i.lifetime).Truncate(time.Second)
	body := make([]byte, 0, fixedSize+len(tee))
	body = append(body, version, byte(len(tee)))
	body = append(body, tee...)
	body = binary.BigEndian.AppendUint64(body, uint64(expires.Unix()))
	random := make([]byte, randomSize)
	i.mu.Lock()
	_, err := io.ReadFull(i.rand, random)
	i.mu.Unlock()
	if err != nil {
		return Challenge{}, fmt.Errorf("challenge: issue: reading random bytes: %w", err)
	}
	body = append(body, random...)
	body = append(body, i.mac(body)...)
	return Challenge{
		Nonce:   base64.RawURLEncoding.EncodeToString(body),
		TEE:     tee,
		Expires: expires,
	}, nil
}

// Check verifies that nonce is an unexpired challenge this broker (or a
// replica sharing its key) issued for tee, and returns its expiry, which
// the caller passes to UsedNonces.Consume. Check does not consume the
// nonce. It fails with an error wrapping ErrMalformed, ErrForged,
// ErrWrongTEE or ErrExpired; the MAC is checked before anything else in
// the nonce is believed.
func (i *Issuer) Check(nonce string, tee attestation.TEE) (time.Time, error) {
	p, err := parse(nonce)
	if err != nil {
		return time.Time{}, err
	}
	if !hmac.Equal(p.mac, i.mac(p.body)) {
		return time.Time{}, ErrForged
	}
	if p.tee != tee {
		return time.Time{}, fmt.Errorf("%w: issued for %q, presented with %q evidence", ErrWrongTEE, p.tee, tee)
	}
	if now := i.now(); !now.Before(p.expires) {
		return time.Time{}, fmt.Errorf("%w: at %v, %v ago", ErrExpired, p.expires.UTC().Format(time.RFC3339), now.Sub(p.expires).Round(time.Second))
	}
	return p.expires, nil
}

func (i *Issuer) mac(body []byte) []byte {
	m := hmac.New(sha256.New, i.key[:])
	m.Write(macLabel)
	m.Write(body)
	return m.Sum(nil)
}

// parsed is a decoded, not yet authenticated, nonce.
type parsed struct {
	body    []byte // everything the MAC covers
	mac     []byte
	tee     attestation.TEE
	expires time.Time
}

// parse decodes a nonce's structure. It checks nothing a MAC would.
func parse(nonce string) (parsed, error) {
	if len(nonce) > MaxNonceLen {
		return parsed{}, fmt.Errorf("%w: %d characters, limit %d", ErrMalformed, len(nonce), MaxNonceLen)
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(nonce)
	// The decoder skips CR and LF: insist on the one canonical spelling,
	// or a replayed nonce with a line break inserted would look new to
	// UsedNonces, which keys on the string.
	if err != nil || base64.RawURLEncoding.EncodeToString(raw) != nonce {
		return parsed{}, fmt.Errorf("%w: not canonical unpadded base64url", ErrMalformed)
	}
	if len(raw) < fixedSize+1 {
		return parsed{}, fmt.Errorf("%w: %d bytes, too short", ErrMalformed, len(raw))
	}
	if raw[0] != version {
		return parsed{}, fmt.Errorf("%w: unknown version %d", ErrMalformed, raw[0])
	}
	n := int(raw[1])
	if n < 1 || n > MaxTEELen || len(raw) != fixedSize+n {
		return parsed{}, fmt.Errorf("%w: TEE length %d does not fit a %d-byte nonce", ErrMalformed, n, len(raw))
	}
	tee := raw[2 : 2+n]
	for _, c := range tee {
		if c < 'a' || c > 'z' {
			return parsed{}, fmt.Errorf("%w: TEE name is not lowercase ASCII", ErrMalformed)
		}
	}
	exp := int64(binary.BigEndian.Uint64(raw[2+n:]))
	return parsed{
		body:    raw[:len(raw)-macSize],
		mac:     raw[len(raw)-macSize:],
		tee:     attestation.TEE(tee),
		expires: time.Unix(exp, 0),
	}, nil
}

// Package runtimedata binds attestation evidence to a key-broker request.
//
// The guest puts a digest of its runtime data into the 64-byte REPORT_DATA
// of its attestation report. Runtime data is the JSON object
//
//	{"nonce": "<broker nonce>", "tee-pubkey": <JWK of the guest's ephemeral public key>}
//
// and the digest is SHA-384 over its RFC 8785 (JCS) canonical form,
// zero-padded to 64 bytes. This is the scheme of Trustee, the
// confidential-containers key broker (attestation-service
// parse_runtime_data with serde_json_canonicalizer, then regularize_data),
// so stock CoCo guests and this broker interoperate.
//
// The broker receives the raw runtime data with the evidence, checks it
// with Parse, and compares its digest with the verified report's
// REPORT_DATA with Check. Members other than nonce and tee-pubkey (Trustee
// adds "additional-evidence") are allowed and are covered by the digest.
//
// The package is shared by the guest agent and the broker and imports only
// the standard library.
package runtimedata

import (
	"crypto/sha512"
	"crypto/subtle"
	"errors"
	"fmt"
	"unicode/utf8"
)

const (
	// MaxSize is the largest runtime data Parse, Digest and Check accept.
	MaxSize = 16 << 10
	// ReportDataSize is the size of REPORT_DATA in SEV-SNP and TDX reports.
	ReportDataSize = 64
)

var (
	// ErrInvalid: the runtime data (or a JWK in it) is malformed: not JSON,
	// not canonicalizable, too large, or missing or ill-typed members.
	ErrInvalid = errors.New("invalid runtime data")
	// ErrMismatch: the report data is not the digest of the runtime data.
	ErrMismatch = errors.New("report data does not match runtime data")
)

// invalid returns an error wrapping ErrInvalid.
func invalid(format string, args ...any) error {
	return fmt.Errorf("runtimedata: %s: %w", fmt.Sprintf(format, args...), ErrInvalid)
}

// RuntimeData is what the guest binds into its report.
type RuntimeData struct {
	// Nonce is the broker's challenge nonce, verbatim.
	Nonce string `json:"nonce"`
	// TEEPubKey is the guest's ephemeral public key; the broker wraps the
	// released secret to it.
	TEEPubKey JWK `json:"tee-pubkey"`
}

// Marshal returns the canonical (RFC 8785) JSON encoding of r: the bytes the
// guest hashes and sends. It fails if the nonce is empty or not valid UTF-8
// or if the key does not pass JWK.PublicKey, so Parse accepts whatever
// Marshal returns.
func (r RuntimeData) Marshal() ([]byte, error) {
	if r.Nonce == "" {
		return nil, invalid("nonce is empty")
	}
	if !utf8.ValidString(r.Nonce) {
		return nil, invalid("nonce is not valid utf-8")
	}
	if _, err := r.TEEPubKey.PublicKey(); err != nil {
		return nil, err
	}
	if !utf8.ValidString(r.TEEPubKey.Alg) {
		return nil, invalid("jwk: alg is not valid utf-8")
	}
	str := func(s string) value { return value{kind: kindString, str: s} }
	key := value{kind: kindObject}
	for _, f := range r.TEEPubKey.fields() {
		if f.value != "" {
			key.members = append(key.members, member{name: f.name, value: str(f.value)})
		}
	}
	if err := sortMembers(key.members); err != nil {
		return nil, err // unreachable: JWK member names are distinct
	}
	top := value{kind: kindObject, members: []member{
		{name: "nonce", value: str(r.Nonce)},
		{name: "tee-pubkey", value: key},
	}}
	return top.appendCanonical(nil), nil
}

// Parse checks that raw is runtime data and returns its nonce and key.
//
// raw must be at most MaxSize bytes of canonicalizable JSON (see
// Canonicalize: duplicate member names, invalid UTF-8 and trailing data
// are rejected) whose top level is an object with a non-empty string
// "nonce" and a "tee-pubkey" object. tee-pubkey's members must be strings
// named like JWK's fields, and the key must pass JWK.PublicKey. Other
// top-level members are allowed; they are not returned but Digest covers
// them. Every failure wraps ErrInvalid.
func Parse(raw []byte) (*RuntimeData, error) {
	if len(raw) > MaxSize {
		return nil, invalid("runtime data is %d bytes, limit is %d", len(raw), MaxSize)
	}
	v, err := decode(raw)
	if err != nil {
		return nil, err
	}
	if v.kind != kindObject {
		return nil, invalid("runtime data is a json %s, want an object", v.kind)
	}
	nonce, ok := v.member("nonce")
	switch {
	case !ok:
		return nil, invalid("missing member \"nonce\"")
	case nonce.kind != kindString:
		return nil, invalid("member \"nonce\" is a json %s, want a string", nonce.kind)
	case nonce.str == "":
		return nil, invalid("member \"nonce\" is empty")
	}
	key, ok := v.member("tee-pubkey")
	switch {
	case !ok:
		return nil, invalid("missing member \"tee-pubkey\"")
	case key.kind != kindObject:
		return nil, invalid("member \"tee-pubkey\" is a json %s, want an object", key.kind)
	}
	var jwk JWK
	fields := jwk.fieldPtrs()
	for _, m := range key.members {
		p, ok := fields[m.name]
		if !ok {
			return nil, invalid("jwk: unknown member %q", m.name)
		}
		if m.value.kind != kindString {
			return nil, invalid("jwk: member %q is a json %s, want a string", m.name, m.value.kind)
		}
		if m.value.str == "" {
			return nil, invalid("jwk: member %q is empty", m.name)
		}
		*p = m.value.str
	}
	if _, err := jwk.PublicKey(); err != nil {
		return nil, err
	}
	return &RuntimeData{Nonce: nonce.str, TEEPubKey: jwk}, nil
}

// Digest returns the REPORT_DATA that binds raw: SHA-384 of
// Canonicalize(raw), followed by 16 zero bytes. raw may be at most MaxSize
// bytes.
func Digest(raw []byte) ([ReportDataSize]byte, error) {
	var out [ReportDataSize]byte
	if len(raw) > MaxSize {
		return out, invalid("runtime data is %d bytes, limit is %d", len(raw), MaxSize)
	}
	c, err := Canonicalize(raw)
	if err != nil {
		return out, err
	}
	sum := sha512.Sum384(c)
	copy(out[:], sum[:])
	return out, nil
}

// Check reports whether reportData, the REPORT_DATA of a verified report,
// equals Digest(raw). The comparison takes constant time. A mismatch,
// including a reportData that is not ReportDataSize bytes, wraps
// ErrMismatch; runtime data Digest rejects wraps ErrInvalid.
func Check(raw []byte, reportData []byte) error {
	want, err := Digest(raw)
	if err != nil {
		return err
	}
	if len(reportData) != ReportDataSize {
		return fmt.Errorf("runtimedata: report data is %d bytes, want %d: %w", len(reportData), ReportDataSize, ErrMismatch)
	}
	if subtle.ConstantTimeCompare(want[:], reportData) != 1 {
		return fmt.Errorf("runtimedata: report data %x, want sha384 of canonical runtime data %x: %w", reportData, want, ErrMismatch)
	}
	return nil
}

// Package tpm verifies TPM 2.0 quotes and replays TCG PC Client event logs
// against them, turning them into attestation.Claims.
//
// # What Verify checks
//
// Evidence is a TPM2_Quote result (the TPMS_ATTEST bytes and the
// TPMT_SIGNATURE over them), the TPMT_PUBLIC of the attestation key (AK)
// that signed it, the PCR values the quote covers, and optionally the
// firmware's measured-boot event log. Verify returns claims only after all
// of these passed, in this order:
//
//   - the AK public area parses as an attestation key (a fixedTPM,
//     fixedParent, sensitiveDataOrigin restricted signing key: RSA of 2048
//     to 8192 bits with RSASSA or RSAPSS, or ECDSA on P-256, P-384 or
//     P-521), and its key equals one of Options.TrustedAKs;
//   - the TPMT_SIGNATURE is a signature in the AK's own scheme and hash
//     (SHA-256, SHA-384 or SHA-512; SHA-1 only with Options.AllowSHA1) by
//     that key over the exact TPMS_ATTEST bytes, checked before those bytes
//     are parsed; ECDSA R and S must be padded to the curve size, as TPMs
//     emit them;
//   - the TPMS_ATTEST starts with TPM_GENERATED_VALUE, is of type
//     TPM_ST_ATTEST_QUOTE and is encoded canonically with no trailing bytes;
//   - the quote selects PCRs in exactly one bank (SHA-1 only with
//     AllowSHA1), and the evidence supplies a value of the bank's size for
//     exactly those PCRs;
//   - the digest of the supplied values, concatenated in ascending PCR
//     order and hashed with the signature's hash (as TPM2_Quote computes
//     pcrDigest), equals the quote's pcrDigest;
//   - if an event log is supplied, it parses as a crypto-agile TCG PC
//     Client log and its replay in the quoted bank yields the quoted value
//     of every quoted PCR it touches.
//
// The claims carry the quoted PCR values and the quote's qualifying data
// (extraData) as ReportData. Comparing ReportData with the expected nonce
// binding, and PCR values with reference values, is policy's job.
//
// # What Verify does not check
//
//   - AK provenance. The AK is trusted because it was registered at
//     enrollment (Options.TrustedAKs); EK certificates, AK certificates and
//     credential activation are out of scope, and Evidence.Certificates is
//     ignored. Whoever enrolls an AK must have established that it is a
//     restricted signing key resident in the TPM being enrolled. Only the
//     key in Evidence.AKPublic is authenticated (by that comparison); its
//     other fields are checked for consistency, and a change to those that
//     do not bear on a quote (auth policy, attributes other than the ones
//     required above) goes unnoticed.
//   - The meaning of the event log. Events are only replayed: an event's
//     data is not checked against its digests (that relation depends on
//     the event type), so only the digests are vouched for, and only those
//     in the quoted bank. A PCR the log does not touch is not compared, so
//     an event is vouched for only through a quoted PCR it extends; an
//     EV_NO_ACTION event is never vouched for (except StartupLocality,
//     which sets PCR 0's starting value). Without an event log,
//     Claims.Unchecked contains "event log".
//   - Freshness. The quote's clock, reset and restart counters and the
//     firmware version are not interpreted; a fresh quote is one whose
//     extraData carries a fresh nonce, which policy checks.
//   - Binding to a confidential VM. A vTPM quote says nothing about the
//     TEE that hosts the vTPM; combine it with an SEV-SNP or TDX report
//     that binds the AK if that matters.
package tpm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	"github.com/google/go-tpm/tpm2"

	"github.com/greatjail/cvm/attestation"
)

// maxStructSize bounds Report, Signature and AKPublic. Real TPMS_ATTEST,
// TPMT_SIGNATURE and TPMT_PUBLIC structures are below 1 KiB.
const maxStructSize = 4096

// Options configure a Verifier.
type Options struct {
	// Now returns the verification time recorded in the claims. Required.
	Now func() time.Time
	// TrustedAKs are the attestation keys (*rsa.PublicKey or
	// *ecdsa.PublicKey) registered at enrollment. A quote verifies only if
	// it is signed by one of them; with none, nothing verifies.
	TrustedAKs []crypto.PublicKey
	// AllowSHA1 accepts SHA-1 PCR banks and SHA-1 quote signatures, both
	// refused otherwise.
	AllowSHA1 bool
}

// Verifier verifies TPM quotes. It is safe for concurrent use.
type Verifier struct {
	now       func() time.Time
	trusted   []crypto.PublicKey
	allowSHA1 bool
}

var _ attestation.Verifier = (*Verifier)(nil)

// New returns a Verifier for opts. It fails if Now is missing or a trusted
// AK is not an RSA or ECDSA public key.
func New(opts Options) (*Verifier, error) {
	if opts.Now == nil {
		return nil, fmt.Errorf("tpm: options: Now is required")
	}
	trusted := make([]crypto.PublicKey, 0, len(opts.TrustedAKs))
	for i, k := range opts.TrustedAKs {
		switch k := k.(type) {
		case *rsa.PublicKey:
			if k == nil || k.N == nil {
				return nil, fmt.Errorf("tpm: options: trusted AK %d: empty RSA key", i)
			}
		case *ecdsa.PublicKey:
			if k == nil || k.Curve == nil {
				return nil, fmt.Errorf("tpm: options: trusted AK %d: empty ECDSA key", i)
			}
		default:
			return nil, fmt.Errorf("tpm: options: trusted AK %d: unsupported key type %T", i, k)
		}
		trusted = append(trusted, k)
	}
	return &Verifier{now: opts.Now, trusted: trusted, allowSHA1: opts.AllowSHA1}, nil
}

// Verify checks ev as described in the package documentation and returns
// its claims. Every error is an *attestation.Error naming the failed check.
// Verify does not block; ctx is not consulted.
func (v *Verifier) Verify(ctx context.Context, ev *attestation.Evidence) (*attestation.Claims, error) {
	const tee = attestation.TEETPM
	if ev == nil {
		return nil, attestation.Errorf(tee, "evidence", attestation.ErrMissing, "no evidence")
	}
	if ev.TEE != tee {
		return nil, attestation.Errorf(tee, "tee", attestation.ErrUnsupported, "evidence is for TEE %q, this verifier checks %q", ev.TEE, tee)
	}
	for _, f := range []struct {
		check string
		b     []byte
		limit int
	}{
		{"attestation key", ev.AKPublic, maxStructSize},
		{"quote", ev.Report, maxStructSize},
		{"quote signature", ev.Signature, maxStructSize},
		{"event log", ev.EventLog, maxEventLogSize},
	} {
		if err := attestation.CheckSize(tee, f.check, f.b, f.limit); err != nil {
			return nil, err
		}
		if len(f.b) == 0 && f.check != "event log" {
			return nil, attestation.Errorf(tee, f.check, attestation.ErrMissing, "evidence has no %s", f.check)
		}
	}

	// The attestation key: parsed, then trusted by enrollment.
	if len(v.trusted) == 0 {
		return nil, attestation.Errorf(tee, "attestation key", attestation.ErrMissing, "no trusted attestation keys configured")
	}
	ak, err := parseAK(ev.AKPublic)
	if err != nil {
		return nil, err
	}
	if !v.isTrusted(ak.key) {
		return nil, attestation.Errorf(tee, "attestation key", attestation.ErrChain, "attestation key %s is not one of the %d trusted keys", fingerprint(ak.key), len(v.trusted))
	}

	// The signature over the raw TPMS_ATTEST bytes, before they are parsed.
	sigHash, err := verifySignature(ak, ev.Signature, ev.Report, v.allowSHA1)
	if err != nil {
		return nil, err
	}
	attest, quote, err := parseAttest(ev.Report)
	if err != nil {
		return nil, err
	}

	// PCR selection, values and digest.
	bank, indices, err := v.selection(quote)
	if err != nil {
		return nil, err
	}
	bankHash := hashes[bank]
	if err := checkSupplied(indices, ev.PCRs, bank, bankHash.Size()); err != nil {
		return nil, err
	}
	h := sigHash.New()
	for _, i := range indices {
		h.Write(ev.PCRs[i])
	}
	if got, want := h.Sum(nil), quote.PCRDigest.Buffer; !bytes.Equal(got, want) {
		return nil, attestation.Errorf(tee, "pcr digest", attestation.ErrMismatch, "%s over the supplied %s PCR values is %x, the quote's pcrDigest is %x", algName(hashAlgs[sigHash]), algName(bank), got, want)
	}

	claims := &attestation.Claims{
		TEE:        tee,
		Product:    "TPM",
		PCRs:       &attestation.PCRs{Hash: algName(bank), Values: make(map[int]attestation.Hex, len(indices))},
		ReportData: attestation.Hex(bytes.Clone(attest.ExtraData.Buffer)),
		VerifiedAt: v.now(),
	}
	if claims.ReportData == nil {
		claims.ReportData = attestation.Hex{}
	}
	for _, i := range indices {
		claims.PCRs.Values[i] = attestation.Hex(bytes.Clone(ev.PCRs[i]))
	}

	// The event log, if any, against the quoted (now trusted) PCR values.
	if len(ev.EventLog) == 0 {
		claims.Unchecked = append(claims.Unchecked, "event log")
		return claims, nil
	}
	events, err := ParseEventLog(ev.EventLog)
	if err != nil {
		return nil, err
	}
	replayed, err := Replay(events, bank)
	if err != nil {
		return nil, err
	}
	unexplained := false
	for _, i := range indices {
		got, ok := replayed[i]
		if !ok {
			// The log has no event for this PCR. That is consistent only
			// if the PCR still holds its reset value; otherwise the log
			// does not explain it (a stripped log must not pass as
			// checked).
			if !allZero(ev.PCRs[i]) {
				unexplained = true
			}
			continue
		}
		if want := ev.PCRs[i]; !bytes.Equal(got, want) {
			return nil, attestation.Errorf(tee, "event log replay", attestation.ErrMismatch, "PCR %d: the event log replays to %s %x, the quote has %x", i, algName(bank), got, want)
		}
	}
	if unexplained {
		claims.Unchecked = append(claims.Unchecked, "event log")
	}
	return claims, nil
}

// isTrusted reports whether ak equals one of the trusted keys.
func (v *Verifier) isTrusted(ak crypto.PublicKey) bool {
	eq, ok := ak.(interface{ Equal(crypto.PublicKey) bool })
	if !ok {
		return false
	}
	for _, t := range v.trusted {
		if eq.Equal(t) {
			return true
		}
	}
	return false
}

// selection returns the quote's single PCR bank and its selected PCR
// indices in ascending order.
func (v *Verifier) selection(q *tpm2.TPMSQuoteInfo) (tpm2.TPMAlgID, []int, error) {
	const tee = attestation.TEETPM
	sels := q.PCRSelect.PCRSelections
	if len(sels) != 1 {
		return 0, nil, attestation.Errorf(tee, "pcr selection", attestation.ErrMismatch, "quote selects %d PCR banks, want exactly one", len(sels))
	}
	bank := sels[0].Hash
	if _, ok := hashes[bank]; !ok {
		return 0, nil, attestation.Errorf(tee, "pcr bank", attestation.ErrUnsupported, "PCR bank %s", algName(bank))
	}
	if bank == tpm2.TPMAlgSHA1 && !v.allowSHA1 {
		return 0, nil, attestation.Errorf(tee, "pcr bank", attestation.ErrUnsupported, "SHA-1 PCR bank refused (AllowSHA1 not set)")
	}
	var indices []int
	for byteIdx, b := range sels[0].PCRSelect {
		for bit := range 8 {
			if b&(1<<bit) == 0 {
				continue
			}
			i := byteIdx*8 + bit
			if i >= numPCRs {
				return 0, nil, attestation.Errorf(tee, "pcr selection", attestation.ErrMalformed, "quote selects PCR %d, a PC Client TPM has PCRs 0 to %d", i, numPCRs-1)
			}
			indices = append(indices, i)
		}
	}
	if len(indices) == 0 {
		return 0, nil, attestation.Errorf(tee, "pcr selection", attestation.ErrMismatch, "quote selects no PCRs")
	}
	return bank, indices, nil
}

// checkSupplied checks that pcrs holds a value of size bytes for exactly
// the selected indices.
func checkSupplied(indices []int, pcrs map[int][]byte, bank tpm2.TPMAlgID, size int) error {
	const tee = attestation.TEETPM
	for _, i := range indices {
		if _, ok := pcrs[i]; !ok {
			return attestation.Errorf(tee, "pcr selection", attestation.ErrMismatch, "quote selects PCR %d, the evidence supplies no value for it (quote selects %v, evidence supplies %v)", i, indices, sortedKeys(pcrs))
		}
	}
	for _, i := range sortedKeys(pcrs) {
		if !slices.Contains(indices, i) {
			return attestation.Errorf(tee, "pcr selection", attestation.ErrMismatch, "evidence supplies PCR %d, the quote does not select it (quote selects %v, evidence supplies %v)", i, indices, sortedKeys(pcrs))
		}
	}
	for _, i := range indices {
		if n := len(pcrs[i]); n != size {
			return attestation.Errorf(tee, "pcrs", attestation.ErrMalformed, "PCR %d value has %d bytes, want %d for %s", i, n, size, algName(bank))
		}
	}
	return nil
}

func sortedKeys(m map[int][]byte) []int {
	keys := make([]int, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// fingerprint names a public key in error details: the first 8 bytes of
// the SHA-256 of its PKIX encoding.
func fingerprint(k crypto.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		return fmt.Sprintf("(%T)", k)
	}
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:8])
}

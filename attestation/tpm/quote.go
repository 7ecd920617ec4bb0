package tpm

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/binary"
	"fmt"
	"math/big"

	"github.com/google/go-tpm/tpm2"

	"github.com/greatjail/cvm/attestation"
)

// hashes are the hash algorithms this package computes, for PCR banks,
// event log replay and signatures.
var hashes = map[tpm2.TPMAlgID]crypto.Hash{
	tpm2.TPMAlgSHA1:   crypto.SHA1,
	tpm2.TPMAlgSHA256: crypto.SHA256,
	tpm2.TPMAlgSHA384: crypto.SHA384,
	tpm2.TPMAlgSHA512: crypto.SHA512,
}

// hashAlgs is the inverse of hashes.
var hashAlgs = map[crypto.Hash]tpm2.TPMAlgID{
	crypto.SHA1:   tpm2.TPMAlgSHA1,
	crypto.SHA256: tpm2.TPMAlgSHA256,
	crypto.SHA384: tpm2.TPMAlgSHA384,
	crypto.SHA512: tpm2.TPMAlgSHA512,
}

// algName names a TPM algorithm as the claims do ("sha256"), or by number.
func algName(alg tpm2.TPMAlgID) string {
	switch alg {
	case tpm2.TPMAlgSHA1:
		return "sha1"
	case tpm2.TPMAlgSHA256:
		return "sha256"
	case tpm2.TPMAlgSHA384:
		return "sha384"
	case tpm2.TPMAlgSHA512:
		return "sha512"
	case tpm2.TPMAlgSM3256:
		return "sm3_256"
	case tpm2.TPMAlgRSASSA:
		return "rsassa"
	case tpm2.TPMAlgRSAPSS:
		return "rsapss"
	case tpm2.TPMAlgECDSA:
		return "ecdsa"
	case tpm2.TPMAlgHMAC:
		return "hmac"
	}
	return fmt.Sprintf("alg %#04x", uint16(alg))
}

// Key size limits for attestation keys.
const (
	minRSABits = 2048
	maxRSABits = 8192
)

// ParseAKPublic parses the TPMT_PUBLIC of an attestation key and returns
// its public key (*rsa.PublicKey or *ecdsa.PublicKey). The key must look
// like an attestation key: a restricted signing key that is fixedTPM,
// fixedParent and sensitiveDataOrigin, with no symmetric algorithm, a
// name algorithm of SHA-1/256/384/512, and a signing scheme of RSASSA or
// RSAPSS (RSA of 2048 to 8192 bits whose keyBits match the modulus) or
// ECDSA (P-256, P-384 or P-521, point on the curve, no KDF). Errors are
// *attestation.Error for check "attestation key".
//
// Only the key itself can be authenticated (by comparing it with a key
// trusted at enrollment); the other fields are checked for consistency.
func ParseAKPublic(b []byte) (crypto.PublicKey, error) {
	ak, err := parseAK(b)
	if err != nil {
		return nil, err
	}
	return ak.key, nil
}

// akPublic is a parsed attestation key: its public key and the signing
// scheme and hash the TPM uses for every signature it makes.
type akPublic struct {
	key    crypto.PublicKey
	scheme tpm2.TPMAlgID
	hash   tpm2.TPMAlgID
}

func parseAK(b []byte) (*akPublic, error) {
	const tee, check = attestation.TEETPM, "attestation key"
	malformed := func(detail string, cause error) error {
		return &attestation.Error{TEE: tee, Check: check, Err: attestation.ErrMalformed, Detail: detail, Cause: cause}
	}
	unsupported := func(format string, args ...any) error {
		return attestation.Errorf(tee, check, attestation.ErrUnsupported, format, args...)
	}
	if err := attestation.CheckSize(tee, check, b, maxStructSize); err != nil {
		return nil, err
	}
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](b)
	if err != nil {
		return nil, malformed("TPMT_PUBLIC does not parse", err)
	}
	if !bytes.Equal(tpm2.Marshal(pub), b) {
		return nil, malformed("TPMT_PUBLIC is truncated, has trailing bytes or is not canonically encoded", nil)
	}
	if _, ok := hashes[pub.NameAlg]; !ok {
		return nil, unsupported("name algorithm %s", algName(pub.NameAlg))
	}
	if a := pub.ObjectAttributes; !a.Restricted || !a.SignEncrypt || a.Decrypt || !a.FixedTPM || !a.FixedParent || !a.SensitiveDataOrigin {
		return nil, unsupported("not a restricted signing key resident in its TPM (restricted=%t sign=%t decrypt=%t fixedTPM=%t fixedParent=%t sensitiveDataOrigin=%t)",
			a.Restricted, a.SignEncrypt, a.Decrypt, a.FixedTPM, a.FixedParent, a.SensitiveDataOrigin)
	}
	ak := &akPublic{}
	switch pub.Type {
	case tpm2.TPMAlgRSA:
		parms, err := pub.Parameters.RSADetail()
		if err != nil {
			return nil, malformed("RSA parameters", err)
		}
		if parms.Symmetric.Algorithm != tpm2.TPMAlgNull {
			return nil, unsupported("signing key with symmetric algorithm %s", algName(parms.Symmetric.Algorithm))
		}
		ak.scheme = parms.Scheme.Scheme
		switch ak.scheme {
		case tpm2.TPMAlgRSASSA:
			s, err := parms.Scheme.Details.RSASSA()
			if err != nil {
				return nil, malformed("RSASSA scheme", err)
			}
			ak.hash = s.HashAlg
		case tpm2.TPMAlgRSAPSS:
			s, err := parms.Scheme.Details.RSAPSS()
			if err != nil {
				return nil, malformed("RSAPSS scheme", err)
			}
			ak.hash = s.HashAlg
		default:
			return nil, unsupported("RSA signing scheme %s, want rsassa or rsapss", algName(ak.scheme))
		}
		n, err := pub.Unique.RSA()
		if err != nil {
			return nil, malformed("RSA modulus", err)
		}
		k, err := tpm2.RSAPub(parms, n)
		if err != nil {
			return nil, malformed("RSA key", err)
		}
		if bits := k.N.BitLen(); bits < minRSABits || bits > maxRSABits {
			return nil, unsupported("RSA key of %d bits, want %d to %d", bits, minRSABits, maxRSABits)
		}
		if int(parms.KeyBits) != k.N.BitLen() || len(n.Buffer) != (k.N.BitLen()+7)/8 {
			return nil, malformed(fmt.Sprintf("keyBits %d, modulus of %d bytes and %d bits", parms.KeyBits, len(n.Buffer), k.N.BitLen()), nil)
		}
		if k.E < 3 || k.E&1 == 0 {
			return nil, malformed(fmt.Sprintf("RSA exponent %d", k.E), nil)
		}
		ak.key = k
	case tpm2.TPMAlgECC:
		parms, err := pub.Parameters.ECCDetail()
		if err != nil {
			return nil, malformed("ECC parameters", err)
		}
		if parms.Symmetric.Algorithm != tpm2.TPMAlgNull {
			return nil, unsupported("signing key with symmetric algorithm %s", algName(parms.Symmetric.Algorithm))
		}
		if parms.KDF.Scheme != tpm2.TPMAlgNull {
			return nil, unsupported("signing key with KDF %s", algName(parms.KDF.Scheme))
		}
		ak.scheme = parms.Scheme.Scheme
		if ak.scheme != tpm2.TPMAlgECDSA {
			return nil, unsupported("ECC signing scheme %s, want ecdsa", algName(ak.scheme))
		}
		s, err := parms.Scheme.Details.ECDSA()
		if err != nil {
			return nil, malformed("ECDSA scheme", err)
		}
		ak.hash = s.HashAlg
		pt, err := pub.Unique.ECC()
		if err != nil {
			return nil, malformed("ECC point", err)
		}
		k, err := tpm2.ECDSAPub(parms, pt)
		if err != nil {
			return nil, unsupported("%v", err)
		}
		size := (k.Curve.Params().BitSize + 7) / 8
		if len(pt.X.Buffer) != size || len(pt.Y.Buffer) != size {
			return nil, malformed(fmt.Sprintf("ECC point coordinates of %d and %d bytes, want %d", len(pt.X.Buffer), len(pt.Y.Buffer), size), nil)
		}
		if _, err := k.ECDH(); err != nil {
			return nil, malformed("ECC point is not on the curve", err)
		}
		ak.key = k
	default:
		return nil, unsupported("key type %s, want RSA or ECC", algName(pub.Type))
	}
	if _, ok := hashes[ak.hash]; !ok {
		return nil, unsupported("signing scheme hash %s", algName(ak.hash))
	}
	return ak, nil
}

// parseAttest parses TPMS_ATTEST bytes as a quote. Errors are
// *attestation.Error for check "quote" wrapping ErrMalformed.
func parseAttest(b []byte) (*tpm2.TPMSAttest, *tpm2.TPMSQuoteInfo, error) {
	const tee, check = attestation.TEETPM, "quote"
	// Magic (4 bytes) and type (2 bytes) first, for a precise reason.
	if len(b) < 6 {
		return nil, nil, attestation.Errorf(tee, check, attestation.ErrMalformed, "TPMS_ATTEST of %d bytes is truncated", len(b))
	}
	if magic := tpm2.TPMGenerated(binary.BigEndian.Uint32(b)); magic != tpm2.TPMGeneratedValue {
		return nil, nil, attestation.Errorf(tee, check, attestation.ErrMalformed, "magic %#08x, want TPM_GENERATED_VALUE %#08x", uint32(magic), uint32(tpm2.TPMGeneratedValue))
	}
	if typ := tpm2.TPMST(binary.BigEndian.Uint16(b[4:])); typ != tpm2.TPMSTAttestQuote {
		return nil, nil, attestation.Errorf(tee, check, attestation.ErrMalformed, "type %#04x, want TPM_ST_ATTEST_QUOTE %#04x", uint16(typ), uint16(tpm2.TPMSTAttestQuote))
	}
	a, err := tpm2.Unmarshal[tpm2.TPMSAttest](b)
	if err != nil {
		return nil, nil, &attestation.Error{TEE: tee, Check: check, Err: attestation.ErrMalformed, Detail: "TPMS_ATTEST does not parse", Cause: err}
	}
	if !bytes.Equal(tpm2.Marshal(a), b) {
		return nil, nil, attestation.Errorf(tee, check, attestation.ErrMalformed, "TPMS_ATTEST is truncated, has trailing bytes or is not canonically encoded")
	}
	q, err := a.Attested.Quote()
	if err != nil {
		return nil, nil, &attestation.Error{TEE: tee, Check: check, Err: attestation.ErrMalformed, Detail: "no TPMS_QUOTE_INFO", Cause: err}
	}
	return a, q, nil
}

// verifySignature checks that sigBytes, a TPMT_SIGNATURE, is ak's
// signature over msg in ak's scheme, and returns the signature's hash. Errors are
// *attestation.Error for check "quote signature": ErrMalformed if it does
// not parse, ErrUnsupported for a scheme or hash not accepted, ErrSignature
// if it does not verify.
func verifySignature(ak *akPublic, sigBytes, msg []byte, allowSHA1 bool) (crypto.Hash, error) {
	const tee, check = attestation.TEETPM, "quote signature"
	sig, err := tpm2.Unmarshal[tpm2.TPMTSignature](sigBytes)
	if err != nil {
		return 0, &attestation.Error{TEE: tee, Check: check, Err: attestation.ErrMalformed, Detail: "TPMT_SIGNATURE does not parse", Cause: err}
	}
	if !bytes.Equal(tpm2.Marshal(sig), sigBytes) {
		return 0, attestation.Errorf(tee, check, attestation.ErrMalformed, "TPMT_SIGNATURE is truncated, has trailing bytes or is not canonically encoded")
	}
	hashOf := func(alg tpm2.TPMAlgID) (crypto.Hash, error) {
		h, ok := hashes[alg]
		if !ok {
			return 0, attestation.Errorf(tee, check, attestation.ErrUnsupported, "%s signature with hash %s", algName(sig.SigAlg), algName(alg))
		}
		if h == crypto.SHA1 && !allowSHA1 {
			return 0, attestation.Errorf(tee, check, attestation.ErrUnsupported, "SHA-1 signature refused (AllowSHA1 not set)")
		}
		return h, nil
	}
	digest := func(h crypto.Hash) []byte {
		d := h.New()
		d.Write(msg)
		return d.Sum(nil)
	}
	invalid := func(format string, args ...any) (crypto.Hash, error) {
		return 0, attestation.Errorf(tee, check, attestation.ErrSignature, format, args...)
	}
	// A restricted signing key signs only with its own scheme.
	matchScheme := func(hash tpm2.TPMAlgID) (crypto.Hash, error) {
		h, err := hashOf(hash)
		if err != nil {
			return 0, err
		}
		if sig.SigAlg != ak.scheme || hash != ak.hash {
			return invalid("%s-%s signature, the attestation key signs with %s-%s", algName(sig.SigAlg), algName(hash), algName(ak.scheme), algName(ak.hash))
		}
		return h, nil
	}
	key := ak.key

	switch sig.SigAlg {
	case tpm2.TPMAlgRSASSA, tpm2.TPMAlgRSAPSS:
		var s *tpm2.TPMSSignatureRSA
		if sig.SigAlg == tpm2.TPMAlgRSASSA {
			s, err = sig.Signature.RSASSA()
		} else {
			s, err = sig.Signature.RSAPSS()
		}
		if err != nil {
			return 0, &attestation.Error{TEE: tee, Check: check, Err: attestation.ErrMalformed, Detail: "RSA signature", Cause: err}
		}
		h, err := matchScheme(s.Hash)
		if err != nil {
			return 0, err
		}
		pub, ok := key.(*rsa.PublicKey)
		if !ok {
			return invalid("%s signature, the attestation key is %T", algName(sig.SigAlg), key)
		}
		if sig.SigAlg == tpm2.TPMAlgRSASSA {
			err = rsa.VerifyPKCS1v15(pub, h, digest(h), s.Sig.Buffer)
		} else {
			err = rsa.VerifyPSS(pub, h, digest(h), s.Sig.Buffer, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto, Hash: h})
		}
		if err != nil {
			return invalid("%s-%s signature does not verify with the attestation key", algName(sig.SigAlg), algName(s.Hash))
		}
		return h, nil
	case tpm2.TPMAlgECDSA:
		s, err := sig.Signature.ECDSA()
		if err != nil {
			return 0, &attestation.Error{TEE: tee, Check: check, Err: attestation.ErrMalformed, Detail: "ECDSA signature", Cause: err}
		}
		h, err := matchScheme(s.Hash)
		if err != nil {
			return 0, err
		}
		pub, ok := key.(*ecdsa.PublicKey)
		if !ok {
			return invalid("ecdsa signature, the attestation key is %T", key)
		}
		// A TPM pads R and S to the curve size; insisting on it keeps the
		// encoding of a valid signature unique up to ECDSA's own (r, -s).
		size := (pub.Curve.Params().BitSize + 7) / 8
		if len(s.SignatureR.Buffer) != size || len(s.SignatureS.Buffer) != size {
			return 0, attestation.Errorf(tee, check, attestation.ErrMalformed, "ECDSA R and S of %d and %d bytes, want %d for %s", len(s.SignatureR.Buffer), len(s.SignatureS.Buffer), size, pub.Curve.Params().Name)
		}
		r := new(big.Int).SetBytes(s.SignatureR.Buffer)
		ss := new(big.Int).SetBytes(s.SignatureS.Buffer)
		if !ecdsa.Verify(pub, digest(h), r, ss) {
			return invalid("ecdsa-%s signature does not verify with the attestation key", algName(s.Hash))
		}
		return h, nil
	}
	return 0, attestation.Errorf(tee, check, attestation.ErrUnsupported, "signature scheme %s, want rsassa, rsapss or ecdsa", algName(sig.SigAlg))
}

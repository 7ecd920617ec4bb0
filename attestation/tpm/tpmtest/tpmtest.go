// Package tpmtest builds synthetic TPM 2.0 evidence for tests: TPMS_ATTEST
// quotes, TPMT_SIGNATUREs and attestation key public areas, in the exact
// encodings a TPM produces, signed by a key the caller generates.
//
// Nothing here comes from a TPM. The keys are SYNTHETIC test keys, so the
// evidence proves only that the verifier accepts well-formed quotes from a
// trusted key and refuses altered ones. Production code never imports this
// package.
package tpmtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/asn1"
	"fmt"
	"io"
	"math/big"
	"slices"

	"github.com/google/go-tpm/tpm2"

	"github.com/greatjail/cvm/attestation"
)

// Fixed values of the synthetic TPMS_ATTEST, so that quotes differ only by
// what the caller chooses.
const (
	// Clock is the synthetic TPMS_CLOCK_INFO.clock (milliseconds).
	Clock = 1_000_000
	// FirmwareVersion is the synthetic TPMS_ATTEST.firmwareVersion.
	FirmwareVersion = 0x20240101_00000001
)

var hashes = map[tpm2.TPMAlgID]crypto.Hash{
	tpm2.TPMAlgSHA1:   crypto.SHA1,
	tpm2.TPMAlgSHA256: crypto.SHA256,
	tpm2.TPMAlgSHA384: crypto.SHA384,
	tpm2.TPMAlgSHA512: crypto.SHA512,
}

// Quote builds evidence for a quote over PCRs indices of bank alg with
// qualifying data extraData, signed by key (ECDSA P-256, P-384 or P-521,
// or RSA, with DefaultScheme). pcrs must hold a value of the bank's digest
// size for every index; values of other PCRs are ignored. The evidence has
// TEE "tpm", Report (TPMS_ATTEST), Signature (TPMT_SIGNATURE), AKPublic
// (TPMT_PUBLIC of key as a restricted signing key) and PCRs (copies of the
// quoted values); EventLog is left for the caller.
func Quote(key crypto.Signer, alg tpm2.TPMAlgID, pcrs map[int][]byte, indices []int, extraData []byte) (*attestation.Evidence, error) {
	scheme, sigHash, err := DefaultScheme(key.Public())
	if err != nil {
		return nil, err
	}
	return QuoteScheme(key, scheme, sigHash, alg, pcrs, indices, extraData)
}

// QuoteScheme is Quote with an AK whose signing scheme is scheme
// (TPMAlgECDSA, TPMAlgRSASSA or TPMAlgRSAPSS) with hash sigHash. As
// TPM2_Quote does, the quote's pcrDigest uses sigHash.
func QuoteScheme(key crypto.Signer, scheme, sigHash, alg tpm2.TPMAlgID, pcrs map[int][]byte, indices []int, extraData []byte) (*attestation.Evidence, error) {
	bank, ok := hashes[alg]
	if !ok {
		return nil, fmt.Errorf("tpmtest: unsupported PCR bank %v", alg)
	}
	if _, ok := hashes[sigHash]; !ok {
		return nil, fmt.Errorf("tpmtest: unsupported signature hash %v", sigHash)
	}
	akPub, err := akTemplate(key.Public(), scheme, sigHash)
	if err != nil {
		return nil, err
	}
	sorted := slices.Clone(indices)
	slices.Sort(sorted)
	if len(slices.Compact(slices.Clone(sorted))) != len(sorted) {
		return nil, fmt.Errorf("tpmtest: duplicate PCR index in %v", indices)
	}
	if len(sorted) == 0 {
		return nil, fmt.Errorf("tpmtest: no PCRs to quote")
	}
	selected := make(map[int][]byte, len(sorted))
	sel := make([]byte, 3)
	dh := hashes[sigHash].New()
	for _, i := range sorted {
		if i < 0 || i >= 24 {
			return nil, fmt.Errorf("tpmtest: PCR index %d out of range", i)
		}
		v, ok := pcrs[i]
		if !ok {
			return nil, fmt.Errorf("tpmtest: no value for PCR %d", i)
		}
		if len(v) != bank.Size() {
			return nil, fmt.Errorf("tpmtest: PCR %d value has %d bytes, want %d", i, len(v), bank.Size())
		}
		sel[i/8] |= 1 << (i % 8)
		selected[i] = slices.Clone(v)
		dh.Write(v)
	}
	name, err := tpm2.ObjectName(akPub)
	if err != nil {
		return nil, fmt.Errorf("tpmtest: ak name: %w", err)
	}
	attest := tpm2.TPMSAttest{
		Magic:           tpm2.TPMGeneratedValue,
		Type:            tpm2.TPMSTAttestQuote,
		QualifiedSigner: *name,
		ExtraData:       tpm2.TPM2BData{Buffer: slices.Clone(extraData)},
		ClockInfo:       tpm2.TPMSClockInfo{Clock: Clock, ResetCount: 1, RestartCount: 0, Safe: true},
		FirmwareVersion: FirmwareVersion,
		Attested: tpm2.NewTPMUAttest(tpm2.TPMSTAttestQuote, &tpm2.TPMSQuoteInfo{
			PCRSelect: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{Hash: alg, PCRSelect: sel}}},
			PCRDigest: tpm2.TPM2BDigest{Buffer: dh.Sum(nil)},
		}),
	}
	report := tpm2.Marshal(attest)
	sig, err := SignScheme(key, scheme, sigHash, report)
	if err != nil {
		return nil, err
	}
	return &attestation.Evidence{
		TEE:       attestation.TEETPM,
		Report:    report,
		Signature: sig,
		AKPublic:  tpm2.Marshal(akPub),
		PCRs:      selected,
	}, nil
}

// DefaultScheme returns the signature scheme and hash Quote uses for a key:
// ECDSA with SHA-256 (P-256), SHA-384 (P-384) or SHA-512 (P-521), and
// RSASSA with SHA-256 for RSA.
func DefaultScheme(pub crypto.PublicKey) (scheme, hash tpm2.TPMAlgID, err error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return tpm2.TPMAlgECDSA, tpm2.TPMAlgSHA256, nil
		case elliptic.P384():
			return tpm2.TPMAlgECDSA, tpm2.TPMAlgSHA384, nil
		case elliptic.P521():
			return tpm2.TPMAlgECDSA, tpm2.TPMAlgSHA512, nil
		}
		return 0, 0, fmt.Errorf("tpmtest: unsupported curve %s", k.Curve.Params().Name)
	case *rsa.PublicKey:
		return tpm2.TPMAlgRSASSA, tpm2.TPMAlgSHA256, nil
	}
	return 0, 0, fmt.Errorf("tpmtest: unsupported key type %T", pub)
}

// AKPublic returns the TPMT_PUBLIC of pub as a TPM restricted signing key
// with DefaultScheme, as TPM2_CreatePrimary or TPM2_Create return it.
func AKPublic(pub crypto.PublicKey) ([]byte, error) {
	scheme, hash, err := DefaultScheme(pub)
	if err != nil {
		return nil, err
	}
	return AKPublicScheme(pub, scheme, hash)
}

// AKPublicScheme is AKPublic with signing scheme scheme and hash.
func AKPublicScheme(pub crypto.PublicKey, scheme, hash tpm2.TPMAlgID) ([]byte, error) {
	p, err := akTemplate(pub, scheme, hash)
	if err != nil {
		return nil, err
	}
	return tpm2.Marshal(p), nil
}

// akTemplate builds the TPMT_PUBLIC of a restricted signing key.
func akTemplate(pub crypto.PublicKey, scheme, hash tpm2.TPMAlgID) (*tpm2.TPMTPublic, error) {
	attrs := tpm2.TPMAObject{
		FixedTPM:            true,
		FixedParent:         true,
		SensitiveDataOrigin: true,
		UserWithAuth:        true,
		Restricted:          true,
		SignEncrypt:         true,
	}
	noSym := tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull}
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if scheme != tpm2.TPMAlgECDSA {
			return nil, fmt.Errorf("tpmtest: scheme %v for an ECDSA key", scheme)
		}
		var curve tpm2.TPMECCCurve
		switch k.Curve {
		case elliptic.P256():
			curve = tpm2.TPMECCNistP256
		case elliptic.P384():
			curve = tpm2.TPMECCNistP384
		case elliptic.P521():
			curve = tpm2.TPMECCNistP521
		default:
			return nil, fmt.Errorf("tpmtest: unsupported curve %s", k.Curve.Params().Name)
		}
		pt, err := k.ECDH()
		if err != nil {
			return nil, fmt.Errorf("tpmtest: %w", err)
		}
		raw := pt.Bytes() // 0x04 || X || Y
		size := (len(raw) - 1) / 2
		return &tpm2.TPMTPublic{
			Type:             tpm2.TPMAlgECC,
			NameAlg:          tpm2.TPMAlgSHA256,
			ObjectAttributes: attrs,
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
				Symmetric: noSym,
				Scheme: tpm2.TPMTECCScheme{
					Scheme:  tpm2.TPMAlgECDSA,
					Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: hash}),
				},
				CurveID: curve,
				KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
				X: tpm2.TPM2BECCParameter{Buffer: raw[1 : 1+size]},
				Y: tpm2.TPM2BECCParameter{Buffer: raw[1+size:]},
			}),
		}, nil
	case *rsa.PublicKey:
		exp := uint32(k.E)
		if k.E == 65537 {
			exp = 0 // the TPM's encoding of the default exponent
		}
		var s tpm2.TPMTRSAScheme
		switch scheme {
		case tpm2.TPMAlgRSAPSS:
			s = tpm2.TPMTRSAScheme{Scheme: scheme, Details: tpm2.NewTPMUAsymScheme(scheme, &tpm2.TPMSSigSchemeRSAPSS{HashAlg: hash})}
		case tpm2.TPMAlgRSASSA:
			s = tpm2.TPMTRSAScheme{Scheme: scheme, Details: tpm2.NewTPMUAsymScheme(scheme, &tpm2.TPMSSigSchemeRSASSA{HashAlg: hash})}
		default:
			return nil, fmt.Errorf("tpmtest: scheme %v for an RSA key", scheme)
		}
		return &tpm2.TPMTPublic{
			Type:             tpm2.TPMAlgRSA,
			NameAlg:          tpm2.TPMAlgSHA256,
			ObjectAttributes: attrs,
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
				Symmetric: noSym,
				Scheme:    s,
				KeyBits:   tpm2.TPMKeyBits(k.N.BitLen()),
				Exponent:  exp,
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: k.N.Bytes()}),
		}, nil
	}
	return nil, fmt.Errorf("tpmtest: unsupported key type %T", pub)
}

// ECDSAKey returns a SYNTHETIC, deterministic ECDSA key on P-256 or P-384
// derived from label, so that tests, fuzz corpora and benchmarks can
// rebuild the same attestation key. Its private scalar is the SHA-256
// (P-256) or SHA-384 (P-384) of label: never use it for anything real.
func ECDSAKey(c elliptic.Curve, label string) (*ecdsa.PrivateKey, error) {
	var scalar []byte
	switch c {
	case elliptic.P256():
		s := sha256.Sum256([]byte("cvm tpmtest synthetic key: " + label))
		scalar = s[:]
	case elliptic.P384():
		s := sha512.Sum384([]byte("cvm tpmtest synthetic key: " + label))
		scalar = s[:]
	default:
		return nil, fmt.Errorf("tpmtest: unsupported curve %s", c.Params().Name)
	}
	k, err := ecdsa.ParseRawPrivateKey(c, scalar)
	if err != nil {
		return nil, fmt.Errorf("tpmtest: synthetic key %q: %w", label, err)
	}
	return k, nil
}

// Sign returns the TPMT_SIGNATURE of msg (a TPMS_ATTEST) by key with
// DefaultScheme.
func Sign(key crypto.Signer, msg []byte) ([]byte, error) {
	scheme, hash, err := DefaultScheme(key.Public())
	if err != nil {
		return nil, err
	}
	return SignScheme(key, scheme, hash, msg)
}

// SignScheme returns the TPMT_SIGNATURE of msg by key with scheme
// (TPMAlgECDSA, TPMAlgRSASSA or TPMAlgRSAPSS) and hash. ECDSA R and S are
// padded to the curve size, as a TPM pads them. Signatures by an
// *ecdsa.PrivateKey (RFC 6979) or with RSASSA are deterministic.
func SignScheme(key crypto.Signer, scheme, hash tpm2.TPMAlgID, msg []byte) ([]byte, error) {
	h, ok := hashes[hash]
	if !ok {
		return nil, fmt.Errorf("tpmtest: unsupported hash %v", hash)
	}
	d := h.New()
	d.Write(msg)
	digest := d.Sum(nil)
	switch scheme {
	case tpm2.TPMAlgECDSA:
		pub, ok := key.Public().(*ecdsa.PublicKey)
		if !ok {
			return nil, fmt.Errorf("tpmtest: ECDSA needs an ECDSA key, have %T", key.Public())
		}
		// An *ecdsa.PrivateKey signs deterministically (RFC 6979) when
		// given no random source, so the same inputs give the same
		// evidence; other signers get randomness.
		var r io.Reader = rand.Reader
		if _, ok := key.(*ecdsa.PrivateKey); ok {
			r = nil
		}
		der, err := key.Sign(r, digest, h)
		if err != nil {
			return nil, fmt.Errorf("tpmtest: sign: %w", err)
		}
		var rs struct{ R, S *big.Int }
		if _, err := asn1.Unmarshal(der, &rs); err != nil {
			return nil, fmt.Errorf("tpmtest: ECDSA signature: %w", err)
		}
		size := (pub.Curve.Params().BitSize + 7) / 8
		return tpm2.Marshal(tpm2.TPMTSignature{
			SigAlg: tpm2.TPMAlgECDSA,
			Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA, &tpm2.TPMSSignatureECC{
				Hash:       hash,
				SignatureR: tpm2.TPM2BECCParameter{Buffer: rs.R.FillBytes(make([]byte, size))},
				SignatureS: tpm2.TPM2BECCParameter{Buffer: rs.S.FillBytes(make([]byte, size))},
			}),
		}), nil
	case tpm2.TPMAlgRSASSA, tpm2.TPMAlgRSAPSS:
		var opts crypto.SignerOpts = h
		if scheme == tpm2.TPMAlgRSAPSS {
			opts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: h}
		}
		sig, err := key.Sign(rand.Reader, digest, opts)
		if err != nil {
			return nil, fmt.Errorf("tpmtest: sign: %w", err)
		}
		return tpm2.Marshal(tpm2.TPMTSignature{
			SigAlg: scheme,
			Signature: tpm2.NewTPMUSignature(scheme, &tpm2.TPMSSignatureRSA{
				Hash: hash,
				Sig:  tpm2.TPM2BPublicKeyRSA{Buffer: sig},
			}),
		}), nil
	}
	return nil, fmt.Errorf("tpmtest: unsupported signature scheme %v", scheme)
}

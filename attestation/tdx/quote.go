package tdx

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/google/go-tdx-guest/abi"
	"github.com/google/go-tdx-guest/pcs"
	pb "github.com/google/go-tdx-guest/proto/tdx"
	"github.com/google/go-tdx-guest/verify"
	"github.com/greatjail/cvm/attestation"
)

// Quote v4 layout (Intel TDX DCAP Quote Generation Library and Quote
// Verification Library API, appendix "Quote Format"; the offsets match
// go-tdx-guest abi). All integers are little-endian.
const (
	headerSize       = 48  // version u16, att key type u16, TEE type u32, ...
	bodySize         = 584 // TD quote body (TD 1.0 report body)
	signedOffset     = headerSize + bodySize
	sigSize          = 64  // ECDSA P-256 r||s
	attKeySize       = 64  // P-256 public key X||Y
	qeReportSize     = 384 // SGX enclave report of the QE
	certHeaderSize   = 6   // certification data type u16, size u32
	quoteVersion     = 4
	attKeyTypeP256   = 2
	teeTypeTDX       = 0x81
	certTypeQEReport = 6 // QE report certification data
	certTypePCKChain = 5 // concatenated PEM PCK leaf, PCK CA, root
)

// quote is a parsed quote: the library's protobuf for field access and the
// raw byte ranges that signatures and hashes cover.
type quote struct {
	proto       *pb.QuoteV4
	signed      []byte // header || TD quote body, covered by the quote signature
	signature   []byte // quote signature, r||s
	attKey      []byte // ECDSA attestation key, X||Y
	qeReport    []byte // QE report, covered by the QE report signature
	qeReportSig []byte // QE report signature by the PCK key, r||s
	qeAuthData  []byte
	pckChain    []byte // PEM PCK chain from certification data type 5
}

// malformed returns an ErrMalformed error for the quote.
func malformed(format string, args ...any) error {
	return attestation.Errorf(attestation.TEETDX, "quote", attestation.ErrMalformed, format, args...)
}

// parseQuote walks the quote layout with explicit bounds (so that
// abi.QuoteToProto never sees a structure that could make it slice out of
// range) and then parses it with abi.QuoteToProto. Bytes after the signed
// data are tolerated and ignored: they are covered by nothing, and
// go-tdx-guest tolerates them too (its sample quote carries 39).
func parseQuote(raw []byte) (*quote, error) {
	if len(raw) == 0 {
		return nil, malformed("empty quote")
	}
	if len(raw) < headerSize {
		return nil, malformed("%d bytes, shorter than the %d-byte header", len(raw), headerSize)
	}
	if v := binary.LittleEndian.Uint16(raw[0:2]); v != quoteVersion {
		return nil, attestation.Errorf(attestation.TEETDX, "quote version", attestation.ErrUnsupported,
			"quote version %d, only version %d is supported", v, quoteVersion)
	}
	if kt := binary.LittleEndian.Uint16(raw[2:4]); kt != attKeyTypeP256 {
		return nil, attestation.Errorf(attestation.TEETDX, "attestation key type", attestation.ErrUnsupported,
			"attestation key type %d, only %d (ECDSA P-256) is supported", kt, attKeyTypeP256)
	}
	if tt := binary.LittleEndian.Uint32(raw[4:8]); tt != teeTypeTDX {
		return nil, attestation.Errorf(attestation.TEETDX, "tee type", attestation.ErrUnsupported,
			"TEE type %#x is not TDX (%#x)", tt, teeTypeTDX)
	}

	r := reader{b: raw, off: signedOffset}
	signedSize, ok := r.u32()
	if !ok {
		return nil, malformed("%d bytes, too short for the TD quote body and signed data size", len(raw))
	}
	signedData, ok := r.bytes(int(signedSize))
	if !ok {
		return nil, malformed("signed data size %d exceeds the %d bytes left", signedSize, len(raw)-signedOffset-4)
	}
	q := &quote{signed: raw[:signedOffset]}

	s := reader{b: signedData}
	q.signature, _ = s.bytes(sigSize)
	q.attKey, _ = s.bytes(attKeySize)
	certType, _ := s.u16()
	certSize, ok := s.u32()
	if !ok {
		return nil, malformed("signed data of %d bytes is too short", len(signedData))
	}
	if certType != certTypeQEReport {
		return nil, attestation.Errorf(attestation.TEETDX, "quote", attestation.ErrUnsupported,
			"certification data type %d, only %d (QE report certification data) is supported", certType, certTypeQEReport)
	}
	certData, ok := s.bytes(int(certSize))
	if !ok || s.rest() != 0 {
		return nil, malformed("certification data size %d does not match the %d bytes of signed data left", certSize, len(signedData)-sigSize-attKeySize-certHeaderSize)
	}

	c := reader{b: certData}
	q.qeReport, _ = c.bytes(qeReportSize)
	q.qeReportSig, _ = c.bytes(sigSize)
	authSize, ok := c.u16()
	if !ok {
		return nil, malformed("QE report certification data of %d bytes is too short", len(certData))
	}
	if q.qeAuthData, ok = c.bytes(int(authSize)); !ok {
		return nil, malformed("QE authentication data size %d exceeds the certification data", authSize)
	}
	chainType, _ := c.u16()
	chainSize, ok := c.u32()
	if !ok {
		return nil, malformed("certification data ends before the PCK chain header")
	}
	if chainType != certTypePCKChain {
		return nil, attestation.Errorf(attestation.TEETDX, "quote", attestation.ErrUnsupported,
			"inner certification data type %d, only %d (PCK certificate chain) is supported", chainType, certTypePCKChain)
	}
	if q.pckChain, ok = c.bytes(int(chainSize)); !ok || c.rest() != 0 {
		return nil, malformed("PCK chain size %d does not match the %d bytes left", chainSize, c.rest())
	}

	p, err := quoteToProto(raw)
	if err != nil {
		return nil, attestation.Wrap(attestation.TEETDX, "quote", attestation.ErrMalformed, err)
	}
	q.proto = p
	return q, nil
}

// quoteToProto calls abi.QuoteToProto, turning a panic in the library's
// parser into an error as a last line of defence.
func quoteToProto(raw []byte) (p *pb.QuoteV4, err error) {
	defer func() {
		if r := recover(); r != nil {
			p, err = nil, fmt.Errorf("go-tdx-guest abi parser panicked: %v", r)
		}
	}()
	a, err := abi.QuoteToProto(raw)
	if err != nil {
		return nil, err
	}
	p, ok := a.(*pb.QuoteV4)
	if !ok {
		return nil, fmt.Errorf("go-tdx-guest returned %T, want a version 4 quote", a)
	}
	return p, nil
}

// reader reads little-endian fields with bounds checks.
type reader struct {
	b   []byte
	off int
	bad bool
}

func (r *reader) bytes(n int) ([]byte, bool) {
	if r.bad || n < 0 || n > len(r.b)-r.off {
		r.bad = true
		return nil, false
	}
	b := r.b[r.off : r.off+n]
	r.off += n
	return b, true
}

func (r *reader) u16() (uint16, bool) {
	b, ok := r.bytes(2)
	if !ok {
		return 0, false
	}
	return binary.LittleEndian.Uint16(b), true
}

func (r *reader) u32() (uint32, bool) {
	b, ok := r.bytes(4)
	if !ok {
		return 0, false
	}
	return binary.LittleEndian.Uint32(b), true
}

func (r *reader) rest() int { return len(r.b) - r.off }

// PCK certificate names, as Intel issues them and go-tdx-guest checks them.
const (
	pckLeafCN        = "Intel SGX PCK Certificate"
	pckPlatformCACN  = "Intel SGX PCK Platform CA"
	pckProcessorCACN = "Intel SGX PCK Processor CA"
)

// pckInfo is what the verified PCK chain tells about the platform.
type pckInfo struct {
	leaf, intermediate, root *x509.Certificate
	ca                       string // "platform" or "processor"
	fmspc                    []byte // 6 bytes
	pceID                    []byte // 2 bytes
	pceSVN                   uint16
	cpuSVN                   []byte // 16 SGX TCB component SVNs
}

// verifyQuote runs the quote layer: PCK chain, QE report signature, QE
// report data binding, quote signature, then go-tdx-guest's verify.TdxQuote
// over the same quote.
func (v *Verifier) verifyQuote(q *quote, now time.Time) (*pckInfo, error) {
	pck, err := v.verifyPCKChain(q.pckChain, now)
	if err != nil {
		return nil, err
	}
	if !verifyP256(pck.leaf.PublicKey.(*ecdsa.PublicKey), q.qeReport, q.qeReportSig) {
		return nil, attestation.Errorf(attestation.TEETDX, "qe report signature", attestation.ErrSignature,
			"QE report is not signed by the PCK key of %q (serial %x)", pck.leaf.Subject.CommonName, pck.leaf.SerialNumber)
	}
	// The QE report data commits to the attestation key: SHA-256(attestation
	// key || QE authentication data) followed by 32 zero bytes.
	want := sha256.Sum256(append(bytes.Clone(q.attKey), q.qeAuthData...))
	reportData := q.qeReport[qeReportSize-64:]
	if !bytes.Equal(reportData[:32], want[:]) || !bytes.Equal(reportData[32:], make([]byte, 32)) {
		return nil, attestation.Errorf(attestation.TEETDX, "qe report data", attestation.ErrMismatch,
			"QE report data %x does not commit to the attestation key (want SHA-256 %x and zero padding)", reportData, want)
	}
	attKey, err := p256Key(q.attKey)
	if err != nil {
		return nil, attestation.Errorf(attestation.TEETDX, "quote signature", attestation.ErrSignature, "attestation key: %v", err)
	}
	if !verifyP256(attKey, q.signed, q.signature) {
		return nil, attestation.Errorf(attestation.TEETDX, "quote signature", attestation.ErrSignature,
			"quote header and TD quote body are not signed by the attestation key")
	}

	// go-tdx-guest v0.3.1 only accepts PCK chains through the Platform CA
	// (verify.go checks the intermediate's common name against "Intel SGX
	// PCK Platform CA"); for Processor CA chains the checks above, which
	// cover everything TdxQuote checks without collateral, stand alone.
	if pck.ca == "processor" {
		return pck, nil
	}
	// Fresh options per call: go-tdx-guest writes into Options during
	// verification. TrustedRoots is always set, so it never falls back to
	// its embedded root (and never logs its per-call warning).
	opts := &verify.Options{Now: now, TrustedRoots: v.roots}
	if err := verify.TdxQuote(q.proto, opts); err != nil {
		return nil, libraryError(err)
	}
	return pck, nil
}

// libraryError classifies an error from go-tdx-guest's verify.TdxQuote.
// Our own checks run first, so this only fires if the library rejects what
// they accepted. Only ErrHashVerificationFail is a sentinel the library
// returns unwrapped; its other failures are fmt.Errorf("%v") strings, so
// the rest is matched on message text in this one place.
func libraryError(err error) error {
	const detail = "go-tdx-guest rejected a quote that passed cvm's own checks"
	check, sentinel := "quote verification", attestation.ErrSignature
	msg := err.Error()
	switch {
	case errors.Is(err, verify.ErrHashVerificationFail):
		check = "quote signature"
	case strings.Contains(msg, "QE report signature"):
		check = "qe report signature"
	case strings.Contains(msg, "QE report data"):
		check, sentinel = "qe report data", attestation.ErrMismatch
	case strings.Contains(msg, "expired"):
		check, sentinel = "pck validity", attestation.ErrExpired
	case strings.Contains(msg, "certificate") || strings.Contains(msg, "PCK"):
		check, sentinel = "pck chain", attestation.ErrChain
	}
	return &attestation.Error{TEE: attestation.TEETDX, Check: check, Err: sentinel, Detail: detail, Cause: err}
}

// verifyPCKChain checks the PEM PCK chain from the quote: exactly a leaf, a
// PCK CA and a root, canonically PEM-encoded (optionally followed by one
// NUL byte), each signed by the next, valid at now, leading to a trusted
// root that is the chain's own third certificate.
func (v *Verifier) verifyPCKChain(chain []byte, now time.Time) (*pckInfo, error) {
	const check = "pck chain"
	chainErr := func(sentinel error, format string, args ...any) error {
		return attestation.Errorf(attestation.TEETDX, check, sentinel, format, args...)
	}
	certs, err := parseCanonicalPEM(chain)
	if err != nil {
		return nil, attestation.Wrap(attestation.TEETDX, check, attestation.ErrMalformed, err)
	}
	if len(certs) != 3 {
		return nil, chainErr(attestation.ErrMalformed, "%d certificates, want PCK leaf, PCK CA and root", len(certs))
	}
	pck := &pckInfo{leaf: certs[0], intermediate: certs[1]}
	if cn := pck.leaf.Subject.CommonName; cn != pckLeafCN {
		return nil, chainErr(attestation.ErrChain, "leaf is %q, want %q", cn, pckLeafCN)
	}
	switch cn := pck.intermediate.Subject.CommonName; cn {
	case pckPlatformCACN:
		pck.ca = "platform"
	case pckProcessorCACN:
		pck.ca = "processor"
	default:
		return nil, chainErr(attestation.ErrChain, "intermediate is %q, want %q or %q", cn, pckPlatformCACN, pckProcessorCACN)
	}
	for _, c := range certs {
		if !isP256(c) {
			return nil, chainErr(attestation.ErrChain, "%q does not have an ECDSA P-256 key", c.Subject.CommonName)
		}
	}
	// Signatures inside the chain before validity, so that a tampered
	// certificate is reported as untrusted whatever field was changed.
	for i := range 2 {
		if err := certs[i].CheckSignatureFrom(certs[i+1]); err != nil {
			return nil, &attestation.Error{TEE: attestation.TEETDX, Check: check, Err: attestation.ErrChain,
				Detail: fmt.Sprintf("%q is not signed by %q", certs[i].Subject.CommonName, certs[i+1].Subject.CommonName), Cause: err}
		}
	}
	for _, c := range certs {
		if now.Before(c.NotBefore) || now.After(c.NotAfter) {
			return nil, attestation.Errorf(attestation.TEETDX, "pck validity", attestation.ErrExpired,
				"%q (serial %x) is valid from %s to %s, not at %s", c.Subject.CommonName, c.SerialNumber,
				c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
		}
	}
	intermediates := x509.NewCertPool()
	intermediates.AddCert(pck.intermediate)
	chains, err := pck.leaf.Verify(x509.VerifyOptions{
		Roots:         v.roots,
		Intermediates: intermediates,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return nil, &attestation.Error{TEE: attestation.TEETDX, Check: check, Err: attestation.ErrChain,
			Detail: "PCK certificate does not chain to a trusted root", Cause: err}
	}
	for _, c := range chains {
		if len(c) == 3 && c[1].Equal(pck.intermediate) && c[2].Equal(certs[2]) {
			pck.root = c[2]
		}
	}
	if pck.root == nil {
		return nil, chainErr(attestation.ErrChain, "the trusted root the PCK chain leads to is not the root embedded in the quote (%q)", certs[2].Subject)
	}

	ext, err := pcs.PckCertificateExtensions(pck.leaf)
	if err != nil {
		return nil, &attestation.Error{TEE: attestation.TEETDX, Check: "pck extensions", Err: attestation.ErrChain,
			Detail: "PCK certificate SGX extensions", Cause: err}
	}
	pck.fmspc, err = hex.DecodeString(ext.FMSPC)
	if err == nil {
		pck.pceID, err = hex.DecodeString(ext.PCEID)
	}
	if err != nil || len(pck.fmspc) != 6 || len(pck.pceID) != 2 || len(ext.TCB.CPUSvnComponents) != 16 {
		return nil, attestation.Errorf(attestation.TEETDX, "pck extensions", attestation.ErrChain,
			"PCK certificate SGX extensions: FMSPC %q, PCEID %q, %d TCB components", ext.FMSPC, ext.PCEID, len(ext.TCB.CPUSvnComponents))
	}
	pck.pceSVN = ext.TCB.PCESvn
	pck.cpuSVN = ext.TCB.CPUSvnComponents
	return pck, nil
}

// parseCanonicalPEM parses concatenated PEM CERTIFICATE blocks and requires
// the input to be exactly their canonical encoding (as pem.Encode writes
// it), optionally followed by one NUL byte, so that no byte of the chain
// goes unaccounted for.
func parseCanonicalPEM(b []byte) ([]*x509.Certificate, error) {
	b = bytes.TrimSuffix(b, []byte{0})
	var certs []*x509.Certificate
	rest := b
	for len(rest) > 0 {
		block, r := pem.Decode(rest)
		if block == nil {
			return nil, fmt.Errorf("%d bytes after certificate %d are not PEM", len(rest), len(certs))
		}
		if block.Type != "CERTIFICATE" || len(block.Headers) != 0 {
			return nil, fmt.Errorf("PEM block %d is %q, want a plain CERTIFICATE", len(certs), block.Type)
		}
		if enc := pem.EncodeToMemory(block); !bytes.HasPrefix(rest, enc) {
			return nil, fmt.Errorf("PEM block %d is not canonically encoded", len(certs))
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs), err)
		}
		certs = append(certs, cert)
		rest = r
	}
	return certs, nil
}

func isP256(c *x509.Certificate) bool {
	k, ok := c.PublicKey.(*ecdsa.PublicKey)
	return ok && k.Curve == elliptic.P256()
}

// p256Key decodes a raw X||Y P-256 public key.
func p256Key(raw []byte) (*ecdsa.PublicKey, error) {
	if len(raw) != 64 {
		return nil, fmt.Errorf("%d bytes, want 64", len(raw))
	}
	// ecdsa.ParseUncompressedPublicKey checks that the point is on the curve.
	return ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append([]byte{4}, raw...))
}

// verifyP256 checks an ECDSA P-256 SHA-256 signature in raw r||s form.
func verifyP256(pub *ecdsa.PublicKey, msg, sig []byte) bool {
	if len(sig) != 64 {
		return false
	}
	h := sha256.Sum256(msg)
	r := new(big.Int).SetBytes(sig[:32])
	s := new(big.Int).SetBytes(sig[32:])
	return ecdsa.Verify(pub, h[:], r, s)
}

package sevsnp

import (
	"bytes"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/google/go-sev-guest/abi"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	"github.com/greatjail/cvm/attestation"
)

// Limits on untrusted evidence, beyond attestation.MaxEvidenceSize.
const (
	// maxCertificates bounds Evidence.Certificates; a full SEV-SNP chain
	// is at most five certificates.
	maxCertificates = 16
	// maxTableEntries bounds the GUID certificate table.
	maxTableEntries = 64
)

// keyKind is the kind of key that signed a report.
type keyKind int

const (
	vcekKind keyKind = iota // Versioned Chip Endorsement Key
	vlekKind                // Versioned Loaded Endorsement Key
)

// String returns "vcek" or "vlek", the form used in claims and check names.
func (k keyKind) String() string {
	if k == vlekKind {
		return "vlek"
	}
	return "vcek"
}

func (k keyKind) signer() abi.ReportSigner {
	if k == vlekKind {
		return abi.VlekReportSigner
	}
	return abi.VcekReportSigner
}

// evidence is SEV-SNP evidence after parsing and before any trust decision.
type evidence struct {
	// raw is the 0x4A0-byte ATTESTATION_REPORT; it re-encodes exactly
	// from report.
	raw    []byte
	report *spb.Report
	kind   keyKind
	// platformCPUID is CPUID(1).EAX from the extended report's extra
	// platform info entry, or 0. Host-supplied and unsigned: a hint.
	platformCPUID uint32
	// vcek and vlek are the endorsement key certificates found, if any.
	vcek, vlek *x509.Certificate
	// others are the other AMD certificates supplied (ASK, ASVK, ARK).
	// They are never trusted; they are only screened for the simulated
	// marker.
	others []*x509.Certificate
}

// endorsement returns the certificate of the key kind that signed the
// report, or nil.
func (e *evidence) endorsement() *x509.Certificate {
	if e.kind == vlekKind {
		return e.vlek
	}
	return e.vcek
}

// all returns every certificate in the evidence.
func (e *evidence) all() []*x509.Certificate {
	var out []*x509.Certificate
	for _, c := range []*x509.Certificate{e.vcek, e.vlek} {
		if c != nil {
			out = append(out, c)
		}
	}
	return append(out, e.others...)
}

// GUIDs of the extended report certificate table (GHCB specification),
// as stored in the table.
var (
	guidVCEK     = mustGUID(abi.VcekGUID)
	guidVLEK     = mustGUID(abi.VlekGUID)
	guidASK      = mustGUID(abi.AskGUID)
	guidARK      = mustGUID(abi.ArkGUID)
	guidPlatform = mustGUID(abi.ExtraPlatformInfoGUID)
)

func mustGUID(s string) [16]byte {
	var g [16]byte
	b, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(b) != len(g) {
		panic("sevsnp: bad GUID " + s)
	}
	copy(g[:], b)
	return g
}

// tableEntry is one entry of the certificate table.
type tableEntry struct {
	guid [16]byte
	data []byte
}

// parseCertTable parses the GUID certificate table of an extended report
// (SNP_GET_EXT_REPORT data pages, configfs-tsm auxblob): 24-byte headers
// {GUID, offset, length} ended by an all-zero header, then the blobs the
// offsets point at. It does its own bounds arithmetic in 64 bits: the
// go-sev-guest parser (abi.CertTable.Unmarshal) adds offset and length in
// uint32 and panics on tables whose sum wraps around.
func parseCertTable(b []byte) ([]tableEntry, error) {
	if len(b) == 0 {
		return nil, nil
	}
	type header struct {
		guid           [16]byte
		offset, length uint32
	}
	var headers []header
	for i := 0; ; i++ {
		at := i * abi.CertTableEntrySize
		if at+abi.CertTableEntrySize > len(b) {
			return nil, fmt.Errorf("header %d is truncated: table is %d bytes and has no all-zero terminator", i, len(b))
		}
		var h header
		copy(h.guid[:], b[at:at+16])
		h.offset = binary.LittleEndian.Uint32(b[at+16:])
		h.length = binary.LittleEndian.Uint32(b[at+20:])
		if h == (header{}) {
			break
		}
		if i == maxTableEntries {
			return nil, fmt.Errorf("more than %d entries", maxTableEntries)
		}
		headers = append(headers, h)
	}
	end := uint64(len(headers)+1) * abi.CertTableEntrySize
	var out []tableEntry
	for i, h := range headers {
		if uint64(h.offset) < end || uint64(h.offset)+uint64(h.length) > uint64(len(b)) {
			return nil, fmt.Errorf("entry %d (offset %d, length %d) is outside the data area [%d, %d)", i, h.offset, h.length, end, len(b))
		}
		for _, e := range out {
			if e.guid == h.guid {
				return nil, fmt.Errorf("entry %d repeats GUID %x", i, h.guid)
			}
		}
		out = append(out, tableEntry{guid: h.guid, data: b[h.offset : h.offset+h.length]})
	}
	return out, nil
}

// parseReport parses a 0x4A0-byte ATTESTATION_REPORT. Besides what
// abi.ReportToProto checks (reserved fields zero, guest policy, signer
// info), it requires a known version and signature algorithm and that the
// proto re-encodes to exactly raw, so that every byte the claims come from
// is covered by the signature check (go-sev-guest verifies the signature
// over the re-encoded proto).
func parseReport(raw []byte) (*spb.Report, error) {
	if len(raw) != abi.ReportSize {
		return nil, fmt.Errorf("report is %d bytes, want %d (0x%X)", len(raw), abi.ReportSize, abi.ReportSize)
	}
	if v := binary.LittleEndian.Uint32(raw); v < abi.MinSupportedReportVersion || v > abi.MaxSupportedReportVersion {
		return nil, fmt.Errorf("report version %d, want %d to %d", v, abi.MinSupportedReportVersion, abi.MaxSupportedReportVersion)
	}
	if a := abi.SignatureAlgo(raw); a != abi.SignEcdsaP384Sha384 {
		return nil, fmt.Errorf("signature algorithm %d, want %d (ECDSA P-384 with SHA-384)", a, abi.SignEcdsaP384Sha384)
	}
	r, err := abi.ReportToProto(raw)
	if err != nil {
		return nil, err
	}
	back, err := abi.ReportToAbiBytes(r)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(back, raw) {
		return nil, fmt.Errorf("non-canonical encoding: byte 0x%X does not survive parsing", firstDiff(back, raw))
	}
	return r, nil
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// parseEvidence checks sizes and parses the report, the certificate table
// and the certificates. It makes no trust decision. Errors are
// *attestation.Error wrapping ErrTooLarge or ErrMalformed (ErrSignature
// for a report that declares no signing key).
func parseEvidence(tee attestation.TEE, ev *attestation.Evidence) (*evidence, error) {
	if err := attestation.CheckSize(tee, "report", ev.Report, attestation.MaxEvidenceSize); err != nil {
		return nil, err
	}
	if err := attestation.CheckSize(tee, "cert table", ev.CertTable, attestation.MaxEvidenceSize); err != nil {
		return nil, err
	}
	if len(ev.Certificates) > maxCertificates {
		return nil, attestation.Errorf(tee, "certificates", attestation.ErrTooLarge, "%d certificates, limit %d", len(ev.Certificates), maxCertificates)
	}
	total := 0
	for _, c := range ev.Certificates {
		total += len(c)
	}
	if total > attestation.MaxEvidenceSize {
		return nil, attestation.Errorf(tee, "certificates", attestation.ErrTooLarge, "%d bytes of certificates, limit %d", total, attestation.MaxEvidenceSize)
	}

	if len(ev.Report) < abi.ReportSize {
		return nil, attestation.Errorf(tee, "report", attestation.ErrMalformed, "truncated: %d bytes, an SEV-SNP report is %d (0x%X)", len(ev.Report), abi.ReportSize, abi.ReportSize)
	}
	e := &evidence{raw: ev.Report[:abi.ReportSize]}
	var err error
	if e.report, err = parseReport(e.raw); err != nil {
		return nil, attestation.Wrap(tee, "report", attestation.ErrMalformed, err)
	}
	info, err := abi.ParseSignerInfo(e.report.GetSignerInfo())
	if err != nil { // unreachable: ReportToProto checked it
		return nil, attestation.Wrap(tee, "report", attestation.ErrMalformed, err)
	}
	switch info.SigningKey {
	case abi.VcekReportSigner:
		e.kind = vcekKind
	case abi.VlekReportSigner:
		e.kind = vlekKind
	default:
		return nil, attestation.Errorf(tee, "report signature", attestation.ErrSignature, "the report declares signing key %v: it is not signed", info.SigningKey)
	}

	table := ev.Report[abi.ReportSize:]
	if len(ev.CertTable) > 0 {
		if len(table) > 0 && !bytes.Equal(table, ev.CertTable) {
			return nil, attestation.Errorf(tee, "cert table", attestation.ErrMalformed, "two different certificate tables: one after the report and one given separately")
		}
		table = ev.CertTable
	}
	entries, err := parseCertTable(table)
	if err != nil {
		return nil, attestation.Wrap(tee, "cert table", attestation.ErrMalformed, err)
	}

	var ders [][]byte
	for _, t := range entries {
		switch t.guid {
		case guidVCEK, guidVLEK, guidASK, guidARK:
			ders = append(ders, t.data)
		case guidPlatform:
			pi, err := abi.ParseExtraPlatformInfo(t.data)
			if err != nil {
				return nil, attestation.Wrap(tee, "cert table", attestation.ErrMalformed, fmt.Errorf("extra platform info: %w", err))
			}
			e.platformCPUID = pi.Cpuid1Eax
		}
	}
	ders = append(ders, ev.Certificates...)
	for i, der := range ders {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, attestation.Wrap(tee, "certificates", attestation.ErrMalformed, fmt.Errorf("certificate %d: %w", i, err))
		}
		if err := e.addCertificate(c); err != nil {
			return nil, attestation.Wrap(tee, "certificates", attestation.ErrMalformed, err)
		}
	}
	return e, nil
}

// addCertificate classifies c by its subject common name.
func (e *evidence) addCertificate(c *x509.Certificate) error {
	var slot **x509.Certificate
	switch cn := c.Subject.CommonName; cn {
	case "SEV-VCEK":
		slot = &e.vcek
	case "SEV-VLEK":
		slot = &e.vlek
	default:
		if _, _, ok := rootRole(c); !ok {
			return fmt.Errorf("certificate with subject CN %q is not an AMD SEV-SNP certificate (want SEV-VCEK, SEV-VLEK, SEV-<line>, SEV-VLEK-<line> or ARK-<line>)", cn)
		}
		for _, o := range e.others {
			if o.Equal(c) {
				return nil
			}
		}
		e.others = append(e.others, c)
		return nil
	}
	if *slot != nil && !(*slot).Equal(c) {
		return fmt.Errorf("two different %s certificates", c.Subject.CommonName)
	}
	*slot = c
	return nil
}

// Package attestation turns hardware evidence (SEV-SNP reports, TDX quotes,
// TPM quotes, simulated-TEE reports) into verified, normalized Claims.
//
// The contract every verifier keeps: Verify returns Claims only after every
// signature, certificate chain and binding check it is able to perform has
// passed. Checks that only add assurance and could not be performed (a CRL
// or TDX collateral in offline mode) are listed in Claims.Unchecked so that
// policy, a separate and pure step, can decide whether to accept them.
// Nothing downstream of a verifier ever sees unverified evidence.
//
// Verifiers never read the clock, the network or the filesystem directly:
// those are injected through each verifier's options, so every verifier runs
// offline on recorded evidence.
package attestation

import (
	"context"
)

// TEE names a kind of trusted execution environment.
type TEE string

// The TEE kinds cvm understands. TEESim is the simulated TEE of DESIGN.md:
// reports in the SEV-SNP format signed by a locally generated chain. It is
// never selected by default and never reported as TEESEVSNP.
const (
	TEESEVSNP TEE = "snp"
	TEETDX    TEE = "tdx"
	TEETPM    TEE = "tpm"
	TEESim    TEE = "sim"
)

// ParseTEE returns the TEE named by s ("snp", "tdx", "tpm", "sim"), or an
// error wrapping ErrUnsupported.
func ParseTEE(s string) (TEE, error) {
	switch t := TEE(s); t {
	case TEESEVSNP, TEETDX, TEETPM, TEESim:
		return t, nil
	}
	return "", &Error{Check: "tee", Err: ErrUnsupported, Detail: "unknown TEE " + quote(s) + " (want snp, tdx, tpm or sim)"}
}

// Evidence is what a guest presents: the raw hardware report or quote plus
// the endorsements needed to check it. All fields are untrusted bytes.
type Evidence struct {
	// TEE says which verifier must check this evidence.
	TEE TEE
	// Report is the raw signed statement: an SEV-SNP ATTESTATION_REPORT
	// (0x4A0 bytes, optionally followed by the GUID certificate table as
	// returned by configfs-tsm or SNP_GET_EXT_REPORT), a TDX quote (v4), or
	// the TPMS_ATTEST structure of a TPM quote (the contents of the
	// TPM2B_ATTEST that TPM2_Quote returns, without its size prefix).
	Report []byte
	// Signature is the TPMT_SIGNATURE over Report (TPM only).
	Signature []byte
	// CertTable is the SEV-SNP extended-report GUID certificate table
	// (auxblob), when it is supplied separately from Report.
	CertTable []byte
	// Certificates are additional DER certificates (VCEK/VLEK/ASK/ASVK/ARK
	// for SEV-SNP, PCK chain for TDX, AK certificate for TPM). Order is
	// not significant; verifiers classify them.
	Certificates [][]byte
	// EventLog is a measured-boot event log (TCG PC Client for TPM, CCEL for
	// TDX) to be replayed against the quoted registers.
	EventLog []byte
	// PCRs are the PCR values the TPM quote claims to cover, by index, in
	// the quote's hash bank (TPM only). The verifier checks them against
	// the quote's PCR digest before trusting any of them.
	PCRs map[int][]byte
	// AKPublic is the TPMT_PUBLIC of the attestation key (TPM only).
	AKPublic []byte
}

// Verifier checks evidence of one TEE kind. Implementations are safe for
// concurrent use and build any per-request library state afresh per call.
type Verifier interface {
	// Verify returns claims only if every check it can perform passed.
	// Errors wrap one of the sentinel errors of this package and are
	// usually an *Error naming the failed check.
	Verify(ctx context.Context, ev *Evidence) (*Claims, error)
}

// MaxEvidenceSize bounds every evidence field a verifier accepts; larger
// inputs fail with ErrTooLarge before any parsing.
const MaxEvidenceSize = 1 << 20

func quote(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return "\"" + s + "\""
}

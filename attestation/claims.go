package attestation

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
)

// Claims are the normalized facts a verifier vouches for after every check
// passed. They are TEE-neutral where possible; fields that exist for only
// one TEE are empty for the others. The JSON form is documented in
// docs/claims.md and is what policy and `cvm attest verify` see.
type Claims struct {
	// TEE is the kind of environment, as established by the verifier that
	// produced these claims (a sim report is always TEESim).
	TEE TEE `json:"tee"`
	// Product is the platform product line: "Milan", "Genoa", "Turin" for
	// SEV-SNP and sim; "TDX" plus FMSPC detail in TDX; "TPM" for TPM.
	Product string `json:"product,omitempty"`
	// Measurement is the launch measurement: SEV-SNP MEASUREMENT (48
	// bytes), TDX MRTD (48 bytes). Empty for TPM.
	Measurement Hex `json:"measurement,omitempty"`
	// RTMRs are the four TDX runtime measurement registers.
	RTMRs []Hex `json:"rtmrs,omitempty"`
	// PCRs are TPM PCR values covered by the verified quote.
	PCRs *PCRs `json:"pcrs,omitempty"`
	// ReportData is the 64-byte REPORT_DATA (SNP, TDX) or the TPM quote's
	// extraData (qualifying data).
	ReportData Hex `json:"report_data"`
	// HostData is the SEV-SNP HOST_DATA (32 bytes) set by the launcher.
	HostData Hex `json:"host_data,omitempty"`
	// MRConfigID, MROwner and MROwnerConfig are TDX TD fields (48 bytes).
	MRConfigID    Hex `json:"mr_config_id,omitempty"`
	MROwner       Hex `json:"mr_owner,omitempty"`
	MROwnerConfig Hex `json:"mr_owner_config,omitempty"`
	// Debug is true when the guest can be debugged by the host: the SEV-SNP
	// guest policy DEBUG bit, or the TDX TD_ATTRIBUTES DEBUG bit.
	Debug bool `json:"debug"`
	// MigrationAgent is true when the SEV-SNP policy allows a migration
	// agent (MIGRATE_MA), or a TDX TD allows migration.
	MigrationAgent bool `json:"migration_agent"`
	// SMT is true when the SEV-SNP policy allows simultaneous
	// multithreading on the host.
	SMT bool `json:"smt"`
	// VMPL is the SEV-SNP VM privilege level that requested the report.
	VMPL *int `json:"vmpl,omitempty"`
	// GuestSVN and Policy are the SEV-SNP GUEST_SVN and raw guest POLICY.
	GuestSVN *uint32 `json:"guest_svn,omitempty"`
	Policy   *uint64 `json:"policy,omitempty"`
	// TCB carries SEV-SNP committed, launch, reported and current TCB
	// versions.
	TCB *SNPTCB `json:"tcb,omitempty"`
	// Signer is "vcek" or "vlek" for SEV-SNP and sim.
	Signer string `json:"signer,omitempty"`
	// ChipID is the SEV-SNP CHIP_ID (64 bytes; all zero when masked).
	ChipID Hex `json:"chip_id,omitempty"`
	// TDX holds the TD and platform fields specific to TDX.
	TDX *TDXClaims `json:"tdx,omitempty"`
	// CollateralExpiry is the earliest nextUpdate of the collateral used
	// (TDX TCB info, QE identity, CRLs; SNP CRL), if any was checked.
	CollateralExpiry *time.Time `json:"collateral_expiry,omitempty"`
	// Unchecked lists assurance-only checks that could not be performed
	// (for example "crl" or "tdx collateral" in offline mode). Policy
	// decides whether these are acceptable; empty means every check ran.
	Unchecked []string `json:"unchecked,omitempty"`
	// VerifiedAt is the verification time the verifier used.
	VerifiedAt time.Time `json:"verified_at"`
}

// TCBVersion is an SEV-SNP TCB_VERSION split into its security patch
// levels. Raw is the 64-bit value as it appears in the report.
type TCBVersion struct {
	// Raw is a decimal JSON string: it does not fit the 53-bit integers
	// many JSON readers use.
	Raw        uint64 `json:"raw,string"`
	Bootloader uint8  `json:"bootloader"`
	TEE        uint8  `json:"tee"`
	SNP        uint8  `json:"snp"`
	Microcode  uint8  `json:"microcode"`
	// FMC is the Turin firmware microcode component, zero before Turin.
	FMC uint8 `json:"fmc,omitempty"`
}

// SNPTCB holds the TCB versions an SEV-SNP report carries. Minimum-TCB
// policy must compare both Committed and Launch.
type SNPTCB struct {
	Current   TCBVersion `json:"current"`
	Committed TCBVersion `json:"committed"`
	Launch    TCBVersion `json:"launch"`
	Reported  TCBVersion `json:"reported"`
}

// TDXClaims are the TDX-only fields.
type TDXClaims struct {
	// TCBStatus is our evaluation of the platform TCB against Intel's TCB
	// info: one of the TCBStatus* constants, or "unknown" when no
	// collateral was available.
	TCBStatus string `json:"tcb_status"`
	// QETCBStatus is the quoting enclave's status from the QE identity.
	QETCBStatus string `json:"qe_tcb_status,omitempty"`
	// AdvisoryIDs are the Intel security advisories listed for the
	// matched TCB level.
	AdvisoryIDs []string `json:"advisory_ids,omitempty"`
	// TCBDate is the tcbDate of the matched TCB level.
	TCBDate      *time.Time `json:"tcb_date,omitempty"`
	TEETCBSVN    Hex        `json:"tee_tcb_svn"`
	MRSEAM       Hex        `json:"mr_seam"`
	TDAttributes Hex        `json:"td_attributes"`
	XFAM         Hex        `json:"xfam"`
	FMSPC        Hex        `json:"fmspc,omitempty"`
}

// TDX TCB statuses, as Intel's TCB info names them, plus "unknown" when
// the status could not be evaluated (no collateral).
const (
	TCBStatusUpToDate                          = "UpToDate"
	TCBStatusSWHardeningNeeded                 = "SWHardeningNeeded"
	TCBStatusConfigurationNeeded               = "ConfigurationNeeded"
	TCBStatusConfigurationAndSWHardeningNeeded = "ConfigurationAndSWHardeningNeeded"
	TCBStatusOutOfDate                         = "OutOfDate"
	TCBStatusOutOfDateConfigurationNeeded      = "OutOfDateConfigurationNeeded"
	TCBStatusRevoked                           = "Revoked"
	TCBStatusUnknown                           = "unknown"
)

// PCRs are TPM PCR values in one hash bank.
type PCRs struct {
	// Hash is the bank's algorithm: "sha1", "sha256", "sha384", "sha512".
	Hash string `json:"hash"`
	// Values maps PCR index (as a decimal string in JSON) to its value.
	Values map[int]Hex `json:"values"`
}

// Hex is a byte string that marshals to and from lowercase hex in JSON.
type Hex []byte

// String returns the lowercase hex encoding.
func (h Hex) String() string { return hex.EncodeToString(h) }

// MarshalJSON encodes h as a lowercase hex JSON string.
func (h Hex) MarshalJSON() ([]byte, error) { return json.Marshal(hex.EncodeToString(h)) }

// UnmarshalJSON decodes a hex JSON string (either case).
func (h *Hex) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("hex: %w", err)
	}
	d, err := hex.DecodeString(s)
	if err != nil {
		return fmt.Errorf("hex: %w", err)
	}
	*h = d
	return nil
}

// Package policy decides whether the key broker releases a resource to an
// attested guest. It works in two steps over verified claims
// (*attestation.Claims), never over raw evidence:
//
//  1. Appraise compares the claims with the operator's reference state
//     (Reference): allowlists of measurements and other launch values per
//     TEE, and per-TEE Requirements (minimum SEV-SNP TCB, accepted TDX TCB
//     statuses, collateral freshness, minimum guest SVN, which unchecked
//     assurance checks are tolerated). The result is an Appraisal with an
//     EAR trust tier (affirming, warning, contraindicated) and one Reason per
//     rule, whether it passed or not.
//  2. Decide applies a resource's release rule, a CEL expression over the
//     claims and the appraisal. A resource without its own rule is released
//     only when the appraisal is affirming. A rule can narrow that, or accept
//     a warning, but it can never release a contraindicated appraisal: a debug
//     guest or an unknown measurement stays denied whatever a rule says.
//
// Everything defaults to deny. With no reference values for a TEE nothing
// from that TEE is affirming, so an empty broker releases nothing.
//
// Every Appraisal and Decision carries its reasons. They are for the
// operator (the audit log, the dry-run `evaluate`); the broker tells the
// guest only that it was denied.
//
// The package is pure: no cryptography, no I/O, no clock (the time is a
// parameter) and no randomness. All functions are safe for concurrent use;
// a compiled *Program may be shared by any number of goroutines.
package policy

import (
	"errors"
	"fmt"

	"github.com/greatjail/cvm/attestation"
)

// Sentinel errors. Callers branch on these with errors.Is; the wrapped text
// names the offending field or rule for the operator.
var (
	// ErrInvalidReference: a reference document, value, requirement or
	// imported measurement is malformed or inconsistent.
	ErrInvalidReference = errors.New("invalid reference")
	// ErrInvalidRule: a release rule does not parse, does not type-check,
	// does not yield a bool, or exceeds a limit.
	ErrInvalidRule = errors.New("invalid rule")
)

// Limits on operator input.
const (
	// MaxReferenceSize bounds a reference document given to ParseReference
	// and a measurement document given to ImportMeasurement.
	MaxReferenceSize = 1 << 20
	// MaxRuleSize bounds a release rule's expression, in bytes.
	MaxRuleSize = 4 << 10
	// MaxRuleDepth bounds the nesting of a rule's expression (the CEL
	// parser's recursion limit): it keeps compiling a rule fast.
	MaxRuleDepth = 32
	// MaxRuleCost bounds the CEL runtime cost of one evaluation of a rule.
	// A rule that exceeds it is denied, never released.
	MaxRuleCost = 100_000
	// MaxNameSize bounds a rule name, a reference value's ID, a product name
	// and an accept_unchecked entry.
	MaxNameSize = 256
	// MaxNoteSize bounds a reference value's Note.
	MaxNoteSize = 1024
)

// Reference value kinds. Besides these, "rtmr0".."rtmr3" (TDX) and
// "pcr0".."pcr23" (TPM) are kinds.
const (
	// KindMeasurement is the launch measurement: SEV-SNP and sim
	// MEASUREMENT, TDX MRTD (48 bytes). Mandatory for snp, sim and tdx.
	KindMeasurement = "measurement"
	// KindHostData is the SEV-SNP and sim HOST_DATA (32 bytes).
	KindHostData = "host_data"
	// KindMRConfigID is the TDX MRCONFIGID (48 bytes).
	KindMRConfigID = "mr_config_id"
	// KindChipID is the SEV-SNP and sim CHIP_ID (64 bytes, never all zero).
	KindChipID = "chip_id"
)

// ReferenceValue is one accepted value, registered by an operator or
// imported from `cvm measure --json` (ImportMeasurement).
//
// Kinds and their TEEs: "measurement" (snp, sim, tdx), "host_data" and
// "chip_id" (snp, sim), "rtmr0".."rtmr3" and "mr_config_id" (tdx),
// "pcr0".."pcr23" (tpm; the value's length selects the bank: 20, 32, 48
// or 64 bytes for sha1, sha256, sha384, sha512, and it matches only a
// quote in that bank).
type ReferenceValue struct {
	// ID is assigned by the broker; informational here (reasons name it).
	ID    string          `json:"id"`
	TEE   attestation.TEE `json:"tee"`
	Kind  string          `json:"kind"`
	Value attestation.Hex `json:"value"`
	Note  string          `json:"note,omitempty"`
}

// Requirements are per-TEE appraisal settings beyond allowlists. At most
// one Requirements per TEE; a TEE without one gets the zero value, whose
// only non-trivial default is that TDX accepts only the "UpToDate" TCB
// status.
type Requirements struct {
	TEE attestation.TEE `json:"tee"`
	// MinTCB is the minimum SEV-SNP TCB per product ("Milan", "Genoa",
	// "Turin"; snp and sim only). Each security patch level of the
	// claims' committed AND launch TCB must be at least the minimum's
	// (bootloader, tee, snp, microcode, fmc); Raw is ignored. When MinTCB
	// is set, a product without an entry is contraindicated.
	MinTCB map[string]attestation.TCBVersion `json:"min_tcb,omitempty"`
	// AllowedTDXTCBStatuses are the accepted TDX tcb_status values (tdx
	// only). Default ["UpToDate"]. "unknown" (no collateral was
	// available) is accepted only if listed.
	AllowedTDXTCBStatuses []string `json:"allowed_tdx_tcb_statuses,omitempty"`
	// RequireFreshCollateral requires a collateral_expiry after the
	// appraisal time (snp and tdx only: sim and tpm claims have none).
	RequireFreshCollateral bool `json:"require_fresh_collateral,omitempty"`
	// AcceptUnchecked lists claims.unchecked entries tolerated without
	// downgrading the appraisal to warning (for example "crl"). For tee
	// sim, "crl" is always accepted: a simulated chain has no CRL.
	AcceptUnchecked []string `json:"accept_unchecked,omitempty"`
	// MinGuestSVN is the minimum SEV-SNP GUEST_SVN (snp and sim only).
	MinGuestSVN *uint32 `json:"min_guest_svn,omitempty"`
}

// Reference is the broker's whole reference state.
type Reference struct {
	Values       []ReferenceValue `json:"values,omitempty"`
	Requirements []Requirements   `json:"requirements,omitempty"`
}

// Status is an EAR trust tier.
type Status string

// The trust tiers of an Appraisal.
const (
	// StatusAffirming: every rule passed.
	StatusAffirming Status = "affirming"
	// StatusWarning: no rule failed but at least one warned (for example an
	// unchecked CRL that the requirements do not accept).
	StatusWarning Status = "warning"
	// StatusContraindicated: at least one rule failed. Nothing is released.
	StatusContraindicated Status = "contraindicated"
)

// Reason outcomes.
const (
	OutcomePass = "pass"
	OutcomeFail = "fail"
	OutcomeWarn = "warn"
	OutcomeSkip = "skip"
)

// Reason is one rule's verdict. Detail is for the operator only.
type Reason struct {
	// Rule names the rule: an appraisal rule (see Appraise), a release
	// rule's name, DefaultRule or ContraindicatedRule.
	Rule string `json:"rule"`
	// Outcome is OutcomePass, OutcomeFail, OutcomeWarn or OutcomeSkip.
	Outcome string `json:"outcome"`
	Detail  string `json:"detail"`
}

// Appraisal is the outcome of Appraise: a trust tier and every rule's
// reason, in a fixed order.
type Appraisal struct {
	Status  Status   `json:"status"`
	Reasons []Reason `json:"reasons"`
}

func (a *Appraisal) add(rule, outcome, format string, args ...any) {
	a.Reasons = append(a.Reasons, Reason{Rule: rule, Outcome: outcome, Detail: fmt.Sprintf(format, args...)})
}

func (a *Appraisal) pass(rule, format string, args ...any) {
	a.add(rule, OutcomePass, format, args...)
}

func (a *Appraisal) fail(rule, format string, args ...any) {
	a.add(rule, OutcomeFail, format, args...)
}

func (a *Appraisal) warn(rule, format string, args ...any) {
	a.add(rule, OutcomeWarn, format, args...)
}

func (a *Appraisal) skip(rule, format string, args ...any) {
	a.add(rule, OutcomeSkip, format, args...)
}

// settle sets Status from the reasons: contraindicated if any failed,
// else warning if any warned, else affirming.
func (a *Appraisal) settle() {
	a.Status = StatusAffirming
	for _, r := range a.Reasons {
		switch r.Outcome {
		case OutcomeFail:
			a.Status = StatusContraindicated
			return
		case OutcomeWarn:
			a.Status = StatusWarning
		}
	}
}

package policy

import (
	"bytes"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/greatjail/cvm/attestation"
)

// Appraisal rule names, as they appear in Reason.Rule. Allowlist rules are
// named by their kind ("measurement", "host_data", "chip_id", "rtmr0"..
// "rtmr3", "mr_config_id", "pcr0".."pcr23"); each unchecked entry is
// "unchecked: " followed by the entry.
const (
	ruleClaims          = "claims"
	ruleTEE             = "tee"
	ruleReference       = "reference"
	ruleReferenceValues = "reference_values"
	rulePCRs            = "pcrs"
	ruleDebug           = "debug"
	ruleMigrationAgent  = "migration_agent"
	ruleMinTCB          = "min_tcb"
	ruleMinGuestSVN     = "min_guest_svn"
	ruleTDXTCBStatus    = "tdx_tcb_status"
	ruleCollateral      = "collateral_freshness"
	ruleUnchecked       = "unchecked"
)

// Appraise compares claims with the reference state at time now and
// returns the trust tier with one Reason per rule, in this order:
//
//   - reference_values: the TEE must have at least one reference value;
//     with none, nothing from it is affirming (an empty broker releases
//     nothing).
//   - Allowlists. snp and sim: measurement (mandatory), host_data and
//     chip_id; tdx: measurement (MRTD, mandatory), rtmr0..rtmr3 and
//     mr_config_id; tpm: pcrs (at least one PCR kind must have values),
//     then every PCR kind that has values. An optional kind without values
//     is skipped; a kind with values must match one of them.
//   - debug and migration_agent: must be false; not configurable.
//   - snp and sim: min_tcb (committed and launch TCB against
//     Requirements.MinTCB for the claims' product) and min_guest_svn.
//   - tdx: tdx_tcb_status must be in Requirements.AllowedTDXTCBStatuses
//     (default "UpToDate"; "unknown" only if listed).
//   - collateral_freshness, when Requirements.RequireFreshCollateral.
//   - unchecked: each claims.unchecked entry not in
//     Requirements.AcceptUnchecked warns (it does not fail). For tee sim,
//     "crl" is always accepted: a simulated chain has no CRL.
//
// The status is contraindicated if any rule failed, else warning if any
// warned, else affirming. Nil claims (rule "claims"), an unknown TEE
// ("tee"), or reference entries for the claims' TEE that fail validation
// ("reference") are contraindicated at once, with that single reason;
// entries of other TEEs are not looked at. Appraise never panics and never
// returns nil.
func Appraise(c *attestation.Claims, ref *Reference, now time.Time) *Appraisal {
	a := &Appraisal{}
	a.appraise(c, ref, now)
	a.settle()
	return a
}

func (a *Appraisal) appraise(c *attestation.Claims, ref *Reference, now time.Time) {
	if c == nil {
		a.fail(ruleClaims, "no claims")
		return
	}
	if _, err := attestation.ParseTEE(string(c.TEE)); err != nil {
		a.fail(ruleTEE, "unknown tee %q", c.TEE)
		return
	}
	if ref == nil {
		ref = &Reference{}
	}
	byKind, req, err := ref.forTEE(c.TEE)
	if err != nil {
		a.fail(ruleReference, "the reference state for tee %s is invalid: %v", c.TEE, err)
		return
	}
	n := 0
	for _, vs := range byKind {
		n += len(vs)
	}
	if n == 0 {
		a.fail(ruleReferenceValues, "no reference values for tee %s: nothing from it is affirming", c.TEE)
	} else {
		a.pass(ruleReferenceValues, "%d reference values for tee %s", n, c.TEE)
	}

	switch c.TEE {
	case attestation.TEESEVSNP, attestation.TEESim:
		a.allowlist(c.TEE, KindMeasurement, c.Measurement, byKind, true)
		a.allowlist(c.TEE, KindHostData, c.HostData, byKind, false)
		a.allowlist(c.TEE, KindChipID, c.ChipID, byKind, false)
	case attestation.TEETDX:
		a.allowlist(c.TEE, KindMeasurement, c.Measurement, byKind, true)
		for i := range 4 {
			var v []byte
			if i < len(c.RTMRs) {
				v = c.RTMRs[i]
			}
			a.allowlist(c.TEE, "rtmr"+strconv.Itoa(i), v, byKind, false)
		}
		a.allowlist(c.TEE, KindMRConfigID, c.MRConfigID, byKind, false)
	case attestation.TEETPM:
		a.pcrs(c, byKind)
	}

	if c.Debug {
		a.fail(ruleDebug, "the guest is debuggable: the host can read and change its state")
	} else {
		a.pass(ruleDebug, "debugging is disabled")
	}
	if c.MigrationAgent {
		a.fail(ruleMigrationAgent, "the guest allows a migration agent or migration")
	} else {
		a.pass(ruleMigrationAgent, "migration is not allowed")
	}

	switch c.TEE {
	case attestation.TEESEVSNP, attestation.TEESim:
		a.minTCB(c, &req)
		a.minGuestSVN(c, &req)
	case attestation.TEETDX:
		a.tdxTCBStatus(c, &req)
	}
	a.collateral(c, &req, now)
	a.unchecked(c, &req)
}

// allowlist checks claim against the values of kind. A mandatory kind
// without values fails; an optional one is skipped.
func (a *Appraisal) allowlist(tee attestation.TEE, kind string, claim []byte, byKind map[string][]ReferenceValue, mandatory bool) {
	allowed := byKind[kind]
	if len(allowed) == 0 {
		if mandatory {
			a.fail(kind, "no reference values of kind %s for tee %s; it is mandatory", kind, tee)
		} else {
			a.skip(kind, "no reference values of kind %s for tee %s", kind, tee)
		}
		return
	}
	if len(claim) == 0 {
		a.fail(kind, "the claims carry no %s", kind)
		return
	}
	for _, v := range allowed {
		if bytes.Equal(v.Value, claim) {
			a.pass(kind, "%x matches reference value %s", claim, label(v))
			return
		}
	}
	a.fail(kind, "%x is not among the %d reference values of kind %s for tee %s", claim, len(allowed), kind, tee)
}

// pcrs checks every PCR kind that has reference values; at least one must.
func (a *Appraisal) pcrs(c *attestation.Claims, byKind map[string][]ReferenceValue) {
	var kinds []int
	for k := range byKind {
		if i, ok := kindIndex(k, "pcr", 23); ok {
			kinds = append(kinds, i)
		}
	}
	slices.Sort(kinds)
	if len(kinds) == 0 {
		a.fail(rulePCRs, "no PCR reference values for tee tpm; at least one PCR kind is required")
		return
	}
	names := make([]string, len(kinds))
	for j, i := range kinds {
		names[j] = "pcr" + strconv.Itoa(i)
	}
	a.pass(rulePCRs, "PCR allowlists: %s", strings.Join(names, ", "))
	bank := ""
	if c.PCRs != nil {
		bank = c.PCRs.Hash
	}
	for j, i := range kinds {
		kind := names[j]
		var v []byte
		if c.PCRs != nil {
			v = c.PCRs.Values[i]
		}
		if len(v) == 0 {
			a.fail(kind, "the claims carry no %s", kind)
			continue
		}
		matched := false
		for _, r := range byKind[kind] {
			if bytes.Equal(r.Value, v) {
				a.pass(kind, "%s %x matches reference value %s", bank, v, label(r))
				matched = true
				break
			}
		}
		if !matched {
			a.fail(kind, "%s %x is not among the %d reference values of kind %s", bank, v, len(byKind[kind]), kind)
		}
	}
}

// label names a reference value in a reason.
func label(v ReferenceValue) string {
	switch {
	case v.ID != "":
		return strconv.Quote(v.ID)
	case v.Note != "":
		return "(note " + strconv.Quote(v.Note) + ")"
	}
	return "(no id)"
}

func (a *Appraisal) minTCB(c *attestation.Claims, req *Requirements) {
	if len(req.MinTCB) == 0 {
		a.skip(ruleMinTCB, "no minimum TCB configured for tee %s", c.TEE)
		return
	}
	floor, ok := req.MinTCB[c.Product]
	if !ok {
		a.fail(ruleMinTCB, "no minimum TCB for product %q", c.Product)
		return
	}
	if c.TCB == nil {
		a.fail(ruleMinTCB, "the claims carry no TCB")
		return
	}
	var short []string
	for _, v := range []struct {
		name string
		tcb  attestation.TCBVersion
	}{{"committed", c.TCB.Committed}, {"launch", c.TCB.Launch}} {
		for _, comp := range tcbComponents(v.tcb, floor) {
			if comp.got < comp.want {
				short = append(short, fmt.Sprintf("%s %s %d < %d", v.name, comp.name, comp.got, comp.want))
			}
		}
	}
	if len(short) > 0 {
		a.fail(ruleMinTCB, "TCB below the minimum for %q: %s", c.Product, strings.Join(short, ", "))
		return
	}
	a.pass(ruleMinTCB, "committed and launch TCB meet the minimum for %q (%s)", c.Product, formatTCB(floor))
}

type tcbComponent struct {
	name      string
	got, want uint8
}

func tcbComponents(got, want attestation.TCBVersion) []tcbComponent {
	return []tcbComponent{
		{"bootloader", got.Bootloader, want.Bootloader},
		{"tee", got.TEE, want.TEE},
		{"snp", got.SNP, want.SNP},
		{"microcode", got.Microcode, want.Microcode},
		{"fmc", got.FMC, want.FMC},
	}
}

func formatTCB(t attestation.TCBVersion) string {
	var parts []string
	for _, c := range tcbComponents(t, t) {
		parts = append(parts, fmt.Sprintf("%s %d", c.name, c.want))
	}
	return strings.Join(parts, ", ")
}

func (a *Appraisal) minGuestSVN(c *attestation.Claims, req *Requirements) {
	switch {
	case req.MinGuestSVN == nil:
		a.skip(ruleMinGuestSVN, "no minimum guest SVN configured for tee %s", c.TEE)
	case c.GuestSVN == nil:
		a.fail(ruleMinGuestSVN, "the claims carry no guest_svn")
	case *c.GuestSVN < *req.MinGuestSVN:
		a.fail(ruleMinGuestSVN, "guest_svn %d < minimum %d", *c.GuestSVN, *req.MinGuestSVN)
	default:
		a.pass(ruleMinGuestSVN, "guest_svn %d >= minimum %d", *c.GuestSVN, *req.MinGuestSVN)
	}
}

// defaultTDXTCBStatuses is what a TDX appraisal accepts when the
// requirements list no statuses.
var defaultTDXTCBStatuses = []string{attestation.TCBStatusUpToDate}

func (a *Appraisal) tdxTCBStatus(c *attestation.Claims, req *Requirements) {
	allowed := req.AllowedTDXTCBStatuses
	if len(allowed) == 0 {
		allowed = defaultTDXTCBStatuses
	}
	if c.TDX == nil {
		a.fail(ruleTDXTCBStatus, "the claims carry no tdx fields")
		return
	}
	s := c.TDX.TCBStatus
	if slices.Contains(allowed, s) {
		a.pass(ruleTDXTCBStatus, "tcb status %q is allowed", s)
		return
	}
	why := ""
	if s == attestation.TCBStatusUnknown {
		why = " (no collateral was available to evaluate it)"
	}
	a.fail(ruleTDXTCBStatus, "tcb status %q%s is not allowed (allowed: %s)", s, why, strings.Join(allowed, ", "))
}

func (a *Appraisal) collateral(c *attestation.Claims, req *Requirements, now time.Time) {
	switch {
	case !req.RequireFreshCollateral:
		a.skip(ruleCollateral, "fresh collateral is not required for tee %s", c.TEE)
	case c.CollateralExpiry == nil:
		a.fail(ruleCollateral, "no collateral_expiry: the collateral was not checked")
	case !c.CollateralExpiry.After(now):
		a.fail(ruleCollateral, "the collateral expired at %s (now %s)", c.CollateralExpiry.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	default:
		a.pass(ruleCollateral, "the collateral is valid until %s", c.CollateralExpiry.UTC().Format(time.RFC3339))
	}
}

// uncheckedCRL is the claims.unchecked entry for a CRL that was not
// checked.
const uncheckedCRL = "crl"

func (a *Appraisal) unchecked(c *attestation.Claims, req *Requirements) {
	if len(c.Unchecked) == 0 {
		a.pass(ruleUnchecked, "every verification check ran")
		return
	}
	for _, u := range c.Unchecked {
		rule := ruleUnchecked + ": " + u
		switch {
		case c.TEE == attestation.TEESim && u == uncheckedCRL:
			a.pass(rule, "a simulated chain has no CRL: always accepted for tee sim")
		case slices.Contains(req.AcceptUnchecked, u):
			a.pass(rule, "accepted by the requirements for tee %s", c.TEE)
		default:
			a.warn(rule, "%q could not be checked and is not in accept_unchecked for tee %s", u, c.TEE)
		}
	}
}

package policy_test

import (
	"encoding/hex"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/policy"
)

func hx(b []byte) string { return hex.EncodeToString(b) }

func mutate(c *attestation.Claims, f func(*attestation.Claims)) *attestation.Claims {
	f(c)
	return c
}

// TestAppraise checks each appraisal rule, passing and failing, per TEE.
// Each case names the rule under test and the exact reason it must give;
// the status is the whole appraisal's.
func TestAppraise(t *testing.T) {
	milanMin := map[string]attestation.TCBVersion{"Milan": milanTCB(3, 0, 8, 115)}
	tests := []struct {
		name   string
		claims *attestation.Claims
		ref    *policy.Reference
		want   policy.Status
		reason policy.Reason
	}{
		// Reference state.
		{
			name:   "snp affirmed",
			claims: snpClaims(), ref: reference(),
			want:   policy.StatusAffirming,
			reason: policy.Reason{Rule: "reference_values", Outcome: "pass", Detail: "2 reference values for tee snp"},
		},
		{
			name:   "empty reference releases nothing",
			claims: snpClaims(), ref: &policy.Reference{},
			want:   policy.StatusContraindicated,
			reason: policy.Reason{Rule: "reference_values", Outcome: "fail", Detail: "no reference values for tee snp: nothing from it is affirming"},
		},
		{
			name:   "nil reference",
			claims: tdxClaims(), ref: nil,
			want:   policy.StatusContraindicated,
			reason: policy.Reason{Rule: "reference_values", Outcome: "fail", Detail: "no reference values for tee tdx: nothing from it is affirming"},
		},
		{
			name:   "values of another tee only",
			claims: snpClaims(),
			ref:    &policy.Reference{Values: []policy.ReferenceValue{{TEE: "sim", Kind: "measurement", Value: snpMeasurement}}},
			want:   policy.StatusContraindicated,
			reason: policy.Reason{Rule: "reference_values", Outcome: "fail", Detail: "no reference values for tee snp: nothing from it is affirming"},
		},
		{
			name:   "requirements alone are not reference values",
			claims: snpClaims(),
			ref:    &policy.Reference{Requirements: []policy.Requirements{{TEE: "snp", AcceptUnchecked: []string{"crl"}}}},
			want:   policy.StatusContraindicated,
			reason: policy.Reason{Rule: "reference_values", Outcome: "fail", Detail: "no reference values for tee snp: nothing from it is affirming"},
		},
		{
			name:   "invalid value for the claims' tee",
			claims: snpClaims(),
			ref:    with(reference(), policy.ReferenceValue{TEE: "snp", Kind: "rtmr0", Value: otherValue48}),
			want:   policy.StatusContraindicated,
			reason: policy.Reason{Rule: "reference", Outcome: "fail", Detail: `the reference state for tee snp is invalid: values[6]: invalid reference: kind "rtmr0" does not apply to tee snp (want measurement, host_data, chip_id)`},
		},
		{
			name:   "invalid value of another tee does not matter",
			claims: snpClaims(),
			ref:    with(reference(), policy.ReferenceValue{TEE: "tdx", Kind: "host_data", Value: snpHostData}),
			want:   policy.StatusAffirming,
			reason: policy.Reason{Rule: "measurement", Outcome: "pass", Detail: hx(snpMeasurement) + ` matches reference value "snp-m1"`},
		},
		{
			name:   "two requirements for one tee",
			claims: snpClaims(),
			ref:    requiring(reference(), policy.Requirements{TEE: "snp"}, policy.Requirements{TEE: "snp"}),
			want:   policy.StatusContraindicated,
			reason: policy.Reason{Rule: "reference", Outcome: "fail", Detail: "the reference state for tee snp is invalid: requirements[1]: invalid reference: a second requirements entry for tee snp"},
		},
		{
			name:   "nil claims",
			claims: nil, ref: reference(),
			want:   policy.StatusContraindicated,
			reason: policy.Reason{Rule: "claims", Outcome: "fail", Detail: "no claims"},
		},
		{
			name:   "unknown tee",
			claims: mutate(snpClaims(), func(c *attestation.Claims) { c.TEE = "sgx" }),
			ref:    reference(),
			want:   policy.StatusContraindicated,
			reason: policy.Reason{Rule: "tee", Outcome: "fail", Detail: `unknown tee "sgx"`},
		},

		// Measurement: mandatory for snp, sim, tdx.
		{
			name:   "snp measurement unknown",
			claims: mutate(snpClaims(), func(c *attestation.Claims) { c.Measurement = fill(0x99, 48) }),
			ref:    reference(),
			want:   policy.StatusContraindicated,
			reason: policy.Reason{Rule: "measurement", Outcome: "fail", Detail: hx(fill(0x99, 48)) + " is not among the 2 reference values of kind measurement for tee snp"},
		},
		{
			name:   "snp measurement missing from claims",
			claims: mutate(snpClaims(), func(c *attestation.Claims) { c.Measurement = nil }),
			ref:    reference(),
			want:   policy.StatusContraindicated,
			reason: policy.Reason{Rule: "measurement", Outcome: "fail", Detail: "the claims carry no measurement"},
		},
		{
			name:   "snp values without a measurement kind",
			claims: snpClaims(),
			ref:    &policy.Reference{Values: []policy.ReferenceValue{{TEE: "snp", Kind: "host_data", Value: snpHostData}}},
			want:   policy.StatusContraindicated,
			reason: policy.Reason{Rule: "measurement", Outcome: "fail", Detail: "no reference values of kind measurement for tee snp; it is mandatory"},
		},
		{
			name:   "sim measurement is separate from snp",
			claims: mutate(simClaims(), func(c *attestation.Claims) { c.Measurement = otherValue48 }),
			ref:    reference(), // otherValue48 is an snp value, not a sim one
			want:   policy.StatusContraindicated,
			reason: policy.Reason{Rule: "measurement", Outcome: "fail", Detail: hx(otherValue48) + " is not among the 1 reference values of kind measurement for tee sim"},
		},
		{
			name:   "tdx mrtd unknown",
			claims: mutate(tdxClaims(), func(c *attestation.Claims) { c.Measurement = otherValue48 }),
			ref:    reference(),
			want:   policy.StatusContraindicated,
			reason: policy.Reason{Rule: "measurement", Outcome: "fail", Detail: hx(otherValue48) + " is not among the 1 reference values of kind measurement for tee tdx"},
		},
		{
			name:   "tdx values without a measurement kind",
			claims: tdxClaims(),
			ref:    &policy.Reference{Values: []policy.ReferenceValue{{TEE: "tdx", Kind: "rtmr0", Value: tdxRTMR(0)}}},
			want:   policy.StatusContraindicated,
			reason: policy.Reason{Rule: "measurement", Outcome: "fail", Detail: "no reference values of kind measurement for tee tdx; it is mandatory"},
		},

		// Optional allowlists.
		{
			name:   "host_data not configured",
			claims: snpClaims(), ref: reference(),
			want:   policy.StatusAffirming,
			reason: policy.Reason{Rule: "host_data", Outcome: "skip", Detail: "no reference values of kind host_data for tee snp"},
		},
		{
			name:   "host_data matches",
			claims: snpClaims(),
			ref:    with(reference(), policy.ReferenceValue{TEE: "snp", Kind: "host_data", Value: snpHostData, Note: "tenant a"}),
			want:   policy.StatusAffirming,
			reason: policy.Reason{Rule: "host_data", Outcome: "pass", Detail: hx(snpHostData) + ` matches reference value (note "tenant a")`},
		},
		{
			name:   "host_data of another tenant",
			claims: mutate(snpClaims(), func(c *attestation.Claims) { c.HostData = fill(0x23, 32) }),
			ref:    with(reference(), policy.ReferenceValue{TEE: "snp", Kind: "host_data", Value: snpHostData}),
			want:   policy.StatusContraindicated,
			reason: policy.Reason{Rule: "host_data", Outcome: "fail", Detail: hx(fill(0x23, 32)) + " is not among the 1 reference values of kind host_data for tee snp"},
		},
		{
			name:   "chip_id allowlisted",
			claims: snpClaims(),
			ref:    with(reference(), policy.ReferenceValue{TEE: "snp", Kind: "chip_id", Value: snpChipID}),
			want:   policy.StatusAffirming,
			reason: policy.Reason{Rule: "chip_id", Outcome: "pass", Detail: hx(snpChipID) + " matches reference value (no id)"},
		},
		{
			name:   "chip_id of another machine",
			claims: mutate(snpClaims(), func(c *attestation.Claims) { c.ChipID = fill(0x34, 64) }),
			ref:    with(reference(), policy.ReferenceValue{TEE: "snp", Kind: "chip_id", Value: snpChipID}),
			want:   policy.StatusContraindicated,
			reason: policy.Reason{Rule: "chip_id", Outcome: "fail", Detail: hx(fill(0x34, 64)) + " is not among the 1 reference values of kind chip_id for tee snp"},
		},
		{
			name:   "masked chip_id against an allowlist",
			claims: mutate(snpClaims(), func(c *attestation.Claims) { c.ChipID = fill(0, 64) }),
			ref:    with(reference(), policy.ReferenceValue{TEE: "snp", Kind: "chip_id", Value: snpChipID}),
			want:   policy.StatusContraindicated,
			reason: policy.Reason{Rule: "chip_id", Outcome: "fail", Detail: hx(fill(0, 64)) + " is not among the 1 reference values of kind chip_id for tee snp"},
		},
		{
			name:   "tdx rtmr2 matches",
			claims: tdxClaims(),
			ref:    with(reference(), policy.ReferenceValue{ID: "r2", TEE: "tdx", Kind: "rtmr2", Value: tdxRTMR(2)}),
			want:   policy.StatusAffirming,
			reason: policy.Reason{Rule: "rtmr2", Outcome: "pass", Detail: hx(tdxRTMR(2)) + ` matches reference value "r2"`},
		},
		{
			name:   "tdx rtmr2 differs",
			claims: mutate(tdxClaims(), func(c *attestation.Claims) { c.RTMRs[2] = otherValue48 }),
			ref:    with(reference(), policy.ReferenceValue{TEE: "tdx", Kind: "rtmr2", Value: tdxRTMR(2)}),
			want:   policy.StatusContraindicated,
			reason: policy.Reason{Rule: "rtmr2", Outcome: "fail", Detail: hx(otherValue48) + " is not among the 1 reference values of kind rtmr2 for tee tdx"},
		},
		{
			name:   "tdx rtmr3 missing from claims",
			claims: mutate(tdxClaims(), func(c *attestation.Claims) { c.RTMRs = c.RTMRs[:3] }),
			ref:    with(reference(), policy.ReferenceValue{TEE: "tdx", Kind: "rtmr3", Value: tdxRTMR(3)}),
			want:   policy.StatusContraindicated,
			reason: policy.Reason{Rule: "rtmr3", Outcome: "fail", Detail: "the claims carry no rtmr3"},
		},
		{
			name:   "tdx rtmr1 not configured",
			claims: tdxClaims(), ref: reference(),
			want:   policy.StatusAffirming,
			reason: policy.Reason{Rule: "rtmr1", Outcome: "skip", Detail: "no reference values of kind rtmr1 for tee tdx"},
		},
		{
			name:   "tdx mr_config_id differs",
			claims: mutate(tdxClaims(), func(c *attestation.Claims) { c.MRConfigID = otherValue48 }),
			ref:    with(reference(), policy.ReferenceValue{TEE: "tdx", Kind: "mr_config_id", Value: tdxMRConfigID}),
			want:   policy.StatusContraindicated,
			reason: policy.Reason{Rule: "mr_config_id", Outcome: "fail", Detail: hx(otherValue48) + " is not among the 1 reference values of kind mr_config_id for tee tdx"},
		},

		// TPM PCRs.
		{
			name:   "tpm pcrs listed",
			claims: tpmClaims(), ref: reference(),
			want:   policy.StatusAffirming,
			reason: policy.Reason{Rule: "pcrs", Outcome: "pass", Detail: "PCR allowlists: pcr0, pcr7"},
		},
		{
			name:   "tpm pcr7 matches",
			claims: tpmClaims(), ref: reference(),
			want:   policy.StatusAffirming,
			reason: policy.Reason{Rule: "pcr7", Outcome: "pass", Detail: "sha256 " + hx(tpmPCR7) + ` matches reference value "tpm-7"`},
		},
		{
			name:   "tpm pcr7 differs",
			claims: mutate(tpmClaims(), func(c *attestation.Claims) { c.PCRs.Values[7] = fill(0x78, 32) }),
			ref:    reference(),
			want:   policy.StatusContraindicated,
			reason: policy.Reason{Rule: "pcr7", Outcome: "fail", Detail: "sha256 " + hx(fill(0x78, 32)) + " is not among the 1 reference values of kind pcr7"},
		},
		{
			name: "tpm pcr7 in another bank",
			claims: mutate(tpmClaims(), func(c *attestation.Claims) {
				c.PCRs = &attestation.PCRs{Hash: "sha384", Values: map[int]attestation.Hex{0: fill(0x70, 48), 7: fill(0x77, 48)}}
			}),
			ref:    reference(),
			want:   policy.StatusContraindicated,
			reason: policy.Reason{Rule: "pcr7", Outcome: "fail", Detail: "sha384 " + hx(fill(0x77, 48)) + " is not among the 1 reference values of kind pcr7"},
		},
		{
			name:   "tpm pcr0 not quoted",
			claims: mutate(tpmClaims(), func(c *attestation.Claims) { delete(c.PCRs.Values, 0) }),
			ref:    reference(),
			want:   policy.StatusContraindicated,
			reason: policy.Reason{Rule: "pcr0", Outcome: "fail", Detail: "the claims carry no pcr0"},
		},
		{
			name:   "tpm without pcrs",
			claims: mutate(tpmClaims(), func(c *attestation.Claims) { c.PCRs = nil }),
			ref:    reference(),
			want:   policy.StatusContraindicated,
			reason: policy.Reason{Rule: "pcr7", Outcome: "fail", Detail: "the claims carry no pcr7"},
		},
		{
			name:   "tpm without pcr values",
			claims: tpmClaims(),
			ref:    &policy.Reference{Values: []policy.ReferenceValue{{TEE: "snp", Kind: "measurement", Value: snpMeasurement}}},
			want:   policy.StatusContraindicated,
			reason: policy.Reason{Rule: "pcrs", Outcome: "fail", Detail: "no PCR reference values for tee tpm; at least one PCR kind is required"},
		},

		// Debug and migration: never configurable.
		{
			name:   "snp debug",
			claims: mutate(snpClaims(), func(c *attestation.Claims) { c.Debug = true }),
			ref:    reference(),
			want:   policy.StatusContraindicated,
			reason: policy.Reason{Rule: "debug", Outcome: "fail", Detail: "the guest is debuggable: the host can read and change its state"},
		},
		{
			name:   "tdx debug",
			claims: mutate(tdxClaims(), func(c *attestation.Claims) { c.Debug = true }),
			ref:    reference(),
			want:   policy.StatusContraindicated,
			reason: policy.Reason{Rule: "debug", Outcome: "fail", Detail: "the guest is debuggable: the host can read and change its state"},
		},
		{
			name:   "debug off",
			claims: snpClaims(), ref: reference(),
			want:   policy.StatusAffirming,
			reason: policy.Reason{Rule: "debug", Outcome: "pass", Detail: "debugging is disabled"},
		},
		{
			name:   "snp migration agent",
			claims: mutate(snpClaims(), func(c *attestation.Claims) { c.MigrationAgent = true }),
			ref:    reference(),
			want:   policy.StatusContraindicated,
			reason: policy.Reason{Rule: "migration_agent", Outcome: "fail", Detail: "the guest allows a migration agent or migration"},
		},
		{
			name:   "tdx migratable",
			claims: mutate(tdxClaims(), func(c *attestation.Claims) { c.MigrationAgent = true }),
			ref:    reference(),
			want:   policy.StatusContraindicated,
			reason: policy.Reason{Rule: "migration_agent", Outcome: "fail", Detail: "the guest allows a migration agent or migration"},
		},

		// SEV-SNP minimum TCB: committed and launch.
		{
			name:   "min tcb not configured",
			claims: snpClaims(), ref: reference(),
			want:   policy.StatusAffirming,
			reason: policy.Reason{Rule: "min_tcb", Outcome: "skip", Detail: "no minimum TCB configured for tee snp"},
		},
		{
			name:   "min tcb met",
			claims: snpClaims(),
			ref:    requiring(reference(), policy.Requirements{TEE: "snp", MinTCB: milanMin}),
			want:   policy.StatusAffirming,
			reason: policy.Reason{Rule: "min_tcb", Outcome: "pass", Detail: `committed and launch TCB meet the minimum for "Milan" (bootloader 3, tee 0, snp 8, microcode 115, fmc 0)`},
		},
		{
			name:   "committed snp below",
			claims: mutate(snpClaims(), func(c *attestation.Claims) { c.TCB.Committed.SNP = 7 }),
			ref:    requiring(reference(), policy.Requirements{TEE: "snp", MinTCB: milanMin}),
			want:   policy.StatusContraindicated,
			reason: policy.Reason{Rule: "min_tcb", Outcome: "fail", Detail: `TCB below the minimum for "Milan": committed snp 7 < 8`},
		},
		{
			// The launch TCB is what the guest was started under; a host can
			// commit newer firmware after a launch on old, vulnerable firmware.
			name:   "launch microcode below with current committed",
			claims: mutate(snpClaims(), func(c *attestation.Claims) { c.TCB.Launch.Microcode = 100 }),
			ref:    requiring(reference(), policy.Requirements{TEE: "snp", MinTCB: milanMin}),
			want:   policy.StatusContraindicated,
			reason: policy.Reason{Rule: "min_tcb", Outcome: "fail", Detail: `TCB below the minimum for "Milan": launch microcode 100 < 115`},
		},
		{
			name: "reported tcb is not what counts",
			claims: mutate(snpClaims(), func(c *attestation.Claims) {
				c.TCB.Reported = milanTCB(9, 9, 99, 255)
				c.TCB.Current = milanTCB(9, 9, 99, 255)
				c.TCB.Committed.Bootloader = 2
				c.TCB.Launch.Bootloader = 1
			}),
			ref:    requiring(reference(), policy.Requirements{TEE: "snp", MinTCB: milanMin}),
			want:   policy.StatusContraindicated,
			reason: policy.Reason{Rule: "min_tcb", Outcome: "fail", Detail: `TCB below the minimum for "Milan": committed bootloader 2 < 3, launch bootloader 1 < 3`},
		},
		{
			name: "turin fmc below",
			claims: mutate(snpClaims(), func(c *attestation.Claims) {
				c.Product = "Turin"
				c.TCB.Committed.FMC = 1
				c.TCB.Launch.FMC = 2
			}),
			ref: requiring(reference(), policy.Requirements{TEE: "snp", MinTCB: map[string]attestation.TCBVersion{
				"Turin": {Bootloader: 3, SNP: 8, Microcode: 115, FMC: 2},
			}}),
			want:   policy.StatusContraindicated,
			reason: policy.Reason{Rule: "min_tcb", Outcome: "fail", Detail: `TCB below the minimum for "Turin": committed fmc 1 < 2`},
		},
		{
			name:   "no minimum for the product",
			claims: mutate(snpClaims(), func(c *attestation.Claims) { c.Product = "Genoa" }),
			ref:    requiring(reference(), policy.Requirements{TEE: "snp", MinTCB: milanMin}),
			want:   policy.StatusContraindicated,
			reason: policy.Reason{Rule: "min_tcb", Outcome: "fail", Detail: `no minimum TCB for product "Genoa"`},
		},
		{
			name:   "claims without tcb",
			claims: mutate(snpClaims(), func(c *attestation.Claims) { c.TCB = nil }),
			ref:    requiring(reference(), policy.Requirements{TEE: "snp", MinTCB: milanMin}),
			want:   policy.StatusContraindicated,
			reason: policy.Reason{Rule: "min_tcb", Outcome: "fail", Detail: "the claims carry no TCB"},
		},
		{
			name:   "sim min tcb",
			claims: mutate(simClaims(), func(c *attestation.Claims) { c.TCB.Launch.SNP = 2 }),
			ref:    requiring(reference(), policy.Requirements{TEE: "sim", MinTCB: milanMin}),
			want:   policy.StatusContraindicated,
			reason: policy.Reason{Rule: "min_tcb", Outcome: "fail", Detail: `TCB below the minimum for "Milan": launch snp 2 < 8`},
		},

		// Guest SVN.
		{
			name:   "guest svn met",
			claims: snpClaims(),
			ref:    requiring(reference(), policy.Requirements{TEE: "snp", MinGuestSVN: ptr(uint32(2))}),
			want:   policy.StatusAffirming,
			reason: policy.Reason{Rule: "min_guest_svn", Outcome: "pass", Detail: "guest_svn 2 >= minimum 2"},
		},
		{
			name:   "guest svn below",
			claims: snpClaims(),
			ref:    requiring(reference(), policy.Requirements{TEE: "snp", MinGuestSVN: ptr(uint32(3))}),
			want:   policy.StatusContraindicated,
			reason: policy.Reason{Rule: "min_guest_svn", Outcome: "fail", Detail: "guest_svn 2 < minimum 3"},
		},
		{
			name:   "guest svn missing",
			claims: mutate(snpClaims(), func(c *attestation.Claims) { c.GuestSVN = nil }),
			ref:    requiring(reference(), policy.Requirements{TEE: "snp", MinGuestSVN: ptr(uint32(0))}),
			want:   policy.StatusContraindicated,
			reason: policy.Reason{Rule: "min_guest_svn", Outcome: "fail", Detail: "the claims carry no guest_svn"},
		},
		{
			name:   "guest svn not configured",
			claims: snpClaims(), ref: reference(),
			want:   policy.StatusAffirming,
			reason: policy.Reason{Rule: "min_guest_svn", Outcome: "skip", Detail: "no minimum guest SVN configured for tee snp"},
		},

		// TDX TCB status.
		{
			name:   "tdx up to date",
			claims: tdxClaims(), ref: reference(),
			want:   policy.StatusAffirming,
			reason: policy.Reason{Rule: "tdx_tcb_status", Outcome: "pass", Detail: `tcb status "UpToDate" is allowed`},
		},
		{
			name:   "tdx out of date by default",
			claims: mutate(tdxClaims(), func(c *attestation.Claims) { c.TDX.TCBStatus = attestation.TCBStatusOutOfDate }),
			ref:    reference(),
			want:   policy.StatusContraindicated,
			reason: policy.Reason{Rule: "tdx_tcb_status", Outcome: "fail", Detail: `tcb status "OutOfDate" is not allowed (allowed: UpToDate)`},
		},
		{
			name:   "tdx unknown by default",
			claims: mutate(tdxClaims(), func(c *attestation.Claims) { c.TDX.TCBStatus = attestation.TCBStatusUnknown }),
			ref:    reference(),
			want:   policy.StatusContraindicated,
			reason: policy.Reason{Rule: "tdx_tcb_status", Outcome: "fail", Detail: `tcb status "unknown" (no collateral was available to evaluate it) is not allowed (allowed: UpToDate)`},
		},
		{
			name:   "tdx unknown when listed",
			claims: mutate(tdxClaims(), func(c *attestation.Claims) { c.TDX.TCBStatus = attestation.TCBStatusUnknown }),
			ref:    requiring(reference(), policy.Requirements{TEE: "tdx", AllowedTDXTCBStatuses: []string{"UpToDate", "unknown"}}),
			want:   policy.StatusAffirming,
			reason: policy.Reason{Rule: "tdx_tcb_status", Outcome: "pass", Detail: `tcb status "unknown" is allowed`},
		},
		{
			name:   "tdx sw hardening listed, revoked not",
			claims: mutate(tdxClaims(), func(c *attestation.Claims) { c.TDX.TCBStatus = attestation.TCBStatusRevoked }),
			ref:    requiring(reference(), policy.Requirements{TEE: "tdx", AllowedTDXTCBStatuses: []string{"UpToDate", "SWHardeningNeeded"}}),
			want:   policy.StatusContraindicated,
			reason: policy.Reason{Rule: "tdx_tcb_status", Outcome: "fail", Detail: `tcb status "Revoked" is not allowed (allowed: UpToDate, SWHardeningNeeded)`},
		},
		{
			name:   "tdx empty status",
			claims: mutate(tdxClaims(), func(c *attestation.Claims) { c.TDX.TCBStatus = "" }),
			ref:    reference(),
			want:   policy.StatusContraindicated,
			reason: policy.Reason{Rule: "tdx_tcb_status", Outcome: "fail", Detail: `tcb status "" is not allowed (allowed: UpToDate)`},
		},
		{
			name:   "tdx fields missing",
			claims: mutate(tdxClaims(), func(c *attestation.Claims) { c.TDX = nil }),
			ref:    reference(),
			want:   policy.StatusContraindicated,
			reason: policy.Reason{Rule: "tdx_tcb_status", Outcome: "fail", Detail: "the claims carry no tdx fields"},
		},

		// Collateral freshness.
		{
			name:   "collateral not required",
			claims: mutate(snpClaims(), func(c *attestation.Claims) { c.CollateralExpiry = ptr(now.Add(-time.Hour)) }),
			ref:    reference(),
			want:   policy.StatusAffirming,
			reason: policy.Reason{Rule: "collateral_freshness", Outcome: "skip", Detail: "fresh collateral is not required for tee snp"},
		},
		{
			name:   "collateral fresh",
			claims: tdxClaims(),
			ref:    requiring(reference(), policy.Requirements{TEE: "tdx", RequireFreshCollateral: true}),
			want:   policy.StatusAffirming,
			reason: policy.Reason{Rule: "collateral_freshness", Outcome: "pass", Detail: "the collateral is valid until 2025-06-02T12:00:00Z"},
		},
		{
			name:   "collateral expires now",
			claims: mutate(tdxClaims(), func(c *attestation.Claims) { c.CollateralExpiry = ptr(now) }),
			ref:    requiring(reference(), policy.Requirements{TEE: "tdx", RequireFreshCollateral: true}),
			want:   policy.StatusContraindicated,
			reason: policy.Reason{Rule: "collateral_freshness", Outcome: "fail", Detail: "the collateral expired at 2025-06-01T12:00:00Z (now 2025-06-01T12:00:00Z)"},
		},
		{
			name:   "collateral not checked",
			claims: mutate(snpClaims(), func(c *attestation.Claims) { c.CollateralExpiry = nil }),
			ref:    requiring(reference(), policy.Requirements{TEE: "snp", RequireFreshCollateral: true}),
			want:   policy.StatusContraindicated,
			reason: policy.Reason{Rule: "collateral_freshness", Outcome: "fail", Detail: "no collateral_expiry: the collateral was not checked"},
		},

		// Unchecked assurance checks warn, unless accepted.
		{
			name:   "every check ran",
			claims: snpClaims(), ref: reference(),
			want:   policy.StatusAffirming,
			reason: policy.Reason{Rule: "unchecked", Outcome: "pass", Detail: "every verification check ran"},
		},
		{
			name:   "snp crl unchecked",
			claims: mutate(snpClaims(), func(c *attestation.Claims) { c.Unchecked = []string{"crl"} }),
			ref:    reference(),
			want:   policy.StatusWarning,
			reason: policy.Reason{Rule: "unchecked: crl", Outcome: "warn", Detail: `"crl" could not be checked and is not in accept_unchecked for tee snp`},
		},
		{
			name:   "snp crl unchecked and accepted",
			claims: mutate(snpClaims(), func(c *attestation.Claims) { c.Unchecked = []string{"crl"} }),
			ref:    requiring(reference(), policy.Requirements{TEE: "snp", AcceptUnchecked: []string{"crl"}}),
			want:   policy.StatusAffirming,
			reason: policy.Reason{Rule: "unchecked: crl", Outcome: "pass", Detail: "accepted by the requirements for tee snp"},
		},
		{
			name:   "crl accepted for another tee only",
			claims: mutate(snpClaims(), func(c *attestation.Claims) { c.Unchecked = []string{"crl"} }),
			ref:    requiring(reference(), policy.Requirements{TEE: "tdx", AcceptUnchecked: []string{"crl"}}),
			want:   policy.StatusWarning,
			reason: policy.Reason{Rule: "unchecked: crl", Outcome: "warn", Detail: `"crl" could not be checked and is not in accept_unchecked for tee snp`},
		},
		{
			name:   "sim crl always accepted",
			claims: simClaims(), ref: reference(),
			want:   policy.StatusAffirming,
			reason: policy.Reason{Rule: "unchecked: crl", Outcome: "pass", Detail: "a simulated chain has no CRL: always accepted for tee sim"},
		},
		{
			name:   "sim other unchecked warns",
			claims: mutate(simClaims(), func(c *attestation.Claims) { c.Unchecked = []string{"crl", "vcek chain"} }),
			ref:    reference(),
			want:   policy.StatusWarning,
			reason: policy.Reason{Rule: "unchecked: vcek chain", Outcome: "warn", Detail: `"vcek chain" could not be checked and is not in accept_unchecked for tee sim`},
		},
		{
			name:   "tpm event log unchecked",
			claims: mutate(tpmClaims(), func(c *attestation.Claims) { c.Unchecked = []string{"event log"} }),
			ref:    reference(),
			want:   policy.StatusWarning,
			reason: policy.Reason{Rule: "unchecked: event log", Outcome: "warn", Detail: `"event log" could not be checked and is not in accept_unchecked for tee tpm`},
		},
		{
			// A warning never hides a failure.
			name: "warning and failure",
			claims: mutate(snpClaims(), func(c *attestation.Claims) {
				c.Unchecked = []string{"crl"}
				c.Debug = true
			}),
			ref:    reference(),
			want:   policy.StatusContraindicated,
			reason: policy.Reason{Rule: "unchecked: crl", Outcome: "warn", Detail: `"crl" could not be checked and is not in accept_unchecked for tee snp`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := policy.Appraise(tt.claims, tt.ref, now)
			if a.Status != tt.want {
				t.Errorf("Appraise() status = %s, want %s; reasons:\n%v", a.Status, tt.want, a.Reasons)
			}
			if diff := cmp.Diff(tt.reason, reasonFor(a.Reasons, tt.reason.Rule)); diff != "" {
				t.Errorf("Appraise() reason for %q (-want +got):\n%s", tt.reason.Rule, diff)
			}
		})
	}
}

// TestAppraiseReasons pins every reason, in order, for one claims set per
// TEE: every rule contributes a reason whether it passed or not, so a dry
// run shows everything.
func TestAppraiseReasons(t *testing.T) {
	pass := func(rule, detail string) policy.Reason {
		return policy.Reason{Rule: rule, Outcome: "pass", Detail: detail}
	}
	skip := func(rule, detail string) policy.Reason {
		return policy.Reason{Rule: rule, Outcome: "skip", Detail: detail}
	}
	tests := []struct {
		name   string
		claims *attestation.Claims
		want   *policy.Appraisal
	}{
		{
			name:   "snp",
			claims: snpClaims(),
			want: &policy.Appraisal{Status: policy.StatusAffirming, Reasons: []policy.Reason{
				pass("reference_values", "2 reference values for tee snp"),
				pass("measurement", hx(snpMeasurement)+` matches reference value "snp-m1"`),
				skip("host_data", "no reference values of kind host_data for tee snp"),
				skip("chip_id", "no reference values of kind chip_id for tee snp"),
				pass("debug", "debugging is disabled"),
				pass("migration_agent", "migration is not allowed"),
				skip("min_tcb", "no minimum TCB configured for tee snp"),
				skip("min_guest_svn", "no minimum guest SVN configured for tee snp"),
				skip("collateral_freshness", "fresh collateral is not required for tee snp"),
				pass("unchecked", "every verification check ran"),
			}},
		},
		{
			name:   "tdx",
			claims: tdxClaims(),
			want: &policy.Appraisal{Status: policy.StatusAffirming, Reasons: []policy.Reason{
				pass("reference_values", "1 reference values for tee tdx"),
				pass("measurement", hx(tdxMRTD)+` matches reference value "tdx-m1"`),
				skip("rtmr0", "no reference values of kind rtmr0 for tee tdx"),
				skip("rtmr1", "no reference values of kind rtmr1 for tee tdx"),
				skip("rtmr2", "no reference values of kind rtmr2 for tee tdx"),
				skip("rtmr3", "no reference values of kind rtmr3 for tee tdx"),
				skip("mr_config_id", "no reference values of kind mr_config_id for tee tdx"),
				pass("debug", "debugging is disabled"),
				pass("migration_agent", "migration is not allowed"),
				pass("tdx_tcb_status", `tcb status "UpToDate" is allowed`),
				skip("collateral_freshness", "fresh collateral is not required for tee tdx"),
				pass("unchecked", "every verification check ran"),
			}},
		},
		{
			name:   "tpm",
			claims: tpmClaims(),
			want: &policy.Appraisal{Status: policy.StatusAffirming, Reasons: []policy.Reason{
				pass("reference_values", "2 reference values for tee tpm"),
				pass("pcrs", "PCR allowlists: pcr0, pcr7"),
				pass("pcr0", "sha256 "+hx(tpmPCR0)+` matches reference value "tpm-0"`),
				pass("pcr7", "sha256 "+hx(tpmPCR7)+` matches reference value "tpm-7"`),
				pass("debug", "debugging is disabled"),
				pass("migration_agent", "migration is not allowed"),
				skip("collateral_freshness", "fresh collateral is not required for tee tpm"),
				pass("unchecked", "every verification check ran"),
			}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, policy.Appraise(tt.claims, reference(), now)); diff != "" {
				t.Errorf("Appraise() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestAppraiseGoldens appraises the claims the real verifiers produced
// from recorded hardware evidence.
func TestAppraiseGoldens(t *testing.T) {
	milan := loadClaims(t, "../attestation/sevsnp/testdata/milan-claims.golden.json")
	spr := loadClaims(t, "../attestation/tdx/testdata/spr-e4-claims.golden.json")
	milanRef := &policy.Reference{
		Values: []policy.ReferenceValue{
			{ID: "milan", TEE: "snp", Kind: "measurement", Value: milan.Measurement},
		},
		Requirements: []policy.Requirements{{
			TEE:             "snp",
			MinTCB:          map[string]attestation.TCBVersion{"Milan": milanTCB(2, 0, 5, 68)},
			AcceptUnchecked: []string{"crl"},
		}},
	}
	sprRef := func(q policy.Requirements) *policy.Reference {
		q.TEE = "tdx"
		return &policy.Reference{
			Values:       []policy.ReferenceValue{{ID: "spr", TEE: "tdx", Kind: "measurement", Value: spr.Measurement}},
			Requirements: []policy.Requirements{q},
		}
	}
	tests := []struct {
		name    string
		claims  *attestation.Claims
		ref     *policy.Reference
		want    policy.Status
		reasons []policy.Reason // the failures and warnings, in order
	}{
		{
			// That guest was launched with a debug-allowing policy.
			name:   "milan debug guest",
			claims: milan, ref: milanRef,
			want: policy.StatusContraindicated,
			reasons: []policy.Reason{
				{Rule: "debug", Outcome: "fail", Detail: "the guest is debuggable: the host can read and change its state"},
			},
		},
		{
			name:   "spr tcb status unknown, offline",
			claims: spr, ref: sprRef(policy.Requirements{}),
			want: policy.StatusContraindicated,
			reasons: []policy.Reason{
				{Rule: "tdx_tcb_status", Outcome: "fail", Detail: `tcb status "unknown" (no collateral was available to evaluate it) is not allowed (allowed: UpToDate)`},
				{Rule: "unchecked: tdx collateral", Outcome: "warn", Detail: `"tdx collateral" could not be checked and is not in accept_unchecked for tee tdx`},
				{Rule: "unchecked: crl", Outcome: "warn", Detail: `"crl" could not be checked and is not in accept_unchecked for tee tdx`},
			},
		},
		{
			name:   "spr accepted offline",
			claims: spr,
			ref:    sprRef(policy.Requirements{AllowedTDXTCBStatuses: []string{"unknown"}, AcceptUnchecked: []string{"tdx collateral", "crl"}}),
			want:   policy.StatusAffirming,
		},
		{
			name:   "spr accepted status, unchecked collateral warns",
			claims: spr,
			ref:    sprRef(policy.Requirements{AllowedTDXTCBStatuses: []string{"unknown"}, AcceptUnchecked: []string{"crl"}}),
			want:   policy.StatusWarning,
			reasons: []policy.Reason{
				{Rule: "unchecked: tdx collateral", Outcome: "warn", Detail: `"tdx collateral" could not be checked and is not in accept_unchecked for tee tdx`},
			},
		},
		{
			name:   "spr fresh collateral required",
			claims: spr,
			ref:    sprRef(policy.Requirements{AllowedTDXTCBStatuses: []string{"unknown"}, AcceptUnchecked: []string{"tdx collateral", "crl"}, RequireFreshCollateral: true}),
			want:   policy.StatusContraindicated,
			reasons: []policy.Reason{
				{Rule: "collateral_freshness", Outcome: "fail", Detail: "no collateral_expiry: the collateral was not checked"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := policy.Appraise(tt.claims, tt.ref, now)
			if a.Status != tt.want {
				t.Errorf("Appraise() status = %s, want %s; reasons:\n%v", a.Status, tt.want, a.Reasons)
			}
			var got []policy.Reason
			for _, r := range a.Reasons {
				if r.Outcome == "fail" || r.Outcome == "warn" {
					got = append(got, r)
				}
			}
			if diff := cmp.Diff(tt.reasons, got); diff != "" {
				t.Errorf("Appraise() failures and warnings (-want +got):\n%s", diff)
			}
		})
	}
}

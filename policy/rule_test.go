package policy_test

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/policy"
)

func mustCompile(t testing.TB, name, expr string) *policy.Program {
	t.Helper()
	p, err := policy.Compile(policy.Rule{Name: name, Expression: expr})
	if err != nil {
		t.Fatalf("Compile(%q) = %v", expr, err)
	}
	return p
}

// costly iterates a million times; MaxRuleCost stops it.
func costly() string {
	nums := make([]string, 100)
	for i := range nums {
		nums[i] = strconv.Itoa(i)
	}
	l := "[" + strings.Join(nums, ",") + "]"
	return l + ".all(a, " + l + ".all(b, " + l + ".all(c, a + b + c >= 0)))"
}

func TestDecide(t *testing.T) {
	debugFail := policy.Reason{Rule: "debug", Outcome: "fail", Detail: "the guest is debuggable: the host can read and change its state"}
	crlWarn := policy.Reason{Rule: "unchecked: crl", Outcome: "warn", Detail: `"crl" could not be checked and is not in accept_unchecked for tee snp`}
	withCRL := func(c *attestation.Claims) { c.Unchecked = []string{"crl"} }
	type want struct {
		release bool
		status  policy.Status
		rule    string
		reasons []policy.Reason
	}
	tests := []struct {
		name   string
		claims *attestation.Claims
		ref    *policy.Reference
		expr   string // "" for the default rule
		want   want
	}{
		// The default rule: only affirming releases.
		{
			name:   "default affirming",
			claims: snpClaims(), ref: reference(),
			want: want{true, policy.StatusAffirming, policy.DefaultRule, []policy.Reason{
				{Rule: policy.DefaultRule, Outcome: "pass", Detail: "the appraisal is affirming"},
			}},
		},
		{
			name:   "default warning",
			claims: mutate(snpClaims(), withCRL), ref: reference(),
			want: want{false, policy.StatusWarning, policy.DefaultRule, []policy.Reason{
				crlWarn,
				{Rule: policy.DefaultRule, Outcome: "fail", Detail: "the appraisal is warning; a resource without its own release rule needs an affirming appraisal"},
			}},
		},
		{
			name:   "default debug guest",
			claims: mutate(snpClaims(), func(c *attestation.Claims) { c.Debug = true }), ref: reference(),
			want: want{false, policy.StatusContraindicated, policy.DefaultRule, []policy.Reason{
				debugFail,
				{Rule: policy.DefaultRule, Outcome: "fail", Detail: "the appraisal is contraindicated"},
			}},
		},
		{
			name:   "default empty broker",
			claims: snpClaims(), ref: &policy.Reference{},
			want: want{false, policy.StatusContraindicated, policy.DefaultRule, []policy.Reason{
				{Rule: "reference_values", Outcome: "fail", Detail: "no reference values for tee snp: nothing from it is affirming"},
				{Rule: "measurement", Outcome: "fail", Detail: "no reference values of kind measurement for tee snp; it is mandatory"},
				{Rule: policy.DefaultRule, Outcome: "fail", Detail: "the appraisal is contraindicated"},
			}},
		},
		{
			name:   "default nil claims",
			claims: nil, ref: reference(),
			want: want{false, policy.StatusContraindicated, policy.DefaultRule, []policy.Reason{
				{Rule: "claims", Outcome: "fail", Detail: "no claims"},
				{Rule: policy.DefaultRule, Outcome: "fail", Detail: "the appraisal is contraindicated"},
			}},
		},

		// Custom rules.
		{
			name:   "tee and affirming",
			claims: snpClaims(), ref: reference(),
			expr: `claims.tee == "snp" && appraisal.status == "affirming"`,
			want: want{true, policy.StatusAffirming, "r", []policy.Reason{
				{Rule: "r", Outcome: "pass", Detail: "the rule evaluated to true"},
			}},
		},
		{
			// A sim guest presenting the same measurement is not snp.
			name:   "tee and affirming, sim guest",
			claims: simClaims(), ref: reference(),
			expr: `claims.tee == "snp" && appraisal.status == "affirming"`,
			want: want{false, policy.StatusAffirming, "r", []policy.Reason{
				{Rule: "r", Outcome: "fail", Detail: "the rule evaluated to false"},
			}},
		},
		{
			name:   "accept warnings",
			claims: mutate(snpClaims(), withCRL), ref: reference(),
			expr: `appraisal.status in ["affirming", "warning"]`,
			want: want{true, policy.StatusWarning, "r", []policy.Reason{
				crlWarn,
				{Rule: "r", Outcome: "pass", Detail: "the rule evaluated to true"},
			}},
		},
		{
			name:   "host_data matches",
			claims: snpClaims(), ref: reference(),
			expr: `claims.host_data == "` + hx(snpHostData) + `"`,
			want: want{true, policy.StatusAffirming, "r", []policy.Reason{
				{Rule: "r", Outcome: "pass", Detail: "the rule evaluated to true"},
			}},
		},
		{
			name:   "host_data of another tenant",
			claims: mutate(snpClaims(), func(c *attestation.Claims) { c.HostData = fill(0x23, 32) }), ref: reference(),
			expr: `claims.host_data == "` + hx(snpHostData) + `"`,
			want: want{false, policy.StatusAffirming, "r", []policy.Reason{
				{Rule: "r", Outcome: "fail", Detail: "the rule evaluated to false"},
			}},
		},
		{
			// Hex in claims is lowercase: an upper-case literal never matches.
			name:   "host_data upper case",
			claims: mutate(snpClaims(), func(c *attestation.Claims) { c.HostData = fill(0xab, 32) }), ref: reference(),
			expr: `claims.host_data == "` + strings.Repeat("AB", 32) + `"`,
			want: want{false, policy.StatusAffirming, "r", []policy.Reason{
				{Rule: "r", Outcome: "fail", Detail: "the rule evaluated to false"},
			}},
		},
		{
			name:   "committed snp tcb",
			claims: snpClaims(), ref: reference(),
			expr: `claims.tcb.committed.snp >= 8`,
			want: want{true, policy.StatusAffirming, "r", []policy.Reason{
				{Rule: "r", Outcome: "pass", Detail: "the rule evaluated to true"},
			}},
		},
		{
			name:   "committed snp tcb too old",
			claims: mutate(snpClaims(), func(c *attestation.Claims) { c.TCB.Committed.SNP = 7 }), ref: reference(),
			expr: `claims.tcb.committed.snp >= 8`,
			want: want{false, policy.StatusAffirming, "r", []policy.Reason{
				{Rule: "r", Outcome: "fail", Detail: "the rule evaluated to false"},
			}},
		},
		{
			name:   "nothing unchecked",
			claims: snpClaims(), ref: reference(),
			expr: `size(claims.unchecked) == 0`,
			want: want{true, policy.StatusAffirming, "r", []policy.Reason{
				{Rule: "r", Outcome: "pass", Detail: "the rule evaluated to true"},
			}},
		},
		{
			// Accepting the CRL in the requirements makes the appraisal
			// affirming; the rule still insists on every check.
			name:   "crl unchecked, rule narrows",
			claims: mutate(snpClaims(), withCRL),
			ref:    requiring(reference(), policy.Requirements{TEE: "snp", AcceptUnchecked: []string{"crl"}}),
			expr:   `size(claims.unchecked) == 0`,
			want: want{false, policy.StatusAffirming, "r", []policy.Reason{
				{Rule: "r", Outcome: "fail", Detail: "the rule evaluated to false"},
			}},
		},
		{
			name:   "times and now",
			claims: snpClaims(), ref: reference(),
			expr: `now - timestamp(claims.verified_at) < duration("5m") && timestamp(claims.collateral_expiry) > now`,
			want: want{true, policy.StatusAffirming, "r", []policy.Reason{
				{Rule: "r", Outcome: "pass", Detail: "the rule evaluated to true"},
			}},
		},
		{
			name:   "tpm pcr by index",
			claims: tpmClaims(), ref: reference(),
			expr: `claims.pcrs.hash == "sha256" && claims.pcrs.values["4"] == "` + hx(fill(0x74, 32)) + `"`,
			want: want{true, policy.StatusAffirming, "r", []policy.Reason{
				{Rule: "r", Outcome: "pass", Detail: "the rule evaluated to true"},
			}},
		},
		{
			name:   "appraisal reasons",
			claims: mutate(snpClaims(), withCRL), ref: reference(),
			expr: `appraisal.reasons.all(r, r.outcome != "warn" || r.rule == "unchecked: crl")`,
			want: want{true, policy.StatusWarning, "r", []policy.Reason{
				crlWarn,
				{Rule: "r", Outcome: "pass", Detail: "the rule evaluated to true"},
			}},
		},
		{
			name:   "dyn result that is a bool",
			claims: mutate(tdxClaims(), func(c *attestation.Claims) { c.Debug = false }), ref: reference(),
			expr: `!claims.debug`,
			want: want{true, policy.StatusAffirming, "r", []policy.Reason{
				{Rule: "r", Outcome: "pass", Detail: "the rule evaluated to true"},
			}},
		},

		// A rule never overrides a contraindicated appraisal.
		{
			name:   "true rule, debug guest",
			claims: mutate(snpClaims(), func(c *attestation.Claims) { c.Debug = true }), ref: reference(),
			expr: `true`,
			want: want{false, policy.StatusContraindicated, policy.ContraindicatedRule, []policy.Reason{
				debugFail,
				{Rule: policy.ContraindicatedRule, Outcome: "fail", Detail: "the appraisal is contraindicated; no release rule can override it"},
				{Rule: "r", Outcome: "skip", Detail: "not applied: the rule evaluated to true"},
			}},
		},
		{
			name:   "rule accepting contraindicated, unknown measurement",
			claims: mutate(snpClaims(), func(c *attestation.Claims) { c.Measurement = fill(0x99, 48) }), ref: reference(),
			expr: `appraisal.status in ["affirming", "warning", "contraindicated"]`,
			want: want{false, policy.StatusContraindicated, policy.ContraindicatedRule, []policy.Reason{
				{Rule: "measurement", Outcome: "fail", Detail: hx(fill(0x99, 48)) + " is not among the 2 reference values of kind measurement for tee snp"},
				{Rule: policy.ContraindicatedRule, Outcome: "fail", Detail: "the appraisal is contraindicated; no release rule can override it"},
				{Rule: "r", Outcome: "skip", Detail: "not applied: the rule evaluated to true"},
			}},
		},
		{
			name:   "true rule, empty broker",
			claims: tpmClaims(), ref: &policy.Reference{},
			expr: `true`,
			want: want{false, policy.StatusContraindicated, policy.ContraindicatedRule, []policy.Reason{
				{Rule: "reference_values", Outcome: "fail", Detail: "no reference values for tee tpm: nothing from it is affirming"},
				{Rule: "pcrs", Outcome: "fail", Detail: "no PCR reference values for tee tpm; at least one PCR kind is required"},
				{Rule: policy.ContraindicatedRule, Outcome: "fail", Detail: "the appraisal is contraindicated; no release rule can override it"},
				{Rule: "r", Outcome: "skip", Detail: "not applied: the rule evaluated to true"},
			}},
		},
		{
			name:   "true rule, nil claims",
			claims: nil, ref: reference(),
			expr: `true`,
			want: want{false, policy.StatusContraindicated, policy.ContraindicatedRule, []policy.Reason{
				{Rule: "claims", Outcome: "fail", Detail: "no claims"},
				{Rule: policy.ContraindicatedRule, Outcome: "fail", Detail: "the appraisal is contraindicated; no release rule can override it"},
				{Rule: "r", Outcome: "skip", Detail: "not applied: not evaluated: no claims"},
			}},
		},

		// Evaluation errors deny.
		{
			name:   "absent field",
			claims: tdxClaims(), ref: reference(),
			expr: `claims.host_data == "00"`,
			want: want{false, policy.StatusAffirming, "r", []policy.Reason{
				{Rule: "r", Outcome: "fail", Detail: "evaluation failed: no such key: host_data"},
			}},
		},
		{
			name:   "absent field guarded",
			claims: tdxClaims(), ref: reference(),
			expr: `!has(claims.host_data) || claims.host_data == "00"`,
			want: want{true, policy.StatusAffirming, "r", []policy.Reason{
				{Rule: "r", Outcome: "pass", Detail: "the rule evaluated to true"},
			}},
		},
		{
			name:   "runtime type error",
			claims: snpClaims(), ref: reference(),
			expr: `claims.tee > 3`,
			want: want{false, policy.StatusAffirming, "r", []policy.Reason{
				{Rule: "r", Outcome: "fail", Detail: "evaluation failed: no such overload"},
			}},
		},
		{
			name:   "non-bool result",
			claims: snpClaims(), ref: reference(),
			expr: `claims.tee`,
			want: want{false, policy.StatusAffirming, "r", []policy.Reason{
				{Rule: "r", Outcome: "fail", Detail: "evaluation failed: the rule yielded a string, want bool"},
			}},
		},
		{
			name:   "division by zero",
			claims: snpClaims(), ref: reference(),
			expr: `claims.vmpl / claims.vmpl == 1`,
			want: want{false, policy.StatusAffirming, "r", []policy.Reason{
				{Rule: "r", Outcome: "fail", Detail: "evaluation failed: division by zero"},
			}},
		},
		{
			name:   "cost limit",
			claims: snpClaims(), ref: reference(),
			expr: costly(),
			want: want{false, policy.StatusAffirming, "r", []policy.Reason{
				{Rule: "r", Outcome: "fail", Detail: "evaluation failed: the rule exceeded the cost limit (100000)"},
			}},
		},
		{
			name:   "cost limit, contraindicated",
			claims: mutate(snpClaims(), func(c *attestation.Claims) { c.MigrationAgent = true }), ref: reference(),
			expr: costly(),
			want: want{false, policy.StatusContraindicated, policy.ContraindicatedRule, []policy.Reason{
				{Rule: "migration_agent", Outcome: "fail", Detail: "the guest allows a migration agent or migration"},
				{Rule: policy.ContraindicatedRule, Outcome: "fail", Detail: "the appraisal is contraindicated; no release rule can override it"},
				{Rule: "r", Outcome: "skip", Detail: "not applied: evaluation failed: the rule exceeded the cost limit (100000)"},
			}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var prg *policy.Program
			if tt.expr != "" {
				prg = mustCompile(t, "r", tt.expr)
			}
			d := policy.Decide(tt.claims, tt.ref, prg, now)
			got := want{d.Release, d.Appraisal.Status, d.Rule, d.Reasons}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(want{})); diff != "" {
				t.Errorf("Decide() mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(policy.Appraise(tt.claims, tt.ref, now), d.Appraisal); diff != "" {
				t.Errorf("Decide() appraisal differs from Appraise() (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDecideBoundedCost checks that a rule within the cost limit over
// realistic claims is not cut off, and that the limit stops the costly
// rule quickly.
func TestDecideBoundedCost(t *testing.T) {
	ok := mustCompile(t, "ok", `appraisal.reasons.all(r, r.outcome != "fail") && claims.unchecked.all(u, u in ["crl"]) && claims.tcb.all(k, claims.tcb[k].snp >= 8)`)
	if d := policy.Decide(snpClaims(), reference(), ok, now); !d.Release {
		t.Errorf("Decide(realistic rule) = %v, want release", d.Reasons)
	}
	heavy := mustCompile(t, "heavy", costly())
	start := time.Now()
	if d := policy.Decide(snpClaims(), reference(), heavy, now); d.Release {
		t.Errorf("Decide(costly rule) released")
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("Decide(costly rule) took %v; the cost limit should stop it early", el)
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name string
		rule policy.Rule
		want string // the error text contains this
	}{
		{"empty name", policy.Rule{Expression: "true"}, `policy: rule "": invalid rule: empty name`},
		{"reserved default name", policy.Rule{Name: "default: affirming appraisal", Expression: "true"}, "reserved"},
		{"reserved appraisal name", policy.Rule{Name: "appraisal: ok", Expression: "true"}, "reserved"},
		{"control characters in name", policy.Rule{Name: "a\nb", Expression: "true"}, "name contains control characters"},
		{"long name", policy.Rule{Name: strings.Repeat("n", policy.MaxNameSize+1), Expression: "true"}, "name is 257 bytes, limit 256"},
		{"invalid utf-8 name", policy.Rule{Name: "\xff", Expression: "true"}, "name is not valid UTF-8"},
		{"empty expression", policy.Rule{Name: "r", Expression: " \n"}, `policy: rule "r": invalid rule: empty expression`},
		{"too long", policy.Rule{Name: "r", Expression: "true" + strings.Repeat(" ", policy.MaxRuleSize-3)}, `policy: rule "r": invalid rule: expression is 4097 bytes, limit 4096`},
		{"invalid utf-8 expression", policy.Rule{Name: "r", Expression: "\"\xff\" == \"\""}, "expression is not valid UTF-8"},
		{"syntax error", policy.Rule{Name: "r", Expression: `claims.tee ==`}, `policy: rule "r": invalid rule: ERROR: <input>:1:14: Syntax error`},
		{"undeclared variable", policy.Rule{Name: "r", Expression: `request.path == "/"`}, `ERROR: <input>:1:1: undeclared reference to 'request'`},
		{"unknown function", policy.Rule{Name: "r", Expression: `allow(claims)`}, `undeclared reference to 'allow'`},
		{"int result", policy.Rule{Name: "r", Expression: `1 + 2`}, `policy: rule "r": invalid rule: expression has type int, want bool`},
		{"map result", policy.Rule{Name: "r", Expression: `claims`}, `expression has type map(string, dyn), want bool`},
		{"static type error", policy.Rule{Name: "r", Expression: `now > 3`}, `found no matching overload for '_>_' applied to '(timestamp, int)'`},
		{"deep parentheses", policy.Rule{Name: "r", Expression: strings.Repeat("(", 300) + "true" + strings.Repeat(")", 300)}, "invalid rule"},
		{"deep lists", policy.Rule{Name: "r", Expression: strings.Repeat("[", policy.MaxRuleDepth+1) + strings.Repeat("]", policy.MaxRuleDepth+1) + " == []"}, "expression recursion limit exceeded: 32"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := policy.Compile(tt.rule)
			if err == nil {
				t.Fatalf("Compile() = %v, want error containing %q", p, tt.want)
			}
			if !errors.Is(err, policy.ErrInvalidRule) {
				t.Errorf("Compile() error %v does not wrap ErrInvalidRule", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Compile() error = %q, want it to contain %q", err, tt.want)
			}
			if verr := policy.ValidateRule(tt.rule); verr == nil || verr.Error() != err.Error() {
				t.Errorf("ValidateRule() = %v, want %v", verr, err)
			}
		})
	}
}

func TestCompile(t *testing.T) {
	r := policy.Rule{Name: "secrets/db", Expression: "appraisal.status == \"affirming\"\n  && claims.tee in [\"snp\", \"tdx\"]"}
	p, err := policy.Compile(r)
	if err != nil {
		t.Fatalf("Compile() = %v", err)
	}
	if diff := cmp.Diff(r, p.Rule()); diff != "" {
		t.Errorf("Program.Rule() mismatch (-want +got):\n%s", diff)
	}
	if err := policy.ValidateRule(r); err != nil {
		t.Errorf("ValidateRule() = %v", err)
	}
	if _, err := policy.Compile(policy.Rule{Name: "r", Expression: "true" + strings.Repeat(" ", policy.MaxRuleSize-4)}); err != nil {
		t.Errorf("Compile(expression of exactly MaxRuleSize bytes) = %v, want nil", err)
	}
}

// TestProgramConcurrent runs one program from many goroutines; run with
// -race.
func TestProgramConcurrent(t *testing.T) {
	p := mustCompile(t, "r", `claims.tee == "snp" && size(claims.unchecked) == 0`)
	done := make(chan bool)
	for range 8 {
		go func() {
			ok := true
			for range 20 {
				ok = ok && policy.Decide(snpClaims(), reference(), p, now).Release
			}
			done <- ok
		}()
	}
	for range 8 {
		if !<-done {
			t.Error("Decide() from a goroutine did not release")
		}
	}
}

func BenchmarkDecide(b *testing.B) {
	ref := requiring(with(reference(),
		policy.ReferenceValue{TEE: "snp", Kind: "host_data", Value: snpHostData},
		policy.ReferenceValue{TEE: "snp", Kind: "chip_id", Value: snpChipID},
	), policy.Requirements{
		TEE:                    "snp",
		MinTCB:                 map[string]attestation.TCBVersion{"Milan": milanTCB(3, 0, 8, 115)},
		RequireFreshCollateral: true,
	})
	c := snpClaims()
	b.Run("default", func(b *testing.B) {
		for b.Loop() {
			if !policy.Decide(c, ref, nil, now).Release {
				b.Fatal("not released")
			}
		}
	})
	b.Run("cel", func(b *testing.B) {
		p := mustCompile(b, "r", `claims.tee == "snp" && appraisal.status == "affirming" && claims.tcb.committed.snp >= 8 && size(claims.unchecked) == 0`)
		for b.Loop() {
			if !policy.Decide(c, ref, p, now).Release {
				b.Fatal("not released")
			}
		}
	})
}

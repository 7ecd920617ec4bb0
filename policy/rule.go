package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/interpreter"

	"github.com/greatjail/cvm/attestation"
)

// Rule is a resource's release rule: a CEL expression that must evaluate
// to a bool. It sees three variables:
//
//   - claims, map(string, dyn): the claims in their JSON form, with exactly
//     the field names of docs/claims.md. Byte strings are lowercase hex
//     strings; integers are CEL ints (uints only above 2^63-1); times
//     (verified_at, collateral_expiry, tdx.tcb_date) are RFC 3339 strings,
//     so compare them with timestamp(claims.verified_at). Fields the JSON
//     form omits are absent (test with has(claims.host_data)); reading an
//     absent field is an evaluation error, which denies. One exception:
//     claims.unchecked is always present, an empty list when every check
//     ran, so size(claims.unchecked) == 0 works.
//   - appraisal, map(string, dyn): {"status": "affirming" | "warning" |
//     "contraindicated", "reasons": [{"rule", "outcome", "detail"}...]}.
//   - now, timestamp: the decision time.
//
// Examples: `appraisal.status in ["affirming", "warning"]` (accept
// warnings such as an unchecked CRL), `claims.tcb.committed.snp >= 8`,
// `has(claims.host_data) && claims.host_data == "ab..."`.
//
// A rule can narrow what the appraisal allows, or accept a warning; it can
// never release a contraindicated appraisal (see Decide).
type Rule struct {
	// Name identifies the rule in decisions and the audit log. It must be
	// non-empty, at most MaxNameSize bytes of UTF-8 without control
	// characters, and must not start with "default:" or "appraisal:"
	// (the names Decide uses when no rule of the operator's decided).
	Name       string `json:"name"`
	Expression string `json:"expression"`
}

// Names Decide puts in Decision.Rule when no operator rule decided.
const (
	// DefaultRule decided: the resource has no rule of its own, and only an
	// affirming appraisal is released.
	DefaultRule = "default: affirming appraisal"
	// ContraindicatedRule decided: the appraisal is contraindicated, which
	// no release rule can override.
	ContraindicatedRule = "appraisal: contraindicated"
)

// Program is a compiled, type-checked Rule. It is immutable and safe for
// concurrent use.
type Program struct {
	rule Rule
	prg  cel.Program
}

// Rule returns the rule p was compiled from.
func (p *Program) Rule() Rule { return p.rule }

// ruleEnv is the CEL environment every rule compiles in. A *cel.Env is
// safe for concurrent use once built.
var ruleEnv = sync.OnceValues(func() (*cel.Env, error) {
	return cel.NewEnv(
		cel.Variable("claims", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("appraisal", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("now", cel.TimestampType),
		cel.CrossTypeNumericComparisons(true),
		cel.DefaultUTCTimeZone(true),
		cel.ParserExpressionSizeLimit(MaxRuleSize),
		// The type checker's time grows steeply with the nesting of
		// aggregate literals (depth 160 takes seconds); real rules are
		// shallow.
		cel.ParserRecursionLimit(MaxRuleDepth),
	)
})

// Compile validates r and compiles it: the name is checked, the expression
// must be at most MaxRuleSize bytes, nest at most MaxRuleDepth deep, parse, type-check against the
// variables described at Rule, and have type bool (or dyn, checked when
// evaluated). Errors wrap ErrInvalidRule and name the rule and the CEL
// issue, with its position. Each evaluation of the program is limited to
// MaxRuleCost.
func Compile(r Rule) (*Program, error) {
	if err := checkRuleName(r.Name); err != nil {
		return nil, fmt.Errorf("policy: rule %q: %w", r.Name, err)
	}
	if len(r.Expression) > MaxRuleSize {
		return nil, fmt.Errorf("policy: rule %q: %w: expression is %d bytes, limit %d", r.Name, ErrInvalidRule, len(r.Expression), MaxRuleSize)
	}
	if strings.TrimSpace(r.Expression) == "" {
		return nil, fmt.Errorf("policy: rule %q: %w: empty expression", r.Name, ErrInvalidRule)
	}
	if !utf8.ValidString(r.Expression) {
		return nil, fmt.Errorf("policy: rule %q: %w: expression is not valid UTF-8", r.Name, ErrInvalidRule)
	}
	env, err := ruleEnv()
	if err != nil {
		return nil, fmt.Errorf("policy: rule environment: %w", err)
	}
	ast, iss := env.Compile(r.Expression)
	if err := iss.Err(); err != nil {
		return nil, fmt.Errorf("policy: rule %q: %w: %v", r.Name, ErrInvalidRule, err)
	}
	if t := ast.OutputType(); !t.IsExactType(cel.BoolType) && !t.IsExactType(cel.DynType) {
		return nil, fmt.Errorf("policy: rule %q: %w: expression has type %s, want bool", r.Name, ErrInvalidRule, t)
	}
	prg, err := env.Program(ast, cel.CostLimit(MaxRuleCost))
	if err != nil {
		return nil, fmt.Errorf("policy: rule %q: %w: %v", r.Name, ErrInvalidRule, err)
	}
	return &Program{rule: r, prg: prg}, nil
}

// ValidateRule reports whether r compiles; see Compile.
func ValidateRule(r Rule) error {
	_, err := Compile(r)
	return err
}

func checkRuleName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty name", ErrInvalidRule)
	case len(name) > MaxNameSize:
		return fmt.Errorf("%w: name is %d bytes, limit %d", ErrInvalidRule, len(name), MaxNameSize)
	case !utf8.ValidString(name):
		return fmt.Errorf("%w: name is not valid UTF-8", ErrInvalidRule)
	case strings.IndexFunc(name, unicode.IsControl) >= 0:
		return fmt.Errorf("%w: name contains control characters", ErrInvalidRule)
	case strings.HasPrefix(name, "default:"), strings.HasPrefix(name, "appraisal:"):
		return fmt.Errorf("%w: names starting with \"default:\" or \"appraisal:\" are reserved", ErrInvalidRule)
	}
	return nil
}

// Decision is the outcome of Decide. Its reasons are for the operator
// (audit log, `evaluate`); a guest is only ever told that it was denied.
type Decision struct {
	Release bool `json:"release"`
	// Appraisal is the full appraisal, every rule's reason included.
	Appraisal *Appraisal `json:"appraisal"`
	// Rule names what decided: the release rule's name, DefaultRule, or
	// ContraindicatedRule.
	Rule string `json:"rule"`
	// Reasons are the reasons that decided: the appraisal's failures and
	// warnings, in order, then the verdict of what decided (and, when a
	// rule was overridden by a contraindicated appraisal, that rule's
	// result as a skip, so a dry run shows what it would have said).
	Reasons []Reason `json:"reasons"`
}

// Decide appraises c against ref at time now and applies rule:
//
//   - rule nil (the resource has no rule of its own): release iff the
//     appraisal is affirming. Decision.Rule is DefaultRule.
//   - rule set: release iff the appraisal is not contraindicated AND the
//     expression evaluates to true. A contraindicated appraisal (a debug
//     guest, an unknown measurement, no reference values, ...) is denied
//     whatever the rule says, with Decision.Rule ContraindicatedRule; the
//     rule is still evaluated so a dry run shows its result. An
//     evaluation error (an absent field, a runtime type error, the cost
//     limit, a non-bool result) denies.
//
// Decide never panics and never returns nil.
func Decide(c *attestation.Claims, ref *Reference, rule *Program, now time.Time) *Decision {
	a := Appraise(c, ref, now)
	d := &Decision{Appraisal: a}
	for _, r := range a.Reasons {
		if r.Outcome == OutcomeFail || r.Outcome == OutcomeWarn {
			d.Reasons = append(d.Reasons, r)
		}
	}
	if rule == nil {
		d.Rule = DefaultRule
		switch a.Status {
		case StatusAffirming:
			d.Release = true
			d.verdict(DefaultRule, OutcomePass, "the appraisal is affirming")
		case StatusWarning:
			d.verdict(DefaultRule, OutcomeFail, "the appraisal is warning; a resource without its own release rule needs an affirming appraisal")
		default:
			d.verdict(DefaultRule, OutcomeFail, "the appraisal is contraindicated")
		}
		return d
	}
	name := rule.rule.Name
	var ok bool
	var detail string
	if c == nil {
		detail = "not evaluated: no claims"
	} else {
		ok, detail = rule.eval(c, a, now)
	}
	if a.Status == StatusContraindicated {
		d.Rule = ContraindicatedRule
		d.verdict(ContraindicatedRule, OutcomeFail, "the appraisal is contraindicated; no release rule can override it")
		d.verdict(name, OutcomeSkip, "not applied: "+detail)
		return d
	}
	d.Rule = name
	if ok {
		d.Release = true
		d.verdict(name, OutcomePass, detail)
	} else {
		d.verdict(name, OutcomeFail, detail)
	}
	return d
}

func (d *Decision) verdict(rule, outcome, detail string) {
	d.Reasons = append(d.Reasons, Reason{Rule: rule, Outcome: outcome, Detail: detail})
}

// eval runs the rule; ok is true only for a bool true result.
func (p *Program) eval(c *attestation.Claims, a *Appraisal, now time.Time) (ok bool, detail string) {
	defer func() {
		if r := recover(); r != nil {
			ok, detail = false, fmt.Sprintf("evaluation failed: internal error: %v", r)
		}
	}()
	cv, err := claimsValue(c)
	if err != nil {
		return false, "evaluation failed: " + err.Error()
	}
	out, _, err := p.prg.Eval(map[string]any{
		"claims":    cv,
		"appraisal": appraisalValue(a),
		"now":       now,
	})
	if err != nil {
		var ce interpreter.EvalCancelledError
		if errors.As(err, &ce) && ce.Cause == interpreter.CostLimitExceeded {
			return false, fmt.Sprintf("evaluation failed: the rule exceeded the cost limit (%d)", MaxRuleCost)
		}
		return false, "evaluation failed: " + err.Error()
	}
	b, isBool := out.Value().(bool)
	switch {
	case !isBool:
		return false, fmt.Sprintf("evaluation failed: the rule yielded a %s, want bool", out.Type().TypeName())
	case b:
		return true, "the rule evaluated to true"
	}
	return false, "the rule evaluated to false"
}

// claimsValue turns c into the map a rule sees as `claims`: its JSON form,
// with integers as int64 (uint64 above the int64 range) and unchecked
// always present.
func claimsValue(c *attestation.Claims) (map[string]any, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("claims: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("claims: %w", err)
	}
	for k, v := range m {
		m[k] = numbers(v)
	}
	if _, ok := m["unchecked"]; !ok {
		m["unchecked"] = []any{}
	}
	return m, nil
}

// numbers replaces every json.Number in v by an int64, a uint64 or a
// float64.
func numbers(v any) any {
	switch t := v.(type) {
	case json.Number:
		if i, err := strconv.ParseInt(string(t), 10, 64); err == nil {
			return i
		}
		if u, err := strconv.ParseUint(string(t), 10, 64); err == nil {
			return u
		}
		f, _ := t.Float64()
		return f
	case map[string]any:
		for k, e := range t {
			t[k] = numbers(e)
		}
	case []any:
		for i, e := range t {
			t[i] = numbers(e)
		}
	}
	return v
}

// appraisalValue turns a into the map a rule sees as `appraisal`.
func appraisalValue(a *Appraisal) map[string]any {
	reasons := make([]any, len(a.Reasons))
	for i, r := range a.Reasons {
		reasons[i] = map[string]any{"rule": r.Rule, "outcome": r.Outcome, "detail": r.Detail}
	}
	return map[string]any{"status": string(a.Status), "reasons": reasons}
}

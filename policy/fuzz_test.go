package policy_test

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/policy"
)

// FuzzParseReference: ParseReference never panics; what it accepts is
// valid, survives a JSON round trip unchanged, and appraises without
// panicking.
func FuzzParseReference(f *testing.F) {
	f.Add(readFile(f, "testdata/reference.json"))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"values": [{"tee": "tpm", "kind": "pcr23", "value": "` + hx(fill(1, 20)) + `"}]}`))
	f.Add([]byte(`{"requirements": [{"tee": "tdx", "allowed_tdx_tcb_statuses": ["unknown"]}]}`))
	f.Add([]byte(`{"requirements": [{"tee": "snp", "min_tcb": {"Milan": {"raw": "123", "fmc": 1}}, "min_guest_svn": 4294967295}]}`))
	f.Add([]byte(`{"values": null, "requirements": [null]}`))
	f.Add([]byte(`{"values": [{"tee": "snp", "kind": "chip_id", "value": "` + hx(fill(0, 64)) + `"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ref, err := policy.ParseReference(b)
		if err != nil {
			return
		}
		if err := ref.Validate(); err != nil {
			t.Fatalf("ParseReference accepted a reference that Validate rejects: %v", err)
		}
		out, err := json.Marshal(ref)
		if err != nil {
			t.Fatalf("json.Marshal(parsed reference) = %v", err)
		}
		again, err := policy.ParseReference(out)
		if err != nil {
			t.Fatalf("ParseReference(marshalled reference) = %v\n%s", err, out)
		}
		if diff := cmp.Diff(ref, again, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("round trip mismatch (-first +second):\n%s", diff)
		}
		for _, c := range []*attestation.Claims{snpClaims(), simClaims(), tdxClaims(), tpmClaims()} {
			if a := policy.Appraise(c, ref, now); a == nil || a.Status == "" {
				t.Fatalf("Appraise() = %v", a)
			}
		}
	})
}

// FuzzImportMeasurement: ImportMeasurement never panics, and every value
// it returns is a valid measurement with a bounded note.
func FuzzImportMeasurement(f *testing.F) {
	f.Add(readFile(f, "testdata/measure-snp.json"))
	f.Add(readFile(f, "testdata/measure-list.json"))
	f.Add([]byte(`{"tee": "tdx", "mrtd": "` + hx(tdxMRTD) + `", "inputs": "\u0000\ud800"}`))
	f.Add([]byte(`[{"tee": "sim", "launch_digest": "` + hx(snpMeasurement) + `"}, []]`))
	f.Add([]byte(`{"tee": "snp", "launch_digest": null, "mrtd": 1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		vals, err := policy.ImportMeasurement(b)
		if err != nil {
			return
		}
		if len(vals) == 0 {
			t.Fatal("ImportMeasurement() returned no values and no error")
		}
		for _, v := range vals {
			if err := v.Validate(); err != nil {
				t.Fatalf("ImportMeasurement() returned an invalid value: %v", err)
			}
			if v.Kind != policy.KindMeasurement || v.ID != "" {
				t.Fatalf("ImportMeasurement() = %+v, want a measurement without id", v)
			}
		}
	})
}

// FuzzCompile: Compile never panics on an arbitrary expression, and a
// compiled rule never panics when decided and never releases a
// contraindicated appraisal.
func FuzzCompile(f *testing.F) {
	for _, s := range []string{
		`claims.tee == "snp" && appraisal.status == "affirming"`,
		`appraisal.status in ["affirming","warning"]`,
		`claims.host_data == "` + hx(snpHostData) + `"`,
		`claims.tcb.committed.snp >= 8`,
		`size(claims.unchecked) == 0`,
		`true`,
		`claims.tee`,
		`now - timestamp(claims.verified_at) < duration("5m")`,
		`claims.exists(k, k.matches("^t"))`,
		`appraisal.reasons.map(r, r.rule).size() > 0 ? true : false`,
		`int(claims.policy) / 0 == 1`,
		`claims.pcrs.values.all(k, claims.pcrs.values[k].startsWith("7"))`,
		`[1,2,3].all(a, [1,2,3].exists(b, a == b))`,
		`((((((((((true))))))))))`,
		`"\xff" == b"\xff"`,
	} {
		f.Add(s)
	}
	debug := snpClaims()
	debug.Debug = true
	claims := []*attestation.Claims{snpClaims(), debug, tdxClaims(), tpmClaims()}
	ref := reference()
	f.Fuzz(func(t *testing.T, expr string) {
		p, err := policy.Compile(policy.Rule{Name: "fuzz", Expression: expr})
		if err != nil {
			return
		}
		for _, c := range claims {
			d := policy.Decide(c, ref, p, now)
			if d.Appraisal.Status == policy.StatusContraindicated && d.Release {
				t.Fatalf("rule %q released a contraindicated appraisal", expr)
			}
			if len(d.Reasons) == 0 || d.Rule == "" {
				t.Fatalf("Decide() = %+v, want a rule and reasons", d)
			}
		}
	})
}

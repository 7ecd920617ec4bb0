package policy_test

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/policy"
)

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseReference(t *testing.T) {
	got, err := policy.ParseReference(readFile(t, "testdata/reference.json"))
	if err != nil {
		t.Fatalf("ParseReference(testdata/reference.json) = %v", err)
	}
	want := &policy.Reference{
		Values: []policy.ReferenceValue{
			{ID: "snp-1", TEE: "snp", Kind: "measurement", Value: snpMeasurement, Note: "guest image 1.0, 4 vCPUs, Milan"},
			{ID: "snp-hd", TEE: "snp", Kind: "host_data", Value: snpHostData},
			{ID: "snp-chip", TEE: "snp", Kind: "chip_id", Value: snpChipID},
			{ID: "tdx-1", TEE: "tdx", Kind: "measurement", Value: tdxMRTD},
			{ID: "tdx-rtmr1", TEE: "tdx", Kind: "rtmr1", Value: tdxRTMR(1)},
			{ID: "tdx-cfg", TEE: "tdx", Kind: "mr_config_id", Value: tdxMRConfigID},
			{ID: "tpm-7", TEE: "tpm", Kind: "pcr7", Value: tpmPCR7},
			{ID: "sim-1", TEE: "sim", Kind: "measurement", Value: snpMeasurement}, // upper-case hex in the file
		},
		Requirements: []policy.Requirements{
			{
				TEE: "snp",
				MinTCB: map[string]attestation.TCBVersion{
					"Milan": milanTCB(3, 0, 8, 115),
					"Genoa": milanTCB(9, 0, 23, 72),
				},
				RequireFreshCollateral: true,
				AcceptUnchecked:        []string{"crl"},
				MinGuestSVN:            ptr(uint32(1)),
			},
			{TEE: "tdx", AllowedTDXTCBStatuses: []string{"UpToDate", "SWHardeningNeeded"}, RequireFreshCollateral: true},
			{TEE: "tpm", AcceptUnchecked: []string{"event log"}},
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ParseReference() mismatch (-want +got):\n%s", diff)
	}
	// The parsed reference affirms claims that match it.
	if a := policy.Appraise(snpClaims(), got, now); a.Status != policy.StatusAffirming {
		t.Errorf("Appraise(snpClaims, testdata/reference.json) = %s, want affirming: %v", a.Status, a.Reasons)
	}
}

func TestParseReferenceErrors(t *testing.T) {
	m := strings.Repeat("11", 48)
	val := func(fields string) string { return `{"values": [{` + fields + `}]}` }
	req := func(fields string) string { return `{"requirements": [{` + fields + `}]}` }
	tests := []struct {
		name string
		in   string
		want string // in the error text
	}{
		{"empty", ``, "not a JSON object"},
		{"null", `null`, "not a JSON object"},
		{"array", `[]`, "not a JSON object"},
		{"truncated", `{"values": [`, "unexpected EOF"},
		{"trailing data", `{} {}`, "data after the JSON object"},
		{"duplicate key", `{"values": [], "values": [{"tee": "snp", "kind": "measurement", "value": "` + m + `"}]}`, `invalid reference: duplicate key "values"`},
		{"duplicate key, other case", `{"values": [], "Values": []}`, `duplicate key "Values"`},
		{"duplicate key in a value", val(`"tee": "snp", "kind": "measurement", "value": "` + m + `", "value": "` + strings.Repeat("12", 48) + `"`), `duplicate key "value"`},
		{"duplicate product", req(`"tee": "snp", "min_tcb": {"Milan": {"snp": 8}, "Milan": {"snp": 1}}`), `duplicate key "Milan"`},
		{"unknown top-level field", `{"values": [], "policy": "allow"}`, `unknown field "policy"`},
		{"unknown value field", val(`"tee": "snp", "kind": "measurement", "value": "` + m + `", "trusted": true`), `unknown field "trusted"`},
		{"unknown requirement field", req(`"tee": "snp", "allow_debug": true`), `unknown field "allow_debug"`},
		{"bad hex", val(`"tee": "snp", "kind": "measurement", "value": "zz"`), "hex"},
		{"odd hex", val(`"tee": "snp", "kind": "measurement", "value": "123"`), "hex"},
		{"hex as number", val(`"tee": "snp", "kind": "measurement", "value": 12`), "hex"},
		{"unknown tee", val(`"tee": "sgx", "kind": "measurement", "value": "` + m + `"`), `values[0]: invalid reference: unknown tee "sgx"`},
		{"missing tee", val(`"kind": "measurement", "value": "` + m + `"`), `unknown tee ""`},
		{"unknown kind", val(`"tee": "snp", "kind": "mrenclave", "value": "` + m + `"`), `kind "mrenclave" does not apply to tee snp (want measurement, host_data, chip_id)`},
		{"rtmr for snp", val(`"tee": "snp", "kind": "rtmr0", "value": "` + m + `"`), `kind "rtmr0" does not apply to tee snp`},
		{"host_data for tdx", val(`"tee": "tdx", "kind": "host_data", "value": "` + strings.Repeat("22", 32) + `"`), `kind "host_data" does not apply to tee tdx (want measurement, rtmr0..rtmr3, mr_config_id)`},
		{"measurement for tpm", val(`"tee": "tpm", "kind": "measurement", "value": "` + m + `"`), `kind "measurement" does not apply to tee tpm (want pcr0..pcr23)`},
		{"rtmr4", val(`"tee": "tdx", "kind": "rtmr4", "value": "` + m + `"`), `kind "rtmr4"`},
		{"pcr24", val(`"tee": "tpm", "kind": "pcr24", "value": "` + strings.Repeat("77", 32) + `"`), `kind "pcr24"`},
		{"pcr07", val(`"tee": "tpm", "kind": "pcr07", "value": "` + strings.Repeat("77", 32) + `"`), `kind "pcr07"`},
		{"pcr-1", val(`"tee": "tpm", "kind": "pcr-1", "value": "` + strings.Repeat("77", 32) + `"`), `kind "pcr-1"`},
		{"short measurement", val(`"tee": "snp", "kind": "measurement", "value": "` + strings.Repeat("11", 32) + `"`), "snp measurement value is 32 bytes, want 48"},
		{"empty value", val(`"tee": "tdx", "kind": "measurement", "value": ""`), "tdx measurement value is 0 bytes, want 48"},
		{"pcr of no bank", val(`"tee": "tpm", "kind": "pcr7", "value": "` + strings.Repeat("77", 33) + `"`), "tpm pcr7 value is 33 bytes, want 20, 32, 48, 64"},
		{"zero chip_id", val(`"tee": "snp", "kind": "chip_id", "value": "` + strings.Repeat("00", 64) + `"`), "chip_id is all zero"},
		{"control character in note", val(`"tee": "snp", "kind": "measurement", "value": "` + m + `", "note": "a\u001b[31mb"`), "note contains control characters"},
		{"long id", val(`"tee": "snp", "kind": "measurement", "value": "` + m + `", "id": "` + strings.Repeat("i", policy.MaxNameSize+1) + `"`), "id is 257 bytes, limit 256"},
		{"long note", val(`"tee": "snp", "kind": "measurement", "value": "` + m + `", "note": "` + strings.Repeat("n", policy.MaxNoteSize+1) + `"`), "note is 1025 bytes, limit 1024"},
		{"requirements unknown tee", req(`"tee": "sev"`), `requirements[0]: invalid reference: unknown tee "sev"`},
		{"two requirements for snp", `{"requirements": [{"tee": "snp"}, {"tee": "tdx"}, {"tee": "snp"}]}`, "requirements[2]: invalid reference: a second requirements entry for tee snp"},
		{"min_tcb for tdx", req(`"tee": "tdx", "min_tcb": {"Milan": {"snp": 8}}`), "min_tcb applies to tee snp and sim, not tdx"},
		{"min_tcb empty product", req(`"tee": "snp", "min_tcb": {"": {"snp": 8}}`), "min_tcb has an empty product name"},
		{"min_tcb out of range", req(`"tee": "snp", "min_tcb": {"Milan": {"snp": 256}}`), "cannot unmarshal number 256"},
		{"min_tcb negative", req(`"tee": "snp", "min_tcb": {"Milan": {"snp": -1}}`), "cannot unmarshal number -1"},
		{"min_guest_svn for tpm", req(`"tee": "tpm", "min_guest_svn": 1`), "min_guest_svn applies to tee snp and sim, not tpm"},
		{"tdx statuses for snp", req(`"tee": "snp", "allowed_tdx_tcb_statuses": ["UpToDate"]`), "allowed_tdx_tcb_statuses applies to tee tdx, not snp"},
		{"unknown tdx status", req(`"tee": "tdx", "allowed_tdx_tcb_statuses": ["uptodate"]`), `unknown status "uptodate"`},
		{"fresh collateral for sim", req(`"tee": "sim", "require_fresh_collateral": true`), "require_fresh_collateral applies to tee snp and tdx; tee sim claims carry no collateral expiry"},
		{"fresh collateral for tpm", req(`"tee": "tpm", "require_fresh_collateral": true`), "require_fresh_collateral applies to tee snp and tdx"},
		{"empty accept_unchecked entry", req(`"tee": "snp", "accept_unchecked": [""]`), "accept_unchecked has an empty entry"},
		{"too large", `{"values": [], "pad": "` + strings.Repeat(" ", policy.MaxReferenceSize) + `"}`, "limit 1048576"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := policy.ParseReference([]byte(tt.in))
			if err == nil {
				t.Fatalf("ParseReference() = %+v, want error containing %q", got, tt.want)
			}
			if !errors.Is(err, policy.ErrInvalidReference) {
				t.Errorf("ParseReference() error %v does not wrap ErrInvalidReference", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseReference() error = %q, want it to contain %q", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "policy: ") {
				t.Errorf("ParseReference() error = %q, want the prefix \"policy: \"", err)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	// The exported validators are what the broker calls on values and
	// requirements it receives one at a time.
	if err := (&policy.ReferenceValue{TEE: "tdx", Kind: "rtmr3", Value: tdxRTMR(3)}).Validate(); err != nil {
		t.Errorf("ReferenceValue.Validate(tdx rtmr3) = %v, want nil", err)
	}
	err := (&policy.ReferenceValue{TEE: "snp", Kind: "pcr0", Value: tpmPCR0}).Validate()
	if !errors.Is(err, policy.ErrInvalidReference) || !strings.Contains(err.Error(), `policy: reference value: invalid reference: kind "pcr0" does not apply to tee snp`) {
		t.Errorf("ReferenceValue.Validate(snp pcr0) = %v, want an ErrInvalidReference naming the kind", err)
	}
	if err := (&policy.Requirements{TEE: "sim", MinGuestSVN: ptr(uint32(1))}).Validate(); err != nil {
		t.Errorf("Requirements.Validate(sim min_guest_svn) = %v, want nil", err)
	}
	err = (&policy.Requirements{TEE: "tdx", MinGuestSVN: ptr(uint32(1))}).Validate()
	if !errors.Is(err, policy.ErrInvalidReference) || !strings.Contains(err.Error(), "policy: requirements: invalid reference: min_guest_svn applies to tee snp and sim, not tdx") {
		t.Errorf("Requirements.Validate(tdx min_guest_svn) = %v, want an ErrInvalidReference naming the setting", err)
	}
	if err := reference().Validate(); err != nil {
		t.Errorf("Reference.Validate(reference()) = %v, want nil", err)
	}
}

func TestImportMeasurement(t *testing.T) {
	const snpNote = `imported from cvm measure; inputs {"firmware":"OVMF.amdsev.fd","kernel":"vmlinuz","cmdline":"console=ttyS0","vcpus":4,"vcpu_type":"EPYC-Milan"}`
	long := `{"tee": "tdx", "mrtd": "` + strings.Repeat("44", 48) + `", "inputs": {"cmdline": "` + strings.Repeat("é", policy.MaxNoteSize) + `"}}`
	longNote := `imported from cvm measure; inputs {"cmdline":"` + strings.Repeat("é", 487) + "..." // 46 + 974 + 3 = 1023 bytes: a 488th "é" would cut mid-rune
	tests := []struct {
		name string
		in   []byte
		want []policy.ReferenceValue
	}{
		{
			name: "snp",
			in:   readFile(t, "testdata/measure-snp.json"),
			want: []policy.ReferenceValue{{TEE: "snp", Kind: "measurement", Value: snpMeasurement, Note: snpNote}},
		},
		{
			name: "list",
			in:   readFile(t, "testdata/measure-list.json"),
			want: []policy.ReferenceValue{
				{TEE: "snp", Kind: "measurement", Value: snpMeasurement, Note: `imported from cvm measure; inputs {"vcpus":4}`},
				{TEE: "tdx", Kind: "measurement", Value: tdxMRTD, Note: "imported from cvm measure"},
			},
		},
		{
			name: "sim, no inputs, unknown fields ignored",
			in:   []byte(`{"tee": "sim", "launch_digest": "` + strings.Repeat("11", 48) + `", "tool": "cvm 0.1"}`),
			want: []policy.ReferenceValue{{TEE: "sim", Kind: "measurement", Value: snpMeasurement, Note: "imported from cvm measure"}},
		},
		{
			name: "long inputs are truncated on a rune boundary",
			in:   []byte(long),
			want: []policy.ReferenceValue{{TEE: "tdx", Kind: "measurement", Value: tdxMRTD, Note: longNote}},
		},
		{
			name: "escaped control characters stay escaped",
			in:   []byte(`{"tee": "tdx", "mrtd": "` + strings.Repeat("44", 48) + `", "inputs": "a\nb"}`),
			want: []policy.ReferenceValue{{TEE: "tdx", Kind: "measurement", Value: tdxMRTD, Note: `imported from cvm measure; inputs "a\nb"`}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := policy.ImportMeasurement(tt.in)
			if err != nil {
				t.Fatalf("ImportMeasurement() = %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ImportMeasurement() mismatch (-want +got):\n%s", diff)
			}
			for _, v := range got {
				if len(v.Note) > policy.MaxNoteSize {
					t.Errorf("ImportMeasurement() note is %d bytes, limit %d", len(v.Note), policy.MaxNoteSize)
				}
			}
		})
	}
}

func TestImportMeasurementErrors(t *testing.T) {
	m := strings.Repeat("11", 48)
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"empty", ``, "want a JSON object or array of objects"},
		{"string", `"x"`, "want a JSON object or array of objects"},
		{"empty list", `[]`, "empty list"},
		{"list of non-objects", `[1]`, "measurement [0]: invalid reference: not a JSON object"},
		{"second entry bad", `[{"tee": "snp", "launch_digest": "` + m + `"}, {"tee": "snp"}]`, `measurement [1]: invalid reference: a snp document needs "launch_digest"`},
		{"trailing data", `{"tee": "snp", "launch_digest": "` + m + `"} x`, "data after the JSON value"},
		{"tpm", `{"tee": "tpm", "launch_digest": "` + m + `"}`, `tee "tpm" has no launch measurement to import`},
		{"no tee", `{"launch_digest": "` + m + `"}`, `tee "" has no launch measurement`},
		{"missing digest", `{"tee": "tdx"}`, `a tdx document needs "mrtd"`},
		{"mrtd for snp", `{"tee": "snp", "launch_digest": "` + m + `", "mrtd": "` + m + `"}`, "a snp document carries the other TEE's digest field"},
		{"launch_digest for tdx", `{"tee": "tdx", "launch_digest": "` + m + `"}`, "a tdx document carries the other TEE's digest field"},
		{"bad hex", `{"tee": "snp", "launch_digest": "xyz"}`, "launch_digest: hex"},
		{"null digest", `{"tee": "snp", "launch_digest": null}`, "snp measurement value is 0 bytes, want 48"},
		{"short digest", `{"tee": "snp", "launch_digest": "` + strings.Repeat("11", 32) + `"}`, "snp measurement value is 32 bytes, want 48"},
		{"too large", `{"tee": "snp", "pad": "` + strings.Repeat(" ", policy.MaxReferenceSize) + `"}`, "limit 1048576"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := policy.ImportMeasurement([]byte(tt.in))
			if err == nil {
				t.Fatalf("ImportMeasurement() = %+v, want error containing %q", got, tt.want)
			}
			if !errors.Is(err, policy.ErrInvalidReference) {
				t.Errorf("ImportMeasurement() error %v does not wrap ErrInvalidReference", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ImportMeasurement() error = %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

package policy

import (
	"errors"
	"testing"
)

func TestParseRequirements(t *testing.T) {
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"min tcb", `{"tee":"snp","min_tcb":{"Milan":{"raw":"0","bootloader":3,"tee":0,"snp":20,"microcode":209}}}`, true},
		{"tdx statuses", `{"tee":"tdx","allowed_tdx_tcb_statuses":["UpToDate","SWHardeningNeeded"]}`, true},
		{"unknown member", `{"tee":"snp","min_tbc":{}}`, false},
		{"duplicate member", `{"tee":"snp","tee":"tdx"}`, false},
		{"data after the object", `{"tee":"sim"}],"values":[{"tee":"sim"}`, false},
		{"not an object", `["tee"]`, false},
		{"min tcb on tdx", `{"tee":"tdx","min_tcb":{"Milan":{"raw":"0","bootloader":1,"tee":0,"snp":0,"microcode":0}}}`, false},
		{"unknown tee", `{"tee":"sgx"}`, false},
	}
	for _, tc := range tests {
		r, err := ParseRequirements([]byte(tc.in))
		if tc.ok && (err != nil || r == nil) {
			t.Errorf("%s: ParseRequirements = %v, want success", tc.name, err)
		}
		if !tc.ok && (err == nil || !errors.Is(err, ErrInvalidReference)) {
			t.Errorf("%s: ParseRequirements = %v, want ErrInvalidReference", tc.name, err)
		}
	}
}

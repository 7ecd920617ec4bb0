package policy_test

import (
	"bytes"
	"fmt"
	"strings"
	"time"

	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/policy"
)

func ExampleDecide() {
	// The operator's reference state: one accepted launch measurement and a
	// minimum firmware TCB for Milan.
	measurement := strings.Repeat("ab", 48)
	ref, err := policy.ParseReference([]byte(`{
	  "values": [{"id": "image-1", "tee": "snp", "kind": "measurement", "value": "` + measurement + `"}],
	  "requirements": [{"tee": "snp", "min_tcb": {"Milan": {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}}}]
	}`))
	if err != nil {
		fmt.Println(err)
		return
	}

	// Claims as a verifier returns them; this one could not check the CRL.
	tcb := attestation.TCBVersion{Bootloader: 3, SNP: 8, Microcode: 115}
	claims := &attestation.Claims{
		TEE:         attestation.TEESEVSNP,
		Product:     "Milan",
		Measurement: bytes.Repeat([]byte{0xab}, 48),
		TCB:         &attestation.SNPTCB{Committed: tcb, Launch: tcb, Current: tcb, Reported: tcb},
		Unchecked:   []string{"crl"},
	}
	now := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)

	// A resource without a rule of its own needs an affirming appraisal.
	d := policy.Decide(claims, ref, nil, now)
	fmt.Println(d.Release, d.Appraisal.Status, d.Rule)

	// A rule can accept the warning, and narrow further.
	rule, err := policy.Compile(policy.Rule{
		Name:       "db-key",
		Expression: `appraisal.status in ["affirming", "warning"] && claims.tcb.launch.snp >= 8`,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	d = policy.Decide(claims, ref, rule, now)
	fmt.Println(d.Release, d.Appraisal.Status, d.Rule)

	// No rule releases a contraindicated appraisal.
	claims.Debug = true
	d = policy.Decide(claims, ref, rule, now)
	fmt.Println(d.Release, d.Appraisal.Status, d.Rule)
	for _, r := range d.Reasons {
		fmt.Printf("  %s %s: %s\n", r.Outcome, r.Rule, r.Detail)
	}
	// Output:
	// false warning default: affirming appraisal
	// true warning db-key
	// false contraindicated appraisal: contraindicated
	//   fail debug: the guest is debuggable: the host can read and change its state
	//   warn unchecked: crl: "crl" could not be checked and is not in accept_unchecked for tee snp
	//   fail appraisal: contraindicated: the appraisal is contraindicated; no release rule can override it
	//   skip db-key: not applied: the rule evaluated to false
}

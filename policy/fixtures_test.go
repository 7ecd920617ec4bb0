package policy_test

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/policy"
)

// now is the appraisal time of every test.
var now = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// fill returns n bytes of b.
func fill(b byte, n int) attestation.Hex { return bytes.Repeat([]byte{b}, n) }

func ptr[T any](v T) *T { return &v }

// Synthetic values: each is a distinct fill byte so mismatches are easy to
// read in failures.
var (
	snpMeasurement = fill(0x11, 48)
	snpHostData    = fill(0x22, 32)
	snpChipID      = fill(0x33, 64)
	tdxMRTD        = fill(0x44, 48)
	tdxMRConfigID  = fill(0x60, 48)
	tpmPCR0        = fill(0x70, 32)
	tpmPCR7        = fill(0x77, 32)
	otherValue48   = fill(0xee, 48)
)

func tdxRTMR(i int) attestation.Hex { return fill(byte(0x50+i), 48) }

func milanTCB(bl, tee, snp, ucode uint8) attestation.TCBVersion {
	return attestation.TCBVersion{Bootloader: bl, TEE: tee, SNP: snp, Microcode: ucode}
}

// snpClaims are claims that the reference from reference() affirms.
func snpClaims() *attestation.Claims {
	tcb := milanTCB(3, 0, 8, 115)
	return &attestation.Claims{
		TEE:              attestation.TEESEVSNP,
		Product:          "Milan",
		Measurement:      snpMeasurement,
		ReportData:       fill(0x01, 64),
		HostData:         snpHostData,
		VMPL:             ptr(0),
		GuestSVN:         ptr(uint32(2)),
		Policy:           ptr(uint64(0x30000)),
		TCB:              &attestation.SNPTCB{Current: tcb, Committed: tcb, Launch: tcb, Reported: tcb},
		Signer:           "vcek",
		ChipID:           snpChipID,
		CollateralExpiry: ptr(now.Add(24 * time.Hour)),
		VerifiedAt:       now,
	}
}

// simClaims are simulated-TEE claims; the sim verifier never checks a CRL.
func simClaims() *attestation.Claims {
	c := snpClaims()
	c.TEE = attestation.TEESim
	c.CollateralExpiry = nil
	c.Unchecked = []string{"crl"}
	return c
}

func tdxClaims() *attestation.Claims {
	return &attestation.Claims{
		TEE:         attestation.TEETDX,
		Product:     "TDX",
		Measurement: tdxMRTD,
		RTMRs:       []attestation.Hex{tdxRTMR(0), tdxRTMR(1), tdxRTMR(2), tdxRTMR(3)},
		ReportData:  fill(0x02, 64),
		MRConfigID:  tdxMRConfigID,
		TDX: &attestation.TDXClaims{
			TCBStatus: attestation.TCBStatusUpToDate,
			TEETCBSVN: fill(0x03, 16),
		},
		CollateralExpiry: ptr(now.Add(24 * time.Hour)),
		VerifiedAt:       now,
	}
}

func tpmClaims() *attestation.Claims {
	return &attestation.Claims{
		TEE:        attestation.TEETPM,
		Product:    "TPM",
		PCRs:       &attestation.PCRs{Hash: "sha256", Values: map[int]attestation.Hex{0: tpmPCR0, 4: fill(0x74, 32), 7: tpmPCR7}},
		ReportData: fill(0x04, 32),
		VerifiedAt: now,
	}
}

// reference accepts snpClaims, simClaims, tdxClaims and tpmClaims.
func reference() *policy.Reference {
	return &policy.Reference{
		Values: []policy.ReferenceValue{
			{ID: "snp-m1", TEE: attestation.TEESEVSNP, Kind: "measurement", Value: snpMeasurement, Note: "release 1.0"},
			{ID: "snp-m0", TEE: attestation.TEESEVSNP, Kind: "measurement", Value: otherValue48},
			{ID: "sim-m1", TEE: attestation.TEESim, Kind: "measurement", Value: snpMeasurement},
			{ID: "tdx-m1", TEE: attestation.TEETDX, Kind: "measurement", Value: tdxMRTD},
			{ID: "tpm-0", TEE: attestation.TEETPM, Kind: "pcr0", Value: tpmPCR0},
			{ID: "tpm-7", TEE: attestation.TEETPM, Kind: "pcr7", Value: tpmPCR7},
		},
	}
}

// with returns ref with extra values appended.
func with(ref *policy.Reference, vs ...policy.ReferenceValue) *policy.Reference {
	ref.Values = append(ref.Values, vs...)
	return ref
}

// requiring returns ref with requirements added.
func requiring(ref *policy.Reference, qs ...policy.Requirements) *policy.Reference {
	ref.Requirements = append(ref.Requirements, qs...)
	return ref
}

// loadClaims reads a claims golden file written by a verifier.
func loadClaims(t testing.TB, path string) *attestation.Claims {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var c attestation.Claims
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return &c
}

// reasonFor returns the first reason of rule, or a zero Reason.
func reasonFor(reasons []policy.Reason, rule string) policy.Reason {
	for _, r := range reasons {
		if r.Rule == rule {
			return r
		}
	}
	return policy.Reason{}
}

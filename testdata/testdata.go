// Package testdata embeds the recorded evidence in this folder so tests in
// any package can use it. Every file's provenance is in README.md; nothing
// here is a secret, and the only keys are synthetic test keys marked as such.
package testdata

import _ "embed"

// SEV-SNP: a real Milan attestation report and its VCEK, from the
// go-sev-guest v0.15.0 module (verify/testdata). The VCEK is valid from
// 2022-09-24 to 2029-09-24.
var (
	//go:embed snp/milan-report.bin
	SNPMilanReport []byte
	//go:embed snp/milan-vcek.der
	SNPMilanVCEK []byte
	//go:embed snp/milan-ask-ark.pem
	SNPMilanASKARK []byte
)

// TDX: a real Sapphire Rapids quote (v4) with its embedded PCK chain, and
// Intel PCS sample collateral, from the go-tdx-guest v0.3.1 module
// (testing/testdata, testing/test_cases.go). The collateral does not match
// the quote's TCB (see README.md).
var (
	//go:embed tdx/spr-e4-quote.dat
	TDXQuote []byte
	//go:embed tdx/tcbinfo-50806f000000.json
	TDXTCBInfo []byte
	//go:embed tdx/tcbinfo-issuer-chain.pem
	TDXTCBInfoIssuerChain []byte
	//go:embed tdx/qe-identity.json
	TDXQEIdentity []byte
	//go:embed tdx/qe-identity-issuer-chain.pem
	TDXQEIdentityIssuerChain []byte
	//go:embed tdx/pckcrl-platform.der
	TDXPCKCRLPlatform []byte
	//go:embed tdx/pckcrl-issuer-chain.pem
	TDXPCKCRLIssuerChain []byte
	//go:embed tdx/rootcrl.der
	TDXRootCRL []byte
)

// TPM: real TCG PC Client (crypto-agile) event logs from the go-eventlog
// v0.0.2 module (testdata/eventlogs/tpm).
var (
	//go:embed tpm/rhel8-uefi-eventlog.bin
	TPMEventLogRHEL8 []byte
	//go:embed tpm/ubuntu-2404-sevsnp-eventlog.bin
	TPMEventLogUbuntu2404 []byte
)

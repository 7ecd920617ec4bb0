package sevsnp

import (
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
)

// productFromReport returns the product line the report itself names:
// CPUID family/model/stepping of a version 3+ report, else the extra
// platform info of the extended report's certificate table. It returns ""
// when neither is present and an error when the CPU is not a known SEV-SNP
// product. Which source was used is returned for messages.
func productFromReport(e *evidence) (line, source string, err error) {
	for _, s := range []struct {
		eax    uint32
		source string
	}{
		{e.report.GetCpuid1EaxFms(), "the report's CPUID fields"},
		{e.platformCPUID & abi.CpuidProductMask, "the certificate table's platform info"},
	} {
		if s.eax == 0 {
			continue
		}
		p := abi.SevProductFromCpuid1Eax(s.eax)
		if p.GetName() == spb.SevProduct_SEV_PRODUCT_UNKNOWN {
			family, model, stepping := abi.FmsFromCpuid1Eax(s.eax)
			return "", s.source, fmt.Errorf("%s name an unknown CPU (family 0x%X, model 0x%X, stepping %d), not Milan, Genoa or Turin", s.source, family, model, stepping)
		}
		return kds.ProductLine(p), s.source, nil
	}
	return "", "", nil
}

// productFromIssuer returns the product line named by an endorsement key
// certificate's issuer: "SEV-Milan" for a VCEK, "SEV-VLEK-Milan" for a
// VLEK. It returns "" if the issuer is not of that form.
func productFromIssuer(c *x509.Certificate, k keyKind) string {
	prefix := "SEV-"
	if k == vlekKind {
		prefix = "SEV-VLEK-"
	}
	line, ok := strings.CutPrefix(c.Issuer.CommonName, prefix)
	if !ok || !slices.Contains(productLines, line) {
		return ""
	}
	return line
}

// tcbParts splits a TCB_VERSION into its security patch levels. Turin
// (family 1Ah) moved the fields: FMC in byte 0, bootloader 1, TEE 2, SNP 3,
// microcode 7; Milan and Genoa have bootloader 0, TEE 1, SNP 6, microcode 7.
type tcbParts struct {
	fmc, bootloader, tee, snp, microcode uint8
}

func splitTCB(line string, tcb uint64) tcbParts {
	if line == "Turin" {
		return tcbParts{
			fmc:        uint8(tcb),
			bootloader: uint8(tcb >> 8),
			tee:        uint8(tcb >> 16),
			snp:        uint8(tcb >> 24),
			microcode:  uint8(tcb >> 56),
		}
	}
	p := kds.DecomposeTCBVersion(kds.TCBVersion(tcb))
	return tcbParts{bootloader: p.BlSpl, tee: p.TeeSpl, snp: p.SnpSpl, microcode: p.UcodeSpl}
}

// vcekURL returns the AMD KDS URL of the VCEK for a chip and reported TCB.
// Turin VCEKs are keyed by the first 8 bytes of CHIP_ID and take an FMC
// level; go-sev-guest v0.15.0's kds.VCEKCertURL predates that, so Turin
// URLs are built here.
func vcekURL(line string, chipID []byte, reportedTCB uint64) string {
	if line != "Turin" {
		return kds.VCEKCertURL(line, chipID, kds.TCBVersion(reportedTCB))
	}
	p := splitTCB(line, reportedTCB)
	return fmt.Sprintf("https://%s/vcek/v1/Turin/%s?fmcSPL=%d&blSPL=%d&teeSPL=%d&snpSPL=%d&ucodeSPL=%d",
		kdsHost, hex.EncodeToString(chipID[:8]), p.fmc, p.bootloader, p.tee, p.snp, p.microcode)
}

// kdsHost is AMD's Key Distribution Service.
const kdsHost = "kdsintf.amd.com"

// crlURL returns the KDS URL of the ARK-signed CRL that covers the
// intermediate certifying keys of kind k.
func crlURL(line string, k keyKind) string {
	return kds.CrlLinkByKey(line, k.signer())
}

package evidence

import (
	"context"
	"fmt"
	"strings"

	"github.com/google/go-configfs-tsm/configfs/configfsi"
	"github.com/google/go-configfs-tsm/configfs/linuxtsm"
	"github.com/google/go-configfs-tsm/report"
	"github.com/greatjail/cvm/attestation"
)

// The provider names the kernel's configfs-tsm reports for each TEE.
var tsmProviders = map[attestation.TEE]string{
	attestation.TEESEVSNP: "sev_guest",
	attestation.TEETDX:    "tdx_guest",
}

// ConfigfsTSM gets evidence through the kernel's configfs-tsm report
// interface. For SNP the outblob is the attestation report and the auxblob
// the certificate table; for TDX the outblob is the quote.
type ConfigfsTSM struct {
	Kind attestation.TEE
	// Client is the configfs; nil means the kernel's (linuxtsm).
	Client configfsi.Client
	// Provider is the provider name the kernel must report; a report from
	// another provider is refused.
	Provider string
}

// NewConfigfsTSM returns the provider for tee on the real configfs (the
// kernel interface is opened at the first Evidence call).
func NewConfigfsTSM(tee attestation.TEE) (*ConfigfsTSM, error) {
	p, ok := tsmProviders[tee]
	if !ok {
		return nil, fmt.Errorf("evidence: configfs-tsm: no provider for tee %q", tee)
	}
	return &ConfigfsTSM{Kind: tee, Provider: p}, nil
}

// TEE returns the TEE this provider reports for.
func (c *ConfigfsTSM) TEE() attestation.TEE { return c.Kind }

// Evidence creates a report entry, writes reportData as the inblob, reads
// the blobs and removes the entry.
func (c *ConfigfsTSM) Evidence(ctx context.Context, reportData [64]byte) (*attestation.Evidence, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cfs := c.Client
	if cfs == nil {
		var err error
		if cfs, err = linuxtsm.MakeClient(); err != nil {
			return nil, fmt.Errorf("evidence: configfs-tsm %s: %w", TSMReportDir, err)
		}
	}
	snp := c.Kind == attestation.TEESEVSNP
	r, err := report.Create(cfs, &report.Request{InBlob: reportData[:], GetAuxBlob: snp})
	if err != nil {
		return nil, fmt.Errorf("evidence: configfs-tsm: creating a report in %s: %w", TSMReportDir, err)
	}
	defer r.Destroy()
	if snp {
		// Under an SVSM the guest runs above VMPL 0 and must ask at or
		// above its floor. Without the attribute, the default (0) applies.
		if floor, err := r.PrivilegeLevelFloor(); err == nil && floor > 0 {
			r.Privilege = &report.Privilege{Level: floor}
		}
	}
	resp, err := r.Get()
	if err != nil {
		return nil, fmt.Errorf("evidence: configfs-tsm: %w", err)
	}
	if got := strings.TrimSpace(resp.Provider); got != c.Provider {
		return nil, fmt.Errorf("evidence: configfs-tsm: the kernel's report provider is %q, want %q for tee %s", got, c.Provider, c.Kind)
	}
	ev := &attestation.Evidence{TEE: c.Kind, Report: resp.OutBlob}
	if snp {
		ev.CertTable = resp.AuxBlob
	}
	return ev, nil
}

package evidence

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/guest-agent/link"
)

// Opener opens link streams; *link.Session is one.
type Opener interface {
	Open(kind string) (net.Conn, error)
}

// Sim gets SNP-format reports from the host's simulated PSP over a psp
// stream (docs/protocol-agent.md). The host signs with the sim authority's
// VCEK and the broker trusts that only when configured with the sim root;
// claims then say tee "sim".
type Sim struct {
	Link Opener
	// VMPL is the privilege level asked for (0 unless set).
	VMPL uint32
}

// TEE returns attestation.TEESim.
func (*Sim) TEE() attestation.TEE { return attestation.TEESim }

// Evidence asks the host for a report binding reportData.
func (s *Sim) Evidence(ctx context.Context, reportData [64]byte) (*attestation.Evidence, error) {
	c, err := s.Link.Open(link.KindPSP)
	if err != nil {
		return nil, fmt.Errorf("evidence: sim: %w", err)
	}
	defer c.Close()
	if d, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	report, certs, err := link.RequestPSP(c, link.PSPRequest{ReportData: reportData, VMPL: s.VMPL})
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("evidence: sim: %w", ctx.Err())
		}
		return nil, fmt.Errorf("evidence: sim: %w", err)
	}
	return &attestation.Evidence{TEE: attestation.TEESim, Report: report, CertTable: certs}, nil
}

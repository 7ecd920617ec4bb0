package kbscmd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"

	sevclient "github.com/google/go-sev-guest/client"
	tdxclient "github.com/google/go-tdx-guest/client"
	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/attestation/sim"
	"github.com/greatjail/cvm/internal/atomicfile"
	"github.com/greatjail/cvm/kbs/client"
	"github.com/greatjail/cvm/kbs/pki"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// FetchOptions are the inputs of `cvm kbs fetch`.
type FetchOptions struct {
	// Addr is the broker, host:port.
	Addr string
	// CA is the broker's CA certificate (PEM): the only identity trusted.
	CA string
	// Resource is the resource path to fetch.
	Resource string
	// TEE is "sim", "snp" or "tdx".
	TEE string
	// SimDir, Measurement and Debug drive the simulated TEE.
	SimDir      string
	Measurement string
	Debug       bool
	// Out is the file to write the resource to; "" means Stdout.
	Out    string
	Stdout io.Writer
}

// Fetch attests to the broker and writes the released resource.
func Fetch(ctx context.Context, o FetchOptions) error {
	if o.Addr == "" || o.Resource == "" {
		return fmt.Errorf("%w: --addr and --resource are required", ErrUsage)
	}
	caPEM, err := readFile("--ca", o.CA)
	if err != nil {
		return err
	}
	var p client.Provider
	switch strings.ToLower(o.TEE) {
	case "sim":
		if p, err = newSimProvider(o); err != nil {
			return err
		}
	case "snp":
		p = snpProvider{}
	case "tdx":
		p = tdxProvider{}
	default:
		return fmt.Errorf("%w: --tee must be sim, snp or tdx", ErrUsage)
	}
	host, _, err := net.SplitHostPort(o.Addr)
	if err != nil {
		return fmt.Errorf("%w: --addr: want HOST:PORT: %w", ErrUsage, err)
	}
	tc, err := pki.ClientTLS(caPEM, nil, nil, host)
	if err != nil {
		return fmt.Errorf("%w: --ca: %w", ErrUsage, err)
	}
	conn, err := grpc.NewClient(o.Addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		return fmt.Errorf("%w: --addr: %w", ErrUsage, err)
	}
	defer conn.Close()
	c := &client.Client{Conn: conn, Provider: p, Rand: rand.Reader}
	data, err := c.Fetch(ctx, o.Resource)
	if err != nil {
		return err
	}
	if o.Out == "" {
		_, err := o.Stdout.Write(data)
		return err
	}
	return atomicfile.Write(o.Out, data, 0o600)
}

// ErrDenied is client.ErrDenied, for callers of this package.
var ErrDenied = client.ErrDenied

// simProvider signs reports with a local simulated-TEE authority, playing
// the PSP as the launcher does for a sim guest.
type simProvider struct {
	a           *sim.Authority
	measurement [48]byte
	debug       bool
}

func newSimProvider(o FetchOptions) (*simProvider, error) {
	if o.SimDir == "" {
		return nil, fmt.Errorf("%w: --tee sim needs --sim-dir (made by 'cvm attest sim init')", ErrUsage)
	}
	m, err := hex.DecodeString(strings.TrimPrefix(o.Measurement, "0x"))
	if err != nil || len(m) != 48 {
		return nil, fmt.Errorf("%w: --measurement: want 96 hex digits (48 bytes)", ErrUsage)
	}
	a, err := sim.Load(o.SimDir)
	if err != nil {
		return nil, fmt.Errorf("%w: --sim-dir: %w", ErrUsage, err)
	}
	p := &simProvider{a: a, debug: o.Debug}
	copy(p.measurement[:], m)
	return p, nil
}

func (p *simProvider) TEE() attestation.TEE { return attestation.TEESim }

func (p *simProvider) Evidence(_ context.Context, rd [64]byte) (*attestation.Evidence, error) {
	r, err := p.a.Report(sim.Request{Measurement: p.measurement, ReportData: rd, Debug: p.debug})
	if err != nil {
		return nil, err
	}
	return &attestation.Evidence{TEE: attestation.TEESim, Report: r, Certificates: [][]byte{p.a.VCEK()}}, nil
}

// snpProvider asks the SEV-SNP guest device (configfs-tsm, else
// /dev/sev-guest) for an extended report.
type snpProvider struct{}

func (snpProvider) TEE() attestation.TEE { return attestation.TEESEVSNP }

// snpMu serializes report requests; the guest device handles one at a time.
var snpMu sync.Mutex

func (snpProvider) Evidence(_ context.Context, rd [64]byte) (*attestation.Evidence, error) {
	snpMu.Lock()
	defer snpMu.Unlock()
	qp, err := sevclient.GetQuoteProvider()
	if err != nil || !qp.IsSupported() {
		return nil, errors.New("not an SEV-SNP guest: no configfs-tsm sev_guest provider and no /dev/sev-guest")
	}
	raw, err := qp.GetRawQuote(rd)
	if err != nil {
		return nil, err
	}
	return &attestation.Evidence{TEE: attestation.TEESEVSNP, Report: raw}, nil
}

// tdxProvider asks the TDX guest device for a quote.
type tdxProvider struct{}

func (tdxProvider) TEE() attestation.TEE { return attestation.TEETDX }

func (tdxProvider) Evidence(_ context.Context, rd [64]byte) (*attestation.Evidence, error) {
	if _, err := os.Stat("/dev/tdx_guest"); err != nil {
		if _, err := os.Stat("/sys/kernel/config/tsm/report"); err != nil {
			return nil, errors.New("not a TDX guest: no /dev/tdx_guest and no configfs-tsm")
		}
	}
	qp, err := tdxclient.GetQuoteProvider()
	if err != nil {
		return nil, err
	}
	raw, err := tdxclient.GetRawQuote(qp, rd)
	if err != nil {
		return nil, err
	}
	return &attestation.Evidence{TEE: attestation.TEETDX, Report: raw}, nil
}

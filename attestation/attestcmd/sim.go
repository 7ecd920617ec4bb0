package attestcmd

import (
	"encoding/hex"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/greatjail/cvm/attestation/sevsnp"
	"github.com/greatjail/cvm/attestation/sim"
	"github.com/greatjail/cvm/internal/atomicfile"
)

// SimInit creates a new simulated-TEE authority in dir and returns the path
// of its root.pem. It refuses to overwrite an existing authority.
func SimInit(dir string, rand io.Reader, now time.Time) (string, error) {
	if dir == "" {
		return "", fmt.Errorf("%w: --dir is required", ErrUsage)
	}
	a, err := sim.New(rand, now)
	if err != nil {
		return "", fmt.Errorf("sim init: %w", err)
	}
	if err := a.Save(dir); err != nil {
		return "", fmt.Errorf("sim init: %w", err)
	}
	return filepath.Join(dir, "root.pem"), nil
}

// SimReportOptions are the inputs of `cvm attest sim report`.
type SimReportOptions struct {
	Dir string
	// Measurement is 96 hex digits (48 bytes).
	Measurement string
	// ReportData is up to 128 hex digits, zero-padded to 64 bytes.
	ReportData string
	// HostData is up to 64 hex digits, zero-padded to 32 bytes.
	HostData string
	Debug    bool
	Out      string
}

// SimReport signs a report with the authority in opts.Dir and writes it to
// opts.Out.
func SimReport(opts SimReportOptions) error {
	var req sim.Request
	if err := hexInto(req.Measurement[:], "--measurement", opts.Measurement, true); err != nil {
		return err
	}
	if err := hexInto(req.ReportData[:], "--report-data", opts.ReportData, false); err != nil {
		return err
	}
	if err := hexInto(req.HostData[:], "--host-data", opts.HostData, false); err != nil {
		return err
	}
	req.Debug = opts.Debug
	if opts.Out == "" {
		return fmt.Errorf("%w: --out is required", ErrUsage)
	}
	a, err := sim.Load(opts.Dir)
	if err != nil {
		return fmt.Errorf("%w: --dir: %w", ErrUsage, err)
	}
	r, err := a.Report(req)
	if err != nil {
		return fmt.Errorf("sim report: %w", err)
	}
	return atomicfile.Write(opts.Out, r, 0o644)
}

// SimCerts writes the authority's VCEK certificate (PEM) to out.
func SimCerts(dir, out string) error {
	if out == "" {
		return fmt.Errorf("%w: --out is required", ErrUsage)
	}
	a, err := sim.Load(dir)
	if err != nil {
		return fmt.Errorf("%w: --dir: %w", ErrUsage, err)
	}
	return atomicfile.Write(out, pemCert(a.VCEK()), 0o644)
}

// SeedCache writes the certificates that verify report into the SEV-SNP
// certificate cache dir, so later verification works offline.
func SeedCache(dir, report string, certs []string) ([]string, error) {
	if dir == "" {
		return nil, fmt.Errorf("%w: --cache is required", ErrUsage)
	}
	r, err := readFile("--report", report)
	if err != nil {
		return nil, err
	}
	var ders [][]byte
	for _, f := range certs {
		c, err := readCerts(f)
		if err != nil {
			return nil, err
		}
		ders = append(ders, c...)
	}
	if len(ders) == 0 {
		return nil, fmt.Errorf("%w: --certs is required: give the VCEK (and optionally the ASK/ARK chain) to store", ErrUsage)
	}
	return sevsnp.SeedCache(dir, r, ders...)
}

// hexInto decodes s into dst. With exact, s must fill dst; otherwise it may
// be shorter and the rest stays zero.
func hexInto(dst []byte, flag, s string, exact bool) error {
	s = strings.TrimPrefix(strings.TrimSpace(s), "0x")
	if s == "" && !exact {
		return nil
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		return fmt.Errorf("%w: %s: not hex: %w", ErrUsage, flag, err)
	}
	switch {
	case exact && len(b) != len(dst):
		return fmt.Errorf("%w: %s: want %d hex digits (%d bytes), got %d", ErrUsage, flag, 2*len(dst), len(dst), len(s))
	case len(b) > len(dst):
		return fmt.Errorf("%w: %s: at most %d hex digits (%d bytes), got %d", ErrUsage, flag, 2*len(dst), len(dst), len(s))
	}
	copy(dst, b)
	return nil
}

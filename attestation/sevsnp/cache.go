package sevsnp

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/internal/atomicfile"
)

// Cache is a Fetcher that keeps AMD KDS answers in a directory, so that
// verification works offline and KDS's rate limit is rarely met. It
// accepts only KDS URLs (https://kdsintf.amd.com/{vcek,vlek}/v1/<line>/...)
// and stores each at a path derived from the parsed URL, never from raw
// URL text:
//
//	Dir/vcek/v1/<line>/<hwid-hex>/<bl>-<tee>-<snp>-<ucode>.der  VCEK (Milan, Genoa)
//	Dir/vcek/v1/Turin/<hwid-hex>/<fmc>-<bl>-<tee>-<snp>-<ucode>.der  VCEK (Turin: 8-byte HWID)
//	Dir/{vcek,vlek}/v1/<line>/cert_chain.pem  ASK or ASVK, then ARK (PEM)
//	Dir/{vcek,vlek}/v1/<line>/crl.der  ARK-signed CRL (DER)
//
// where <line> is Milan, Genoa or Turin, <hwid-hex> is lowercase hex and
// the TCB parts are decimal security patch levels, e.g.
// Dir/vcek/v1/Milan/3ac3fe21...6b5d/2-0-5-68.der.
//
// VCEKs and cert_chain bundles never change, so a cached copy is returned
// without asking Upstream. A CRL is fresh until its NextUpdate (judged by
// Now); a stale or missing one is fetched from Upstream, and if Upstream
// is nil or fails, the stale copy is returned. Anything not cached and not
// fetchable fails with an error wrapping attestation.ErrMissing. Upstream
// answers, and cached files when read, are checked to parse as what the
// URL names (a Milan or Genoa VCEK's HWID and TCB extensions must be the
// URL's) before they are stored or served; files are written atomically
// (temporary file, then rename).
//
// Cache is safe for concurrent use, also by several processes sharing Dir.
// Within a process, upstream fetches are serialized (waiting respects the
// caller's context) so concurrent misses for one URL reach KDS once, and
// UpstreamInterval bounds how often KDS is asked at all.
type Cache struct {
	// Dir is the cache directory; it is created as needed.
	Dir string
	// Upstream fetches what is missing or stale, usually an HTTPFetcher;
	// nil means offline.
	Upstream Fetcher
	// Now returns the time CRL freshness is judged at; nil means every
	// cached CRL counts as stale (Upstream is asked first, and the cached
	// copy is still returned if that fails).
	Now func() time.Time
	// UpstreamInterval is the minimum time between two upstream fetches
	// (AMD's KDS allows roughly one request per 10 seconds per client).
	// A miss that would exceed it fails at once instead of queueing, so a
	// flood of reports naming unknown chips cannot make the verifier hammer
	// KDS or block behind it. Zero means no limit. Requires Now.
	UpstreamInterval time.Duration

	// sem serializes upstream fetches; a buffered channel of one, so that
	// waiting for it respects the caller's context.
	sem chan struct{}
	// once creates sem.
	once sync.Once
	// last is when the last upstream fetch started; guarded by sem.
	last time.Time
}

// acquire takes the upstream slot or gives up when ctx ends.
func (c *Cache) acquire(ctx context.Context) error {
	c.once.Do(func() { c.sem = make(chan struct{}, 1) })
	select {
	case c.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Cache) release() { <-c.sem }

// Fetch returns the KDS resource at url from the cache or from Upstream.
func (c *Cache) Fetch(ctx context.Context, url string) ([]byte, error) {
	if c.Dir == "" {
		return nil, errors.New("sevsnp cache: no directory")
	}
	res, err := parseKDSURL(url)
	if err != nil {
		return nil, fmt.Errorf("sevsnp cache: %w", err)
	}
	path := res.path(c.Dir)
	if b := res.load(path); b != nil && c.fresh(res, b) {
		return b, nil
	}

	if err := c.acquire(ctx); err != nil {
		return nil, fmt.Errorf("sevsnp cache: %s: waiting for the upstream slot: %w", url, err)
	}
	defer c.release()
	cached := res.load(path) // another fetch may have stored it meanwhile
	if cached != nil && c.fresh(res, cached) {
		return cached, nil
	}
	var upErr error
	limited := false
	if c.UpstreamInterval > 0 && c.Now != nil {
		now := c.Now()
		if !c.last.IsZero() && now.Sub(c.last) < c.UpstreamInterval {
			limited = true
		} else {
			c.last = now
		}
	}
	if c.Upstream == nil {
		upErr = errors.New("no upstream (offline)")
	} else if limited {
		upErr = fmt.Errorf("upstream fetches are limited to one per %s", c.UpstreamInterval)
	} else if b, err := c.Upstream.Fetch(ctx, url); err != nil {
		upErr = err
	} else if err := res.validate(b); err != nil {
		upErr = fmt.Errorf("upstream answer rejected: %w", err)
	} else if res.endpoint == endpointCRL && olderCRL(b, cached) {
		upErr = errors.New("upstream answer rejected: the CRL is older than the cached one (rollback)")
	} else {
		// A cache that cannot be written (read-only directory, full disk)
		// must not turn a good, validated answer into a failure; the next
		// call simply fetches again.
		_ = writeAtomic(path, b)
		return b, nil
	}
	if cached != nil {
		return cached, nil // stale on error
	}
	return nil, fmt.Errorf("sevsnp cache: %s is not cached and cannot be fetched (%w): %w", url, upErr, attestation.ErrMissing)
}

// fresh reports whether a cached copy may be returned without asking
// Upstream.
func (c *Cache) fresh(res *kdsResource, b []byte) bool {
	if res.endpoint != endpointCRL {
		return true
	}
	if c.Now == nil {
		return false
	}
	crl, err := x509.ParseRevocationList(b)
	return err == nil && c.Now().Before(crl.NextUpdate)
}

// KDS endpoints the Cache stores.
const (
	endpointVCEK      = "vcek"
	endpointCertChain = "cert_chain"
	endpointCRL       = "crl"
)

// kdsResource is a parsed KDS URL.
type kdsResource struct {
	api      string // "vcek" or "vlek"
	line     string // Milan, Genoa, Turin
	endpoint string // endpointVCEK, endpointCertChain or endpointCRL
	hwid     string // VCEK only: lowercase hex
	tcb      string // VCEK only: file stem from the SPL parameters
}

// parseKDSURL accepts exactly the KDS URLs the Cache stores and rejects
// anything else: other schemes, hosts or paths, escapes, unknown product
// lines, non-hex HWIDs, unknown, missing, repeated or out-of-range query
// parameters.
func parseKDSURL(raw string) (*kdsResource, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("not a KDS URL: %w", err)
	}
	if u.Scheme != "https" || u.Host != kdsHost || u.User != nil || u.Opaque != "" || u.Fragment != "" || u.RawPath != "" {
		return nil, fmt.Errorf("not a KDS URL %q (want https://%s/...)", raw, kdsHost)
	}
	seg := strings.Split(u.Path, "/")
	if len(seg) != 5 || seg[0] != "" || (seg[1] != "vcek" && seg[1] != "vlek") || seg[2] != "v1" || !slices.Contains(productLines, seg[3]) {
		return nil, fmt.Errorf("unknown KDS path %q (want /{vcek,vlek}/v1/{%s}/...)", u.Path, strings.Join(productLines, ","))
	}
	r := &kdsResource{api: seg[1], line: seg[3]}
	switch seg[4] {
	case endpointCertChain, endpointCRL:
		if u.RawQuery != "" || u.ForceQuery {
			return nil, fmt.Errorf("unexpected query in KDS URL %q", raw)
		}
		r.endpoint = seg[4]
		return r, nil
	}
	if r.api != "vcek" {
		return nil, fmt.Errorf("unknown KDS path %q (VLEKs are not served by KDS)", u.Path)
	}
	r.endpoint = endpointVCEK
	hwidSize, params := abi.ChipIDSize, []string{"blSPL", "teeSPL", "snpSPL", "ucodeSPL"}
	if r.line == "Turin" {
		hwidSize, params = 8, append([]string{"fmcSPL"}, params...)
	}
	hwid, err := hex.DecodeString(seg[4])
	if err != nil || len(hwid) != hwidSize {
		return nil, fmt.Errorf("KDS VCEK URL %q: HWID must be %d bytes of hex", raw, hwidSize)
	}
	r.hwid = hex.EncodeToString(hwid)
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return nil, fmt.Errorf("KDS VCEK URL %q: %w", raw, err)
	}
	if len(q) != len(params) {
		return nil, fmt.Errorf("KDS VCEK URL %q: want exactly the parameters %s", raw, strings.Join(params, ", "))
	}
	parts := make([]string, len(params))
	for i, p := range params {
		vs := q[p]
		if len(vs) != 1 {
			return nil, fmt.Errorf("KDS VCEK URL %q: want exactly one %s", raw, p)
		}
		n, err := strconv.ParseUint(vs[0], 10, 8)
		if err != nil {
			return nil, fmt.Errorf("KDS VCEK URL %q: %s: %w", raw, p, err)
		}
		parts[i] = strconv.FormatUint(n, 10)
	}
	r.tcb = strings.Join(parts, "-")
	return r, nil
}

// path returns where r is stored under dir.
func (r *kdsResource) path(dir string) string {
	base := filepath.Join(dir, r.api, "v1", r.line)
	switch r.endpoint {
	case endpointCertChain:
		return filepath.Join(base, "cert_chain.pem")
	case endpointCRL:
		return filepath.Join(base, "crl.der")
	}
	return filepath.Join(base, r.hwid, r.tcb+".der")
}

// validate checks that b parses as what r names.
func (r *kdsResource) validate(b []byte) error {
	switch r.endpoint {
	case endpointCertChain:
		_, _, err := kds.ParseProductCertChain(b)
		return err
	case endpointCRL:
		_, err := x509.ParseRevocationList(b)
		return err
	}
	c, err := x509.ParseCertificate(b)
	if err != nil {
		return err
	}
	if c.Subject.CommonName != "SEV-VCEK" {
		return fmt.Errorf("certificate %q is not a VCEK", c.Subject.CommonName)
	}
	// The path is keyed by HWID and TCB: a VCEK for another chip or TCB
	// must never be kept (or served) under it, or that chip's reports
	// would fail until the file is removed. go-sev-guest v0.15.0 cannot
	// parse Turin VCEK extensions; those are left to the Verifier.
	if r.line == "Turin" {
		return nil
	}
	exts, err := kds.VcekCertificateExtensions(c)
	if err != nil {
		return fmt.Errorf("VCEK extensions: %w", err)
	}
	p := kds.DecomposeTCBVersion(exts.TCBVersion)
	if hwid, tcb := hex.EncodeToString(exts.HWID), fmt.Sprintf("%d-%d-%d-%d", p.BlSpl, p.TeeSpl, p.SnpSpl, p.UcodeSpl); hwid != r.hwid || tcb != r.tcb {
		return fmt.Errorf("the VCEK is for chip %.16s... TCB %s, not chip %.16s... TCB %s", hwid, tcb, r.hwid, r.tcb)
	}
	return nil
}

// load returns the cached copy of r at path, or nil if there is none or it
// is damaged.
func (r *kdsResource) load(path string) []byte {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFetchSize+1))
	if err != nil || len(b) > maxFetchSize || r.validate(b) != nil {
		return nil
	}
	return b
}

// writeAtomic writes b to path, creating its directory, so readers see
// the old file or the new one.
func writeAtomic(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return atomicfile.Write(path, b, 0o644)
}

// SeedCache stores certificates for report in the cache directory dir,
// at the paths a Cache looks them up: the VCEK, and ASK + ARK (or ASVK +
// ARK) as a cert_chain bundle. report is the raw report, optionally
// followed by its certificate table (whose VCEK, ASK and ARK are stored
// too); certs are DER certificates or PEM bundles. Nothing is written
// unless every certificate is accepted. The product line comes
// from the report, else from the VCEK's issuer. A VCEK whose HWID or TCB
// extensions do not match the report's CHIP_ID and REPORTED_TCB is
// refused, and so is a VCEK for a report with a masked CHIP_ID (the cache
// is keyed by it). VLEKs are refused: KDS does not serve them, so they
// must travel with the evidence. SeedCache returns the paths written.
//
// SeedCache does not verify that the certificates chain to AMD; the
// Verifier does that on every use.
func SeedCache(dir string, report []byte, certs ...[]byte) ([]string, error) {
	if dir == "" {
		return nil, errors.New("sevsnp: seed cache: no directory")
	}
	e, err := parseEvidence(attestation.TEESEVSNP, &attestation.Evidence{TEE: attestation.TEESEVSNP, Report: report})
	if err != nil {
		return nil, fmt.Errorf("sevsnp: seed cache: %w", err)
	}
	given := slices.Clone(e.others)
	if e.vcek != nil {
		given = append(given, e.vcek)
	}
	for i, b := range certs {
		cs, err := parseCertificates(b)
		if err != nil {
			return nil, fmt.Errorf("sevsnp: seed cache: certificate argument %d: %w", i, err)
		}
		given = append(given, cs...)
	}
	var vcek *x509.Certificate
	var arks, intermediates []*x509.Certificate
	for _, c := range given {
		switch role, _, ok := rootRole(c); {
		case c.Subject.CommonName == "SEV-VCEK":
			if vcek != nil && !vcek.Equal(c) {
				return nil, errors.New("sevsnp: seed cache: two different VCEKs given")
			}
			vcek = c
		case c.Subject.CommonName == "SEV-VLEK":
			return nil, errors.New("sevsnp: seed cache: VLEK certificates are not cached: KDS does not serve them, the host supplies them with the evidence")
		case !ok:
			return nil, fmt.Errorf("sevsnp: seed cache: certificate %q is not a VCEK, ASK, ASVK or ARK", c.Subject.CommonName)
		case role == roleARK:
			arks = append(arks, c)
		default:
			intermediates = append(intermediates, c)
		}
	}

	line, _, err := productFromReport(e)
	if err != nil {
		return nil, fmt.Errorf("sevsnp: seed cache: %w", err)
	}
	// Check everything first, then write, so that a refusal leaves the
	// cache as it was.
	type file struct {
		path string
		data []byte
	}
	var files []file
	if vcek != nil {
		p, err := seedVCEKPath(dir, e, vcek, line)
		if err != nil {
			return nil, fmt.Errorf("sevsnp: seed cache: %w", err)
		}
		files = append(files, file{p, vcek.Raw})
	}
	usedARK := map[*x509.Certificate]bool{}
	for _, ic := range intermediates {
		role, icLine, _ := rootRole(ic)
		if line != "" && icLine != line {
			return nil, fmt.Errorf("sevsnp: seed cache: %s is for %s, the report is from a %s chip", ic.Subject.CommonName, icLine, line)
		}
		ark := issuingARK(ic, arks, icLine)
		if ark == nil {
			return nil, fmt.Errorf("sevsnp: seed cache: %s given without the ARK-%s that signed it", ic.Subject.CommonName, icLine)
		}
		usedARK[ark] = true
		api := "vcek"
		if role == roleASVK {
			api = "vlek"
		}
		var bundle bytes.Buffer
		for _, c := range []*x509.Certificate{ic, ark} {
			if err := pem.Encode(&bundle, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}); err != nil {
				return nil, fmt.Errorf("sevsnp: seed cache: %w", err)
			}
		}
		res := &kdsResource{api: api, line: icLine, endpoint: endpointCertChain}
		files = append(files, file{res.path(dir), bundle.Bytes()})
	}
	for _, ark := range arks {
		if !usedARK[ark] {
			return nil, fmt.Errorf("sevsnp: seed cache: %s given without an ASK or ASVK it signed", ark.Subject.CommonName)
		}
	}
	if len(files) == 0 {
		return nil, errors.New("sevsnp: seed cache: no VCEK, ASK or ASVK given")
	}
	var written []string
	for _, f := range files {
		if err := writeAtomic(f.path, f.data); err != nil {
			return written, fmt.Errorf("sevsnp: seed cache: %w", err)
		}
		written = append(written, f.path)
	}
	return written, nil
}

// seedVCEKPath checks that vcek belongs to the report in e and returns
// the path the cache keeps it at.
func seedVCEKPath(dir string, e *evidence, vcek *x509.Certificate, line string) (string, error) {
	fromIssuer := productFromIssuer(vcek, vcekKind)
	switch {
	case line == "" && fromIssuer == "":
		return "", fmt.Errorf("cannot tell the product line: the report does not name it and the VCEK's issuer %q does not either", vcek.Issuer.CommonName)
	case line == "":
		line = fromIssuer
	case fromIssuer != line:
		return "", fmt.Errorf("the report is from a %s chip but the VCEK is issued by %q", line, vcek.Issuer.CommonName)
	}
	chip := e.report.GetChipId()
	if allZero(chip) {
		return "", errors.New("the report's CHIP_ID is masked, and the cache is keyed by it")
	}
	exts, err := kds.VcekCertificateExtensions(vcek)
	if err != nil {
		return "", fmt.Errorf("VCEK extensions: %w", err)
	}
	if !bytes.Equal(exts.HWID, chip) {
		return "", fmt.Errorf("the VCEK is for chip %x (first 8 bytes), the report is from chip %x", exts.HWID[:8], chip[:8])
	}
	if got, want := uint64(exts.TCBVersion), e.report.GetReportedTcb(); got != want {
		return "", fmt.Errorf("the VCEK is for TCB %s, the report's REPORTED_TCB is %s", tcbString(line, got), tcbString(line, want))
	}
	res, err := parseKDSURL(vcekURL(line, chip, e.report.GetReportedTcb()))
	if err != nil {
		return "", err
	}
	return res.path(dir), nil
}

// olderCRL reports whether the CRL in b was issued before the cached one: a
// rollback that could hide a later revocation. Unparsable input is not
// "older" (validate has already checked b).
func olderCRL(b, cached []byte) bool {
	if cached == nil {
		return false
	}
	n, err1 := x509.ParseRevocationList(b)
	o, err2 := x509.ParseRevocationList(cached)
	if err1 != nil || err2 != nil {
		return false
	}
	if n.Number != nil && o.Number != nil {
		return n.Number.Cmp(o.Number) < 0
	}
	return n.ThisUpdate.Before(o.ThisUpdate)
}

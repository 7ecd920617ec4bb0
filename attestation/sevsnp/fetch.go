package sevsnp

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/greatjail/cvm/attestation"
)

// Fetch limits.
const (
	// defaultFetchTimeout bounds one HTTPFetcher request.
	defaultFetchTimeout = 10 * time.Second
	// maxFetchSize bounds a KDS response. VCEKs are about 1.3 KiB,
	// cert_chain bundles 4.5 KiB, CRLs a few KiB.
	maxFetchSize = 1 << 20
)

// HTTPFetcher fetches from AMD's KDS over HTTP(S): one GET per call, no
// retries (KDS rate-limits, so callers should put a Cache in front of it).
type HTTPFetcher struct {
	// Client is the HTTP client; nil means http.DefaultClient.
	Client *http.Client
	// Timeout bounds each request; zero means 10s.
	Timeout time.Duration
}

// Fetch GETs url and returns the body of a 200 response. A 404 wraps
// attestation.ErrMissing; a body over 1 MiB wraps attestation.ErrTooLarge.
func (f *HTTPFetcher) Fetch(ctx context.Context, url string) ([]byte, error) {
	timeout := f.Timeout
	if timeout <= 0 {
		timeout = defaultFetchTimeout
	}
	client := f.Client
	if client == nil {
		client = defaultClient
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("sevsnp: fetch %s: %w", url, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("sevsnp: fetch %s: %w", url, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil, fmt.Errorf("sevsnp: fetch %s: %s: %w", url, resp.Status, attestation.ErrMissing)
	case resp.StatusCode == http.StatusTooManyRequests:
		return nil, fmt.Errorf("sevsnp: fetch %s: %s (KDS rate limit; use a certificate cache)", url, resp.Status)
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("sevsnp: fetch %s: %s", url, resp.Status)
	case resp.ContentLength > maxFetchSize:
		return nil, fmt.Errorf("sevsnp: fetch %s: %d bytes, limit %d: %w", url, resp.ContentLength, maxFetchSize, attestation.ErrTooLarge)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxFetchSize+1))
	if err != nil {
		return nil, fmt.Errorf("sevsnp: fetch %s: %w", url, err)
	}
	if len(body) > maxFetchSize {
		return nil, fmt.Errorf("sevsnp: fetch %s: more than %d bytes: %w", url, maxFetchSize, attestation.ErrTooLarge)
	}
	return body, nil
}

// defaultClient follows redirects only to https URLs: integrity rests on
// AMD's signatures, but there is no reason to let a redirect downgrade the
// transport.
var defaultClient = &http.Client{
	CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if req.URL.Scheme != "https" {
			return fmt.Errorf("sevsnp: fetch: refusing redirect to non-https %s", req.URL.Redacted())
		}
		if len(via) >= 5 {
			return fmt.Errorf("sevsnp: fetch: too many redirects")
		}
		return nil
	},
}

package sevsnp

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/testdata"
)

// TestHTTPFetcher runs HTTPFetcher against a loopback server.
func TestHTTPFetcher(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/vcek", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			http.Error(w, "method", http.StatusMethodNotAllowed)
			return
		}
		w.Write(testdata.SNPMilanVCEK)
	})
	mux.HandleFunc("/missing", http.NotFound)
	mux.HandleFunc("/busy", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "slow down", http.StatusTooManyRequests) })
	mux.HandleFunc("/broken", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "oops", http.StatusInternalServerError) })
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		w.Write(make([]byte, maxFetchSize+1)) // large enough that Content-Length is not set
	})
	mux.HandleFunc("/big-declared", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "2000000")
		w.WriteHeader(http.StatusOK)
	})
	mux.HandleFunc("/exact", func(w http.ResponseWriter, r *http.Request) { w.Write(make([]byte, maxFetchSize)) })
	mux.HandleFunc("/hang", func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	srv := httptest.NewServer(mux)
	defer srv.Close()

	for _, tc := range []struct {
		name     string
		path     string
		timeout  time.Duration
		want     []byte
		sentinel error  // errors.Is target when failing
		errHas   string // substring when failing
	}{
		{name: "ok", path: "/vcek", want: testdata.SNPMilanVCEK},
		{name: "exactly the limit", path: "/exact", want: make([]byte, maxFetchSize)},
		{name: "not found", path: "/missing", sentinel: attestation.ErrMissing, errHas: "404"},
		{name: "rate limited", path: "/busy", errHas: "rate limit"},
		{name: "server error", path: "/broken", errHas: "500"},
		{name: "oversized", path: "/big", sentinel: attestation.ErrTooLarge},
		{name: "oversized declared", path: "/big-declared", sentinel: attestation.ErrTooLarge},
		{name: "timeout", path: "/hang", timeout: 50 * time.Millisecond, sentinel: context.DeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &HTTPFetcher{Client: srv.Client(), Timeout: tc.timeout}
			start := time.Now()
			got, err := f.Fetch(context.Background(), srv.URL+tc.path)
			if tc.want != nil {
				if err != nil {
					t.Fatalf("Fetch: %v", err)
				}
				if !slices.Equal(got, tc.want) {
					t.Errorf("Fetch returned %d bytes, want %d", len(got), len(tc.want))
				}
				return
			}
			if err == nil {
				t.Fatalf("Fetch returned %d bytes, want an error", len(got))
			}
			if tc.sentinel != nil && !errors.Is(err, tc.sentinel) {
				t.Errorf("Fetch = %v, want errors.Is %v", err, tc.sentinel)
			}
			if !strings.Contains(err.Error(), tc.errHas) {
				t.Errorf("Fetch = %v, want it to mention %q", err, tc.errHas)
			}
			if d := time.Since(start); tc.timeout > 0 && d > 5*time.Second {
				t.Errorf("timeout of %v took %v", tc.timeout, d)
			}
		})
	}

	t.Run("cancelled context", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := (&HTTPFetcher{Client: srv.Client()}).Fetch(ctx, srv.URL+"/vcek"); !errors.Is(err, context.Canceled) {
			t.Errorf("Fetch = %v, want context.Canceled", err)
		}
	})
	t.Run("bad url", func(t *testing.T) {
		if _, err := (&HTTPFetcher{}).Fetch(context.Background(), "::"); err == nil {
			t.Error("Fetch(::) succeeded")
		}
	})
}

// toServer sends every request to srv, whatever its URL says: a stand-in
// for AMD's KDS on loopback.
type toServer struct{ srv *httptest.Server }

func (t toServer) RoundTrip(r *http.Request) (*http.Response, error) {
	u, err := url.Parse(t.srv.URL)
	if err != nil {
		return nil, err
	}
	r = r.Clone(r.Context())
	r.URL.Scheme, r.URL.Host = u.Scheme, u.Host
	return t.srv.Client().Transport.RoundTrip(r)
}

// TestVerifyThroughCacheAndHTTP fetches the VCEK from a loopback KDS
// through a Cache, then verifies again with the KDS gone.
func TestVerifyThroughCacheAndHTTP(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.URL.String() != strings.TrimPrefix(milanVCEKURL, "https://kdsintf.amd.com") {
			http.NotFound(w, r)
			return
		}
		w.Write(testdata.SNPMilanVCEK)
	}))
	cache := &Cache{Dir: t.TempDir(), Upstream: &HTTPFetcher{Client: &http.Client{Transport: toServer{srv}}}, Now: at(jan2024)}
	v := mustNew(t, Options{Now: at(jan2024), Fetcher: cache})
	ev := &attestation.Evidence{TEE: attestation.TEESEVSNP, Report: append(slices.Clone(testdata.SNPMilanReport), platformInfoTable(t, milanB0EAX)...)}
	if _, err := v.Verify(context.Background(), ev); err != nil {
		t.Fatalf("Verify with KDS up: %v", err)
	}
	srv.Close()
	if _, err := v.Verify(context.Background(), ev); err != nil {
		t.Fatalf("Verify with KDS gone: %v", err)
	}
	if n := hits.Load(); n != 1 {
		t.Errorf("KDS hit %d times, want 1", n)
	}
}

package sevsnp

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	"github.com/google/go-sev-guest/verify/trust"
	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/testdata"
)

var (
	milanChipHex = "3ac3fe21e13fb0990eb28a802e3fb6a29483a6b0753590c951bdd3b8e53786184ca39e359669a2b76a1936776b564ea464cdce40c05f63c9b610c5068b006b5d"
	milanVCEKURL = "https://kdsintf.amd.com/vcek/v1/Milan/" + milanChipHex + "?blSPL=2&teeSPL=0&snpSPL=5&ucodeSPL=68"
	milanCRLURL  = "https://kdsintf.amd.com/vcek/v1/Milan/crl"
)

func TestMilanVCEKURL(t *testing.T) {
	r := testdata.SNPMilanReport
	got := vcekURL("Milan", r[offChipID:offChipID+64], binary.LittleEndian.Uint64(r[offReportedTCB:]))
	if got != milanVCEKURL {
		t.Errorf("vcekURL = %s, want %s", got, milanVCEKURL)
	}
	turin := vcekURL("Turin", testHWID[:], 0x48_00_00_00_04_03_02_01)
	if want := "https://kdsintf.amd.com/vcek/v1/Turin/a0a1a2a3a4a5a6a7?fmcSPL=1&blSPL=2&teeSPL=3&snpSPL=4&ucodeSPL=72"; turin != want {
		t.Errorf("vcekURL(Turin) = %s, want %s", turin, want)
	}
}

func TestParseKDSURL(t *testing.T) {
	hwid := strings.Repeat("ab", 64)
	for _, tc := range []struct {
		url  string
		path string // relative to the cache dir; empty: rejected
	}{
		{milanVCEKURL, "vcek/v1/Milan/" + milanChipHex + "/2-0-5-68.der"},
		{"https://kdsintf.amd.com/vcek/v1/Genoa/" + strings.ToUpper(hwid) + "?ucodeSPL=9&snpSPL=8&teeSPL=7&blSPL=6", "vcek/v1/Genoa/" + hwid + "/6-7-8-9.der"},
		{"https://kdsintf.amd.com/vcek/v1/Turin/a0a1a2a3a4a5a6a7?fmcSPL=1&blSPL=2&teeSPL=3&snpSPL=4&ucodeSPL=72", "vcek/v1/Turin/a0a1a2a3a4a5a6a7/1-2-3-4-72.der"},
		{"https://kdsintf.amd.com/vcek/v1/Milan/cert_chain", "vcek/v1/Milan/cert_chain.pem"},
		{"https://kdsintf.amd.com/vlek/v1/Turin/cert_chain", "vlek/v1/Turin/cert_chain.pem"},
		{milanCRLURL, "vcek/v1/Milan/crl.der"},
		{"https://kdsintf.amd.com/vlek/v1/Genoa/crl", "vlek/v1/Genoa/crl.der"},
		// Rejected.
		{"http://kdsintf.amd.com/vcek/v1/Milan/crl", ""},
		{"https://kdsintf.amd.com.evil.example/vcek/v1/Milan/crl", ""},
		{"https://kdsintf.amd.com:8443/vcek/v1/Milan/crl", ""},
		{"https://user@kdsintf.amd.com/vcek/v1/Milan/crl", ""},
		{"https://kdsintf.amd.com/vcek/v1/Milan/crl#frag", ""},
		{"https://kdsintf.amd.com/vcek/v1/Milan/crl?x=1", ""},
		{"https://kdsintf.amd.com/vcek/v1/Milan/crl?", ""},
		{"https://kdsintf.amd.com/vcek/v1/../../../etc/passwd", ""},
		{"https://kdsintf.amd.com/vcek/v1/Milan/..%2F..%2Fpasswd", ""},
		{"https://kdsintf.amd.com/vcek/v1/%2e%2e/crl", ""},
		{"https://kdsintf.amd.com/vcek/v1/Milan/x/crl", ""},
		{"https://kdsintf.amd.com/vcek/v2/Milan/crl", ""},
		{"https://kdsintf.amd.com/vcek/v1/Naples/crl", ""},
		{"https://kdsintf.amd.com/sev/v1/Milan/crl", ""},
		{"https://kdsintf.amd.com/vlek/v1/Milan/" + hwid + "?blSPL=1&teeSPL=1&snpSPL=1&ucodeSPL=1", ""},
		{"https://kdsintf.amd.com/vcek/v1/Milan/" + hwid[:126] + "zz?blSPL=1&teeSPL=1&snpSPL=1&ucodeSPL=1", ""},
		{"https://kdsintf.amd.com/vcek/v1/Milan/" + hwid[:16] + "?blSPL=1&teeSPL=1&snpSPL=1&ucodeSPL=1", ""},
		{"https://kdsintf.amd.com/vcek/v1/Milan/" + hwid + "?blSPL=1&teeSPL=1&snpSPL=1", ""},
		{"https://kdsintf.amd.com/vcek/v1/Milan/" + hwid + "?blSPL=1&teeSPL=1&snpSPL=1&ucodeSPL=1&fmcSPL=1", ""},
		{"https://kdsintf.amd.com/vcek/v1/Milan/" + hwid + "?blSPL=1&blSPL=2&teeSPL=1&snpSPL=1", ""},
		{"https://kdsintf.amd.com/vcek/v1/Milan/" + hwid + "?blSPL=256&teeSPL=1&snpSPL=1&ucodeSPL=1", ""},
		{"https://kdsintf.amd.com/vcek/v1/Milan/" + hwid + "?blSPL=-1&teeSPL=1&snpSPL=1&ucodeSPL=1", ""},
		{"https://kdsintf.amd.com/vcek/v1/Milan/" + hwid + "?blSPL=%2F&teeSPL=1&snpSPL=1&ucodeSPL=1", ""},
		{"https://kdsintf.amd.com/vcek/v1/Turin/" + hwid + "?fmcSPL=1&blSPL=2&teeSPL=3&snpSPL=4&ucodeSPL=72", ""},
		{"https://kdsintf.amd.com/vcek/v1/Turin/a0a1a2a3a4a5a6a7?blSPL=2&teeSPL=3&snpSPL=4&ucodeSPL=72", ""},
		{"::not a url", ""},
	} {
		t.Run(tc.url, func(t *testing.T) {
			r, err := parseKDSURL(tc.url)
			if tc.path == "" {
				if err == nil {
					t.Fatalf("parseKDSURL accepted it: %+v", r)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseKDSURL: %v", err)
			}
			if got, want := r.path("/cache"), filepath.Join("/cache", tc.path); got != want {
				t.Errorf("path = %s, want %s", got, want)
			}
		})
	}
}

func TestCache(t *testing.T) {
	f := newFake(t, fakeOpts{hwid: testHWID, tcb: milanTCB})
	now := jan2024
	fresh := f.crl(t, now.Add(-time.Hour), now.Add(24*time.Hour))
	newer := f.crl(t, now.Add(-time.Minute), now.Add(48*time.Hour))
	ctx := context.Background()

	t.Run("vcek is fetched once and kept", func(t *testing.T) {
		up := &mapFetcher{body: map[string][]byte{milanVCEKURL: testdata.SNPMilanVCEK}}
		c := &Cache{Dir: t.TempDir(), Upstream: up, Now: at(now)}
		for range 3 {
			got, err := c.Fetch(ctx, milanVCEKURL)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, testdata.SNPMilanVCEK) {
				t.Fatal("wrong VCEK")
			}
		}
		if n := up.count(milanVCEKURL); n != 1 {
			t.Errorf("upstream asked %d times, want 1", n)
		}
		// Offline now: still served.
		off := &Cache{Dir: c.Dir}
		if _, err := off.Fetch(ctx, milanVCEKURL); err != nil {
			t.Errorf("offline Fetch of cached VCEK: %v", err)
		}
		if _, err := os.Stat(filepath.Join(c.Dir, "vcek/v1/Milan", milanChipHex, "2-0-5-68.der")); err != nil {
			t.Errorf("VCEK not at the documented path: %v", err)
		}
		assertNoTempFiles(t, c.Dir)
	})

	t.Run("missing offline", func(t *testing.T) {
		_, err := (&Cache{Dir: t.TempDir()}).Fetch(ctx, milanVCEKURL)
		if !errors.Is(err, attestation.ErrMissing) {
			t.Errorf("Fetch = %v, want ErrMissing", err)
		}
	})

	t.Run("missing, upstream fails", func(t *testing.T) {
		up := &mapFetcher{err: errors.New("kds down")}
		_, err := (&Cache{Dir: t.TempDir(), Upstream: up}).Fetch(ctx, milanVCEKURL)
		if !errors.Is(err, attestation.ErrMissing) || !strings.Contains(err.Error(), "kds down") {
			t.Errorf("Fetch = %v, want ErrMissing mentioning the upstream error", err)
		}
	})

	t.Run("upstream garbage is not stored", func(t *testing.T) {
		dir := t.TempDir()
		up := &mapFetcher{body: map[string][]byte{milanVCEKURL: []byte("<html>rate limited</html>"), milanCRLURL: []byte("junk")}}
		c := &Cache{Dir: dir, Upstream: up, Now: at(now)}
		for _, u := range []string{milanVCEKURL, milanCRLURL} {
			if _, err := c.Fetch(ctx, u); !errors.Is(err, attestation.ErrMissing) {
				t.Errorf("Fetch(%s) = %v, want ErrMissing", u, err)
			}
		}
		if entries, _ := os.ReadDir(filepath.Join(dir, "vcek/v1/Milan")); len(entries) != 0 {
			t.Errorf("garbage was stored: %v", entries)
		}
	})

	t.Run("vcek of another chip or tcb is not stored or served", func(t *testing.T) {
		otherTCB := milanTCB
		otherTCB.SnpSpl++
		for _, tc := range []struct {
			name string
			vcek []byte
		}{
			{"another chip", f.signer.Vcek.Raw},
			{"another tcb", newFake(t, fakeOpts{hwid: [64]byte(testdata.SNPMilanReport[offChipID : offChipID+64]), tcb: otherTCB}).signer.Vcek.Raw},
		} {
			t.Run(tc.name, func(t *testing.T) {
				dir := t.TempDir()
				up := &mapFetcher{body: map[string][]byte{milanVCEKURL: tc.vcek}}
				c := &Cache{Dir: dir, Upstream: up, Now: at(now)}
				if got, err := c.Fetch(ctx, milanVCEKURL); !errors.Is(err, attestation.ErrMissing) {
					t.Errorf("Fetch = %d bytes, %v; want ErrMissing", len(got), err)
				}
				p := filepath.Join(dir, "vcek/v1/Milan", milanChipHex, "2-0-5-68.der")
				if _, err := os.Stat(p); err == nil {
					t.Error("the wrong VCEK was stored under this chip's path")
				}
				// Planted there anyway (an older cache, another writer):
				// treated as damaged, so the right one is fetched.
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, tc.vcek, 0o644); err != nil {
					t.Fatal(err)
				}
				up.mu.Lock()
				up.body[milanVCEKURL] = testdata.SNPMilanVCEK
				up.mu.Unlock()
				if got, err := c.Fetch(ctx, milanVCEKURL); err != nil || !slices.Equal(got, testdata.SNPMilanVCEK) {
					t.Errorf("Fetch over a planted VCEK = %d bytes, %v; want the right VCEK", len(got), err)
				}
			})
		}
	})

	t.Run("damaged file is refetched", func(t *testing.T) {
		dir := t.TempDir()
		p := filepath.Join(dir, "vcek/v1/Milan", milanChipHex, "2-0-5-68.der")
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("truncated"), 0o644); err != nil {
			t.Fatal(err)
		}
		up := &mapFetcher{body: map[string][]byte{milanVCEKURL: testdata.SNPMilanVCEK}}
		got, err := (&Cache{Dir: dir, Upstream: up}).Fetch(ctx, milanVCEKURL)
		if err != nil || !slices.Equal(got, testdata.SNPMilanVCEK) {
			t.Fatalf("Fetch = %d bytes, %v; want the VCEK", len(got), err)
		}
		if b, _ := os.ReadFile(p); !slices.Equal(b, testdata.SNPMilanVCEK) {
			t.Error("damaged file not replaced")
		}
	})

	t.Run("crl freshness", func(t *testing.T) {
		dir := t.TempDir()
		up := &mapFetcher{body: map[string][]byte{milanCRLURL: fresh}}
		clock := now
		c := &Cache{Dir: dir, Upstream: up, Now: func() time.Time { return clock }}
		fetch := func(want []byte, wantCalls int) {
			t.Helper()
			got, err := c.Fetch(ctx, milanCRLURL)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, want) {
				t.Error("unexpected CRL returned")
			}
			if n := up.count(milanCRLURL); n != wantCalls {
				t.Errorf("upstream asked %d times, want %d", n, wantCalls)
			}
		}
		fetch(fresh, 1)
		fetch(fresh, 1) // fresh: from disk
		clock = now.Add(25 * time.Hour)
		up.mu.Lock()
		up.body[milanCRLURL] = newer
		up.mu.Unlock()
		fetch(newer, 2) // stale: refetched and replaced
		fetch(newer, 2)
		clock = now.Add(49 * time.Hour)
		up.mu.Lock()
		up.err = errors.New("kds down")
		up.mu.Unlock()
		fetch(newer, 3) // stale, upstream down: stale copy
		c.Upstream = nil
		fetch(newer, 3) // stale, offline: stale copy
	})

	t.Run("crl without clock always asks upstream", func(t *testing.T) {
		up := &mapFetcher{body: map[string][]byte{milanCRLURL: fresh}}
		c := &Cache{Dir: t.TempDir(), Upstream: up}
		for range 2 {
			if _, err := c.Fetch(ctx, milanCRLURL); err != nil {
				t.Fatal(err)
			}
		}
		if n := up.count(milanCRLURL); n != 2 {
			t.Errorf("upstream asked %d times, want 2", n)
		}
	})

	t.Run("cert chain", func(t *testing.T) {
		u := kds.ProductCertChainURL(abi.VcekReportSigner, "Milan")
		up := &mapFetcher{body: map[string][]byte{u: trust.AskArkMilanVcekBytes}}
		c := &Cache{Dir: t.TempDir(), Upstream: up}
		for range 2 {
			if _, err := c.Fetch(ctx, u); err != nil {
				t.Fatal(err)
			}
		}
		if n := up.count(u); n != 1 {
			t.Errorf("upstream asked %d times, want 1", n)
		}
	})

	t.Run("rejects other urls", func(t *testing.T) {
		up := &mapFetcher{}
		c := &Cache{Dir: t.TempDir(), Upstream: up}
		for _, u := range []string{"https://example.com/x", "https://kdsintf.amd.com/vcek/v1/../../x"} {
			if _, err := c.Fetch(ctx, u); err == nil {
				t.Errorf("Fetch(%s) succeeded", u)
			}
			if up.count(u) != 0 {
				t.Errorf("Fetch(%s) reached upstream", u)
			}
		}
		if _, err := (&Cache{}).Fetch(ctx, milanVCEKURL); err == nil {
			t.Error("Fetch without Dir succeeded")
		}
	})

	t.Run("concurrent misses reach upstream once", func(t *testing.T) {
		up := &mapFetcher{body: map[string][]byte{milanVCEKURL: testdata.SNPMilanVCEK}}
		c := &Cache{Dir: t.TempDir(), Upstream: up}
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				if _, err := c.Fetch(ctx, milanVCEKURL); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if n := up.count(milanVCEKURL); n != 1 {
			t.Errorf("upstream asked %d times, want 1", n)
		}
	})
}

func assertNoTempFiles(t *testing.T, dir string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.Contains(d.Name(), ".tmp-") {
			t.Errorf("temporary file left behind: %s", p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestSeedCacheThenVerifyOffline seeds a cache by hand and verifies the
// real report through it with no upstream.
func TestSeedCacheThenVerifyOffline(t *testing.T) {
	dir := t.TempDir()
	report := append(slices.Clone(testdata.SNPMilanReport), platformInfoTable(t, milanB0EAX)...)
	paths, err := SeedCache(dir, report, testdata.SNPMilanVCEK, testdata.SNPMilanASKARK)
	if err != nil {
		t.Fatalf("SeedCache: %v", err)
	}
	want := []string{
		filepath.Join(dir, "vcek/v1/Milan", milanChipHex, "2-0-5-68.der"),
		filepath.Join(dir, "vcek/v1/Milan/cert_chain.pem"),
	}
	if diff := cmp.Diff(want, paths); diff != "" {
		t.Errorf("paths (-want +got):\n%s", diff)
	}
	if b, err := os.ReadFile(want[1]); err != nil || !slices.Equal(b, trust.AskArkMilanVcekBytes) {
		t.Errorf("cert_chain.pem differs from AMD's bundle (err %v)", err)
	}
	assertNoTempFiles(t, dir)

	v := mustNew(t, Options{Now: at(jan2024), Fetcher: &Cache{Dir: dir}})
	c, err := v.Verify(context.Background(), &attestation.Evidence{TEE: attestation.TEESEVSNP, Report: report})
	if err != nil {
		t.Fatalf("Verify through seeded cache: %v", err)
	}
	if c.Product != "Milan" {
		t.Errorf("product %q", c.Product)
	}
}

func TestSeedCache(t *testing.T) {
	f := newFake(t, fakeOpts{hwid: testHWID, tcb: milanTCB})
	milanASK, milanARK, err := kds.ParseProductCertChain(trust.AskArkMilanVcekBytes)
	if err != nil {
		t.Fatal(err)
	}
	masked := slices.Clone(testdata.SNPMilanReport)
	clear(masked[offChipID : offChipID+64])
	otherTCB := slices.Clone(testdata.SNPMilanReport)
	otherTCB[offReportedTCB+6]++ // SNP SPL
	genoaV3 := slices.Clone(testdata.SNPMilanReport)
	setV3(0x19, 0x11, 0x01)(genoaV3)
	for _, tc := range []struct {
		name      string
		report    []byte
		certs     [][]byte
		wantFiles []string // relative; nil: error
		errSubstr string
	}{
		{name: "vcek, product from issuer", report: testdata.SNPMilanReport, certs: [][]byte{testdata.SNPMilanVCEK},
			wantFiles: []string{"vcek/v1/Milan/" + milanChipHex + "/2-0-5-68.der"}},
		{name: "der ask and ark only", report: testdata.SNPMilanReport, certs: [][]byte{milanARK, milanASK},
			wantFiles: []string{"vcek/v1/Milan/cert_chain.pem"}},
		{name: "vlek bundle", report: testdata.SNPMilanReport, certs: [][]byte{trust.AskArkMilanVlekBytes},
			wantFiles: []string{"vlek/v1/Milan/cert_chain.pem"}},
		{name: "vcek for another chip", report: testdata.SNPMilanReport, certs: [][]byte{f.signer.Vcek.Raw}, errSubstr: "chip"},
		{name: "vcek for another tcb", report: otherTCB, certs: [][]byte{testdata.SNPMilanVCEK}, errSubstr: "TCB"},
		{name: "masked chip id", report: masked, certs: [][]byte{testdata.SNPMilanVCEK}, errSubstr: "masked"},
		{name: "vcek of another product line", report: genoaV3, certs: [][]byte{testdata.SNPMilanVCEK}, errSubstr: "Genoa chip"},
		{name: "ask of another product line", report: genoaV3, certs: [][]byte{trust.AskArkMilanVcekBytes}, errSubstr: "Genoa chip"},
		{name: "vlek", report: testdata.SNPMilanReport, certs: [][]byte{f.signer.Vlek.Raw}, errSubstr: "VLEK"},
		{name: "ask without ark", report: testdata.SNPMilanReport, certs: [][]byte{milanASK}, errSubstr: "without the ARK"},
		{name: "ark without ask", report: testdata.SNPMilanReport, certs: [][]byte{testdata.SNPMilanVCEK, milanARK}, errSubstr: "without an ASK"},
		{name: "nothing", report: testdata.SNPMilanReport, errSubstr: "no VCEK"},
		{name: "truncated report", report: testdata.SNPMilanReport[:100], certs: [][]byte{testdata.SNPMilanVCEK}, errSubstr: "truncated"},
		{name: "garbage certificate", report: testdata.SNPMilanReport, certs: [][]byte{[]byte("x")}, errSubstr: "argument 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			paths, err := SeedCache(dir, tc.report, tc.certs...)
			if tc.errSubstr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errSubstr) {
					t.Fatalf("SeedCache = %v, %v; want error containing %q", paths, err, tc.errSubstr)
				}
				if entries, _ := os.ReadDir(dir); len(entries) != 0 {
					t.Errorf("a refused seed wrote %v", entries)
				}
				return
			}
			if err != nil {
				t.Fatalf("SeedCache: %v", err)
			}
			var want []string
			for _, p := range tc.wantFiles {
				want = append(want, filepath.Join(dir, p))
			}
			if diff := cmp.Diff(want, paths); diff != "" {
				t.Errorf("paths (-want +got):\n%s", diff)
			}
			for _, p := range paths {
				if _, err := os.Stat(p); err != nil {
					t.Error(err)
				}
			}
		})
	}
	if _, err := SeedCache("", testdata.SNPMilanReport, testdata.SNPMilanVCEK); err == nil {
		t.Error("SeedCache without a directory succeeded")
	}
}

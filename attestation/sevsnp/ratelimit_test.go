package sevsnp

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"sync/atomic"
	"testing"
	"time"

	"github.com/greatjail/cvm/attestation"
)

// TestCacheUpstreamInterval: a flood of misses (reports naming unknown
// chips) reaches the upstream at most once per interval; the rest fail at
// once with ErrMissing instead of queueing behind KDS.
func TestCacheUpstreamInterval(t *testing.T) {
	var calls atomic.Int32
	up := fetchFunc(func(context.Context, string) ([]byte, error) {
		calls.Add(1)
		return nil, errors.New("404")
	})
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := &Cache{Dir: t.TempDir(), Upstream: up, Now: func() time.Time { return now }, UpstreamInterval: 10 * time.Second}
	url := func(i int) string {
		hw := make([]byte, 64)
		hw[0] = byte(i)
		return vcekURL("Milan", hw, 0x4405000000000002)
	}
	for i := range 20 {
		if _, err := c.Fetch(context.Background(), url(i)); !errors.Is(err, attestation.ErrMissing) {
			t.Fatalf("Fetch %d = %v, want ErrMissing", i, err)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("upstream asked %d times in one interval, want 1", n)
	}
	now = now.Add(11 * time.Second)
	c.Fetch(context.Background(), url(99))
	if n := calls.Load(); n != 2 {
		t.Errorf("upstream asked %d times after the interval, want 2", n)
	}
}

// TestCacheWaitRespectsContext: a caller waiting for the upstream slot
// gives up when its context ends.
func TestCacheWaitRespectsContext(t *testing.T) {
	block := make(chan struct{})
	up := fetchFunc(func(ctx context.Context, _ string) ([]byte, error) {
		<-block
		return nil, errors.New("late")
	})
	c := &Cache{Dir: t.TempDir(), Upstream: up}
	hw := make([]byte, 64)
	go c.Fetch(context.Background(), vcekURL("Milan", hw, 0x4405000000000002))
	time.Sleep(50 * time.Millisecond) // let the first fetch take the slot
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	hw[0] = 1
	_, err := c.Fetch(ctx, vcekURL("Milan", hw, 0x4405000000000002))
	close(block)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Fetch while the slot is held = %v, want DeadlineExceeded", err)
	}
}

// TestCacheRefusesCRLRollback: a stale cached CRL is not replaced by an
// older one from upstream; the newer cached copy is served.
func TestCacheRefusesCRLRollback(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ARK-Milan"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCRLSign | x509.KeyUsageCertSign, NotBefore: time.Unix(0, 0), NotAfter: time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)}
	der, _ := x509.CreateCertificate(rand.Reader, ca, ca, &key.PublicKey, key)
	caCert, _ := x509.ParseCertificate(der)
	crl := func(n int64, this time.Time) []byte {
		b, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(n), ThisUpdate: this, NextUpdate: this.Add(24 * time.Hour)}, caCert, key)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	newer, older := crl(5, t0), crl(4, t0.Add(-24*time.Hour))
	served := newer
	up := fetchFunc(func(context.Context, string) ([]byte, error) { return served, nil })
	now := t0
	c := &Cache{Dir: t.TempDir(), Upstream: up, Now: func() time.Time { return now }}
	url := "https://kdsintf.amd.com/vcek/v1/Milan/crl"
	if got, err := c.Fetch(context.Background(), url); err != nil || !bytes.Equal(got, newer) {
		t.Fatalf("first Fetch = %v; want the newer CRL", err)
	}
	now = t0.Add(48 * time.Hour) // cached copy now stale
	served = older
	got, err := c.Fetch(context.Background(), url)
	if err != nil || !bytes.Equal(got, newer) {
		t.Errorf("Fetch after upstream served an older CRL = %v; want the newer cached CRL kept", err)
	}
}

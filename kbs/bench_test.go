package kbs_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/attestation/sim"
	"github.com/greatjail/cvm/kbs/client"
)

// BenchmarkRelease measures whole guest fetches (challenge, attest,
// release, HPKE open) over gRPC with TLS on loopback, at 1, 16 and 64
// concurrent clients, and reports p50/p99 latency. Throughput is 1e9/ns-op.
func BenchmarkRelease(b *testing.B) {
	for _, clients := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			br := newBroker(b, brokerOpts{})
			br.setup(b, []byte("benchmark secret"))
			c := &client.Client{Conn: br.conn, Provider: simProvider{measurement: goodMeasurement}, Rand: rand.Reader}
			ctx := context.Background()
			var mu sync.Mutex
			var lat []time.Duration
			work := make(chan struct{})
			var wg sync.WaitGroup
			errc := make(chan error, clients)
			b.ResetTimer()
			for range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range work {
						start := time.Now()
						if _, err := c.Fetch(ctx, "repo/key/disk"); err != nil {
							errc <- err
							return
						}
						d := time.Since(start)
						mu.Lock()
						lat = append(lat, d)
						mu.Unlock()
					}
				}()
			}
			for i := 0; i < b.N; i++ {
				work <- struct{}{}
			}
			close(work)
			wg.Wait()
			b.StopTimer()
			select {
			case err := <-errc:
				b.Fatal(err)
			default:
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}

// BenchmarkReportVerification is the bound: verifying the simulated
// report alone, on every core, as the broker's verifier does it.
func BenchmarkReportVerification(b *testing.B) {
	a, err := authority()
	if err != nil {
		b.Fatal(err)
	}
	v, err := sim.NewVerifier(a.RootPEM(), time.Now)
	if err != nil {
		b.Fatal(err)
	}
	var req sim.Request
	copy(req.Measurement[:], goodMeasurement)
	r, err := a.Report(req)
	if err != nil {
		b.Fatal(err)
	}
	ev := &attestation.Evidence{TEE: attestation.TEESim, Report: r, Certificates: [][]byte{a.VCEK()}}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := v.Verify(context.Background(), ev); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

package launcher

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/greatjail/cvm/launcher/engine"
)

// BenchmarkLaunch times whole launches (simulated TEE) on every engine this
// machine has, from the start of Run to the workload's first output, split
// into build (initramfs and measurement), boot (engine start to a ready
// agent), attest and unlock (as the agent timed them). internal/tools/benchratio
// prints the split as a table.
func BenchmarkLaunch(b *testing.B) {
	e := e2eSetup(b)
	engines := []string{"qemu"}
	if engine.ProbeKVM() == nil {
		engines = append(engines, "builtin")
	}
	for _, name := range engines {
		b.Run("engine="+name, func(b *testing.B) {
			s := e.spec(b)
			s.Engine, s.Quiet = name, true
			e.register(b, s)
			var sum Result
			for i := 0; i < b.N; i++ {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
				res, err := Run(ctx, s, IO{Stdout: io.Discard, Stderr: io.Discard})
				cancel()
				if err != nil {
					b.Fatal(err)
				}
				sum.Build += res.Build
				sum.Boot += res.Boot
				sum.Attest += res.Attest
				sum.Unlock += res.Unlock
				sum.FirstOutput += res.FirstOutput
			}
			ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) / float64(b.N) }
			b.ReportMetric(ms(sum.Build), "build-ms")
			b.ReportMetric(ms(sum.Boot), "boot-ms")
			b.ReportMetric(ms(sum.Attest), "attest-ms")
			b.ReportMetric(ms(sum.Unlock), "unlock-ms")
			b.ReportMetric(ms(sum.FirstOutput), "first-output-ms")
		})
	}
}

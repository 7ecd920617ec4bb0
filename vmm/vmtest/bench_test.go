package vmtest

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/greatjail/cvm/internal/testhost"
)

// benchRounds is how many boots each VMM gets, alternating.
const benchRounds = 5

// benchLimit bounds the benchmark's test host: ten nested boots, each a
// minute or more of wall time under TCG on a loaded machine (a run of
// this stop was cut at the vm tier's 12-minute limit in its fourth round).
const benchLimit = 40 * time.Minute

// BenchmarkBoot times the builtin VMM next to QEMU -M microvm, both on
// KVM (the test host's, or this machine's when it is hardware-backed),
// booting the same Debian 13 kernel and test initramfs (whose /init
// reports and powers off at once) with the same memory and vCPUs. It
// reports, for each VMM, the median seconds from process start to the
// guest's /init and to the process's exit and the VMM's resident memory
// excluding guest RAM at /init, and the cvm/qemu ratios. Under the TCG
// test host the absolute times are emulation times; the ratios are the
// result.
func BenchmarkBoot(b *testing.B) {
	e := setup(b)
	k := e.kernels[0]
	ird, err := testhost.GuestInitramfs(e.guestInit, k)
	if err != nil {
		b.Fatal(err)
	}
	g := testhost.GuestConfig{Name: k.Release, VCPUs: 2, Memory: "256M"}
	var timings []*testhost.Timing
	for b.Loop() {
		timings = timings[:0]
		if e.direct {
			g.Kernel, g.Initrd = k.Image, filepath.Join(e.tmp, "initrd")
			if err := os.WriteFile(g.Initrd, ird, 0o644); err != nil {
				b.Fatal(err)
			}
			qemu, err := testhost.QEMU()
			if err != nil {
				b.Skipf("benchmark: %v", err)
			}
			for range benchRounds {
				for _, run := range []struct {
					name string
					argv []string
				}{{"cvm", testhost.CVMBootArgs(e.cvm, g)}, {"qemu", testhost.QEMUBootArgs(qemu, g)}} {
					tm, err := testhost.TimeBoot(context.Background(), run.name, run.argv, nil)
					if err != nil {
						b.Fatal(err)
					}
					timings = append(timings, tm)
				}
			}
			continue
		}
		kb, err := os.ReadFile(k.Image)
		if err != nil {
			b.Fatal(err)
		}
		files, err := testhost.QEMUFiles(e.qemu)
		if err != nil {
			b.Fatal(err)
		}
		cvmBin, err := os.ReadFile(e.cvm)
		if err != nil {
			b.Fatal(err)
		}
		g.Kernel, g.Initrd = "/guests/vmlinuz", "/guests/initrd"
		files[g.Kernel], files[g.Initrd], files["/bin/cvm"] = kb, ird, cvmBin
		hostInit, err := os.ReadFile(e.build(b, "./internal/testhost/hostinit"))
		if err != nil {
			b.Fatal(err)
		}
		cfg := testhost.HostConfig{VMM: "/bin/cvm", Bench: []testhost.GuestConfig{g},
			QEMU: "/usr/bin/qemu-system-x86_64", Rounds: benchRounds}
		hird, err := testhost.HostInitramfs(hostInit, k, cfg, files)
		if err != nil {
			b.Fatal(err)
		}
		p := filepath.Join(e.tmp, "host-initrd")
		if err := os.WriteFile(p, hird, 0o644); err != nil {
			b.Fatal(err)
		}
		log := testhost.NewConsole(b, *logPath)
		ctx, cancel := context.WithTimeout(context.Background(), benchLimit)
		out, err := testhost.BootHost(ctx, testhost.BootOptions{QEMU: e.qemu, Kernel: k.Image, Initrd: p, Memory: "2G", Log: log, Unfreeze: true})
		cancel()
		if err != nil {
			b.Logf("test host console (last lines):\n%s", log.Tail(100))
			b.Fatal(err)
		}
		timings = out.Timings
	}
	by := map[string][]*testhost.Timing{}
	for _, t := range timings {
		by[t.VMM] = append(by[t.VMM], t)
		b.Logf("%s: /init %.2fs, exit %.2fs, RSS anon %d KiB file %d KiB shmem (guest RAM) %d KiB",
			t.VMM, t.InitSeconds, t.ExitSeconds, t.RSSAnonKiB, t.RSSFileKiB, t.RSSShmemKiB)
	}
	med := func(vmm string, f func(*testhost.Timing) float64) float64 {
		var v []float64
		for _, t := range by[vmm] {
			v = append(v, f(t))
		}
		if len(v) == 0 {
			b.Fatalf("no timing for %s", vmm)
		}
		sort.Float64s(v)
		return v[len(v)/2]
	}
	init := func(t *testhost.Timing) float64 { return t.InitSeconds }
	exit := func(t *testhost.Timing) float64 { return t.ExitSeconds }
	own := func(t *testhost.Timing) float64 { return float64(t.OwnKiB()) }
	for _, vmm := range []string{"cvm", "qemu"} {
		b.ReportMetric(med(vmm, init), vmm+"-init-s")
		b.ReportMetric(med(vmm, exit), vmm+"-exit-s")
		b.ReportMetric(med(vmm, own), vmm+"-rss-KiB")
	}
	b.ReportMetric(med("cvm", init)/med("qemu", init), "init-ratio")
	b.ReportMetric(med("cvm", exit)/med("qemu", exit), "exit-ratio")
	b.ReportMetric(med("cvm", own)/med("qemu", own), "rss-ratio")
}

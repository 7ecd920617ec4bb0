package vmtest

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/greatjail/cvm/internal/testhost"
)

var logPath = flag.String("vmtest.log", "", "also write the test host's console to this `file`")

// limit bounds the whole tier: QEMU TCG is slow and the machine may be
// shared, so it is generous; nothing asserts on time.
const limit = 12 * time.Minute

// env is what every test of the tier needs: the inputs, and the
// binaries built from this tree.
type env struct {
	root      string
	kernels   []testhost.Kernel
	direct    bool   // /dev/kvm is hardware-backed: no test host
	qemu      string // qemu-system-x86_64, when !direct
	tmp       string
	cvm       string // the cvm binary
	guestInit []byte // the test guest's /init
}

// setup finds the inputs and builds the binaries, or skips naming what is
// missing.
func setup(tb testing.TB) *env {
	if testing.Short() {
		tb.Skip("tier vm: -short")
	}
	root, err := testhost.RepoRoot()
	if err != nil {
		tb.Fatal(err)
	}
	e := &env{root: root, tmp: tb.TempDir()}
	for _, r := range testhost.Releases {
		k, err := testhost.FindKernel(root, r)
		if err != nil {
			tb.Skipf("tier vm: %v", err)
		}
		e.kernels = append(e.kernels, k)
	}
	e.direct = testhost.HardwareKVM()
	if !e.direct {
		if e.qemu, err = testhost.QEMU(); err != nil {
			tb.Skipf("tier vm: no hardware-backed /dev/kvm, and %v", err)
		}
	}
	e.cvm = e.build(tb, "./cmd/cvm")
	if e.guestInit, err = os.ReadFile(e.build(tb, "./internal/testhost/guestinit")); err != nil {
		tb.Fatal(err)
	}
	return e
}

// build builds a main package into the scratch directory.
func (e *env) build(tb testing.TB, pkg string) string {
	out := filepath.Join(e.tmp, filepath.Base(pkg))
	if err := testhost.BuildGo(e.root, pkg, out); err != nil {
		tb.Fatal(err)
	}
	return out
}

// TestGuests boots each Debian cloud kernel with the builtin VMM and
// checks, one subtest per check, what its test initramfs reports. In the
// test host it also runs the kvm tier of vmm/kvm and vmm.
func TestGuests(t *testing.T) {
	e := setup(t)
	root, kernels, direct, qemu, tmp, cvm, initBin := e.root, e.kernels, e.direct, e.qemu, e.tmp, e.cvm, e.guestInit
	bin := func(pkg string) string { return e.build(t, pkg) }
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()

	var guests []testhost.GuestConfig
	files := map[string][]byte{}
	for _, k := range kernels {
		ird, err := testhost.GuestInitramfs(initBin, k)
		if err != nil {
			t.Fatal(err)
		}
		g := testhost.GuestConfig{Name: k.Release, VCPUs: 2, Memory: "256M"}
		if direct {
			g.Kernel, g.Initrd = k.Image, filepath.Join(tmp, "initrd-"+k.Release)
			if err := os.WriteFile(g.Initrd, ird, 0o644); err != nil {
				t.Fatal(err)
			}
		} else {
			kb, err := os.ReadFile(k.Image)
			if err != nil {
				t.Fatal(err)
			}
			g.Kernel, g.Initrd = "/guests/"+k.Release+"/vmlinuz", "/guests/"+k.Release+"/initrd"
			files[g.Kernel], files[g.Initrd] = kb, ird
		}
		guests = append(guests, g)
	}

	var reps []*testhost.Report
	if direct {
		t.Log("tier vm: /dev/kvm is hardware-backed: running the guests directly")
		for i, g := range guests {
			dir := filepath.Join(tmp, fmt.Sprint("guest", i))
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			var console strings.Builder
			r, err := testhost.Check(ctx, testhost.CheckOptions{VMM: cvm, Guest: g, Dir: dir, Console: &console})
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Failed()) > 0 {
				t.Logf("%s console:\n%s", g.Name, testhost.Tail(console.String(), 200))
			}
			reps = append(reps, r)
		}
	} else {
		t.Log("tier vm: no hardware-backed /dev/kvm: running the guests in the QEMU TCG test host")
		cvmBin, err := os.ReadFile(cvm)
		if err != nil {
			t.Fatal(err)
		}
		files["/bin/cvm"] = cvmBin
		// The kvm tier of the VMM's own packages, which needs a /dev/kvm
		// that runs guests: here it gets one.
		var tests []string
		for _, pkg := range []string{"./vmm/kvm", "./vmm"} {
			out := filepath.Join(tmp, filepath.Base(pkg)+".test")
			if err := testhost.BuildTest(root, pkg, out); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			p := "/tests/" + filepath.Base(out)
			files[p] = b
			tests = append(tests, p)
		}
		hostInit, err := os.ReadFile(bin("./internal/testhost/hostinit"))
		if err != nil {
			t.Fatal(err)
		}
		ird, err := testhost.HostInitramfs(hostInit, kernels[0], testhost.HostConfig{VMM: "/bin/cvm", Guests: guests, Tests: tests}, files)
		if err != nil {
			t.Fatal(err)
		}
		irdPath := filepath.Join(tmp, "host-initrd")
		if err := os.WriteFile(irdPath, ird, 0o644); err != nil {
			t.Fatal(err)
		}
		log := testhost.NewConsole(t, *logPath)
		var runs []testhost.TestRun
		reps, runs, err = testhost.Boot(ctx, testhost.BootOptions{QEMU: qemu, Kernel: kernels[0].Image, Initrd: irdPath, Log: log, Unfreeze: true})
		if err != nil || failed(reps) {
			t.Logf("test host console (last lines):\n%s", log.Tail(300))
		}
		if err != nil {
			t.Error(err)
		}
		for _, r := range runs {
			t.Run("kvm-tier/"+r.Name, func(t *testing.T) {
				t.Logf("in the test host:\n%s", r.Summary)
				if !r.OK {
					t.Error("failed")
				}
			})
		}
	}

	for _, g := range guests {
		t.Run(g.Name, func(t *testing.T) {
			var r *testhost.Report
			for _, x := range reps {
				if x.Guest == g.Name {
					r = x
				}
			}
			if r == nil {
				t.Fatalf("no report for %s", g.Name)
			}
			t.Logf("VMM start to /init %.2fs, to exit %.2fs, VMM peak RSS %d KiB (guest RAM included)", r.InitSeconds, r.ExitSeconds, r.MaxRSSKiB)
			for _, c := range r.Results {
				t.Run(c.Name, func(t *testing.T) {
					if !c.OK {
						t.Errorf("%s", c.Detail)
					}
				})
			}
			if len(r.Failed()) > 0 {
				t.Logf("VMM stderr:\n%s", r.Stderr)
			}
		})
	}
}

func failed(reps []*testhost.Report) bool {
	for _, r := range reps {
		if len(r.Failed()) > 0 {
			return true
		}
	}
	return false
}

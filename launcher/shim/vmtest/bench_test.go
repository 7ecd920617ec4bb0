package vmtest

import (
	"bufio"
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/greatjail/cvm/internal/ctrtest"
)

// BenchmarkRuntime runs `ctr run --rm IMAGE ID /bin/prog echo …` under one
// containerd 2.4 with the shipped cvm shim (a plain pod: a QEMU microVM,
// TCG without /dev/kvm) and with runc's shim, side by side. ns/op is the
// whole `ctr run` (pod start to exit); first-output-ms is from the start
// of `ctr run` to the container's first output byte. internal/tools/benchratio
// prints them as a table with the cvm/runc ratio.
func BenchmarkRuntime(b *testing.B) {
	k, tc, bin, prog := shippedShim(b)
	d := ctrtest.Start(b, tc, ctrtest.Config{PathDirs: []string{bin}, Env: []string{"CVM_KERNEL=" + k.Path}})
	img := filepath.Join(d.Dir, "prog.tar")
	const image = "localhost/cvm-test/prog:1"
	ctrtest.WriteOCI(b, img, ctrtest.Image{Name: image, Files: map[string]string{"bin/prog": prog}, Env: []string{"PATH=/bin"}})
	d.Import(b, "default", img)

	_, runcErr := exec.LookPath("runc")
	for _, rt := range []struct{ name, runtime string }{
		{"cvm", "io.containerd.cvm.v2"},
		{"runc", "io.containerd.runc.v2"},
	} {
		b.Run("runtime="+rt.name, func(b *testing.B) {
			if rt.name == "runc" && runcErr != nil {
				b.Skip("runc not found on PATH (Debian package runc)")
			}
			var first time.Duration
			for i := range b.N {
				first += ctrRunFirstOutput(b, d, rt.runtime, fmt.Sprintf("bench-%s-%d", rt.name, i), image)
			}
			b.ReportMetric(float64(first.Milliseconds())/float64(b.N), "first-output-ms")
		})
	}
}

// ctrRunFirstOutput runs one `ctr run --rm` to its exit and returns the
// time from its start to the first byte of output.
func ctrRunFirstOutput(b *testing.B, d *ctrtest.Daemon, runtime, id, image string) time.Duration {
	b.Helper()
	cmd := exec.Command(filepath.Join(d.Bin, "ctr"), d.CtrArgs("run", "--rm", "--runtime", runtime, image, id, "/bin/prog", "echo", "hello")...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	// ctr's warnings (cgroup v1 deprecation) must not break the benchmark
	// lines benchratio reads: kept for a failure's message only.
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	r := bufio.NewReader(out)
	var first time.Duration
	if _, err := r.ReadByte(); err == nil {
		first = time.Since(start)
	}
	line, _ := r.ReadString('\n')
	if err := cmd.Wait(); err != nil || first == 0 {
		b.Fatalf("ctr run --runtime %s: %v (output %q, stderr %q)\n%s", runtime, err, line, stderr.String(), d.LogTail())
	}
	return first
}

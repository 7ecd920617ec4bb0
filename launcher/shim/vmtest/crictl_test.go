package vmtest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/greatjail/cvm/internal/ctrtest"
)

// TestCrictlInVM: a CRI pod on the shipped shim under containerd 2.4: the
// pause container boots the microVM, two app containers arrive after it
// (hot-plugged root disks); logs, exec, stop, remove, and nothing left.
func TestCrictlInVM(t *testing.T) {
	k, tc, bin, prog := shippedShim(t)
	crictl := ctrtest.FindCrictl(t)
	const (
		image = "localhost/cvm-test/prog:1"
		pause = "localhost/cvm-test/pause:1"
	)
	d := ctrtest.Start(t, tc, ctrtest.Config{
		PathDirs:     []string{bin},
		Runtimes:     []ctrtest.Runtime{{Handler: "cvm", Type: "io.containerd.cvm.v2"}},
		SandboxImage: pause,
		Env:          []string{"CVM_KERNEL=" + k.Path},
	})
	img := filepath.Join(d.Dir, "prog.tar")
	ctrtest.WriteOCI(t, img, ctrtest.Image{Name: image, Files: map[string]string{"bin/prog": prog}, Env: []string{"PATH=/bin"}})
	pauseTar := filepath.Join(d.Dir, "pause.tar")
	ctrtest.WriteOCI(t, pauseTar, ctrtest.Image{Name: pause, Files: map[string]string{"bin/prog": prog},
		Entrypoint: []string{"/bin/prog", "sleep", "1000000"}})
	d.Import(t, "k8s.io", img)
	d.Import(t, "k8s.io", pauseTar)

	logs := filepath.Join(d.Dir, "podlogs")
	podCfg := filepath.Join(d.Dir, "pod.json")
	write := func(path, s string) {
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(podCfg, `{"metadata":{"name":"p1","namespace":"default","uid":"u1","attempt":1},
"log_directory":"`+logs+`","linux":{"security_context":{"namespace_options":{"network":2}}}}`)
	cr := func(args ...string) string {
		t.Helper()
		out, errOut, code := d.Crictl(t, crictl, 4*time.Minute, args...)
		if code != 0 {
			t.Fatalf("crictl %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
		}
		return strings.TrimSpace(out)
	}
	podID := cr("runp", "--runtime", "cvm", podCfg)
	defer func() {
		d.Crictl(t, crictl, time.Minute, "stopp", podID)
		d.Crictl(t, crictl, time.Minute, "rmp", podID)
		if t.Failed() {
			matches, _ := filepath.Glob(filepath.Join(d.Dir, "state", "*", "*", "*", "vm", "*.log"))
			for _, m := range matches {
				b, _ := os.ReadFile(m)
				t.Logf("%s:\n%s", m, b)
			}
		}
	}()
	var cids []string
	for i, args := range [][]string{
		{"/bin/prog", "echo", "first container says hi"},
		{"/bin/prog", "sleep", "300"},
	} {
		c := filepath.Join(d.Dir, "c"+strconv.Itoa(i)+".json")
		argv, _ := json.Marshal(args)
		write(c, `{"metadata":{"name":"c`+strconv.Itoa(i)+`"},"image":{"image":"`+image+`"},
"command":`+string(argv)+`,"log_path":"c`+strconv.Itoa(i)+`.log"}`)
		cids = append(cids, cr("create", podID, c, podCfg))
	}
	for _, c := range cids {
		cr("start", c)
	}
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(cr("ps", "-a", "--id", cids[0]), "Exited") && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	if got := cr("logs", cids[0]); got != "first container says hi" {
		t.Errorf("crictl logs: %q", got)
	}
	if got := cr("exec", "-s", cids[1], "/bin/prog", "read", "/proc/version"); !strings.Contains(got, k.Release) {
		t.Errorf("crictl exec in the VM: /proc/version = %q, want the guest kernel %s", got, k.Release)
	}
	cr("stop", "-t", "2", cids[1])
	for _, c := range cids {
		cr("rm", c)
	}
	cr("stopp", podID)
	cr("rmp", podID)
	deadline = time.Now().Add(30 * time.Second)
	for len(d.ProcessesUnder()) != 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if left := d.ProcessesUnder(); len(left) != 0 {
		t.Errorf("the pod's shim or QEMU still running after rmp: %v", left)
	}
}

package vmtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/greatjail/cvm/attestation/attestcmd"
	"github.com/greatjail/cvm/guest-agent/containers"
	"github.com/greatjail/cvm/guest-agent/launchconfig"
	"github.com/greatjail/cvm/internal/ctrtest"
	"github.com/greatjail/cvm/kbs/kbscmd"
	"github.com/greatjail/cvm/launcher"
	"github.com/greatjail/cvm/launcher/shim"
)

// broker is a real key broker, in process, that trusts a simulated TEE.
type broker struct {
	addr, ca, simDir string
	admin            *kbscmd.Admin
}

// startBroker starts a broker on loopback with a fresh sim root, as
// launcher/e2e_test.go does.
func startBroker(t *testing.T) *broker {
	t.Helper()
	dir := t.TempDir()
	b := &broker{simDir: filepath.Join(dir, "sim")}
	root, err := attestcmd.SimInit(b.simDir, rand.Reader, time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.addr = l.Addr().String()
	l.Close()
	kdir := filepath.Join(dir, "kbs")
	if err := kbscmd.Init(kbscmd.InitOptions{Dir: kdir, Listen: b.addr, SimRoot: root, Out: io.Discard}); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(kdir, "kbs.yaml")
	y, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(string(y), "\n") {
		if strings.HasPrefix(l, "metrics_listen:") {
			l = `metrics_listen: "off"`
		}
		lines = append(lines, l)
	}
	os.WriteFile(cfg, []byte(strings.Join(lines, "\n")), 0o600)
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	served := make(chan error, 1)
	go func() { served <- kbscmd.Serve(ctx, cfg, io.Discard, func(string, string) { close(ready) }) }()
	t.Cleanup(func() { cancel(); <-served })
	select {
	case <-ready:
	case err := <-served:
		t.Fatalf("broker: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("broker not ready after 30 s")
	}
	b.ca = filepath.Join(kdir, "ca.pem")
	conn, err := kbscmd.DialAdmin(filepath.Join(kdir, "admin.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	b.admin = &kbscmd.Admin{Conn: conn, Out: io.Discard}
	return b
}

// TestConfidentialPodInVM: the shipped shim under containerd 2.4 runs a
// confidential (tee sim) pod whose settings come from a runtime options
// file (ctr run --runtime-config-path): the guest attests to a real
// broker through the shim's link host (kbs relay, sim PSP signing the pod
// launch's plan digest) before its container is created, and the
// container reads the resource the broker released. A pod whose
// measurement the broker does not know (another vCPU count, so another
// plan) is refused at Create, and its container never runs.
func TestConfidentialPodInVM(t *testing.T) {
	k, tc, bin, prog := shippedShim(t)
	agent := filepath.Join(bin, "cvm-agent")
	b := startBroker(t)

	const resource = "pods/attested"
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte("the pod was accepted"), 0o600)
	if err := b.admin.ResourcePut(context.Background(), resource, secret); err != nil {
		t.Fatal(err)
	}
	// The tenant's side (`cvm measure pod`): the measurement of the pod
	// launch from the same kernel, agent, CA and resource, vCPUs and
	// memory at the defaults. The shim's own computation must agree.
	m, err := launcher.MeasurePod(launcher.PodSpec{Kernel: k.Path, Agent: agent, TEE: "sim", KBSCA: b.ca, Resource: resource})
	if err != nil {
		t.Fatal(err)
	}
	ca, err := launcher.ReadCA(b.ca)
	if err != nil {
		t.Fatal(err)
	}
	digest, _, err := shim.PodMeasurement(k, agent, shim.PodLaunchConfig(&shim.Confidential{TEE: "sim", KBSCAPEM: ca, Resource: resource}),
		launchconfig.Cmdline, shim.DefaultPodVCPUs, shim.DefaultPodMemory, shim.DefaultHotplugSlots)
	if err != nil {
		t.Fatal(err)
	}
	if m.LaunchDigest != hex.EncodeToString(digest[:]) {
		t.Fatalf("cvm measure pod gives %s, the shim computes %x", m.LaunchDigest, digest)
	}
	if err := b.admin.RefValueAdd(context.Background(), "sim", m.LaunchDigest, t.Name()); err != nil {
		t.Fatal(err)
	}

	// The node's runtime options: every pod of this runtime is a
	// confidential sim pod attesting to b.
	opts := filepath.Join(t.TempDir(), "cvm-shim.toml")
	os.WriteFile(opts, []byte(`# containerd-shim-cvm-v2 options
tee = "sim"
kbs = "`+b.addr+`"
kbs_ca = "`+b.ca+`"
resource = "`+resource+`"
sim_dir = "`+b.simDir+`"
`), 0o600)

	d := ctrtest.Start(t, tc, ctrtest.Config{PathDirs: []string{bin}, Env: []string{"CVM_KERNEL=" + k.Path}})
	img := filepath.Join(d.Dir, "prog.tar")
	const image = "localhost/cvm-test/prog:1"
	ctrtest.WriteOCI(t, img, ctrtest.Image{Name: image, Files: map[string]string{"bin/prog": prog}, Env: []string{"PATH=/bin"}})
	d.Import(t, "default", img)

	// The container reads the secret the broker released to its pod,
	// from the pod's guest memory (containers.SecretsDir).
	t.Run("registered", func(t *testing.T) {
		out, errOut, code := d.Ctr(t, 5*time.Minute, "run", "--rm", "--runtime", "io.containerd.cvm.v2",
			"--runtime-config-path", opts, image, "conf-ok", "/bin/prog", "read", containers.SecretsDir+"/"+resource)
		if out != "the pod was accepted" || code != 0 {
			t.Errorf("ctr run: %q, %q, exit %d; want the released secret, exit 0\n%s", out, errOut, code, d.LogTail())
		}
	})
	t.Run("not registered", func(t *testing.T) {
		out, errOut, code := d.Ctr(t, 5*time.Minute, "run", "--rm", "--runtime", "io.containerd.cvm.v2",
			"--runtime-config-path", opts, "--annotation", shim.AnnotationVCPUs+"=2",
			image, "conf-denied", "/bin/prog", "echo", "must not run")
		if code == 0 || out != "" || !strings.Contains(errOut, shim.ErrDenied.Error()) {
			t.Errorf("ctr run of an unregistered pod: %q, %q, exit %d; want no output and an error saying %q",
				out, errOut, code, shim.ErrDenied)
		}
		t.Logf("ctr run of an unregistered pod: exit %d: %s", code, errOut)
		d.Ctr(t, 20*time.Second, "container", "delete", "conf-denied")
	})
	deadline := time.Now().Add(20 * time.Second)
	for len(d.ProcessesUnder()) != 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if left := d.ProcessesUnder(); len(left) != 0 {
		t.Errorf("processes left (shim, QEMU): %v", left)
	}
}

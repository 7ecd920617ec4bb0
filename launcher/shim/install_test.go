package shim

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/greatjail/cvm/guest-agent/launchconfig"
	"github.com/greatjail/cvm/launcher/kernel"
)

// TestInstall runs scripts/install.sh into a temporary PREFIX and checks
// that the layout is what the shim and the launcher look for: the
// binaries, the static agent, the default kernel with its module tree.
func TestInstall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds four binaries; not in -short")
	}
	_, self, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(self), "..", "..")
	inputs := filepath.Join(root, ".cache", "inputs")
	if _, err := os.Stat(filepath.Join(inputs, "modules", kernel.DefaultRelease)); err != nil {
		t.Skipf("no default guest kernel module tree in .cache/inputs/modules/%s: run make test-inputs", kernel.DefaultRelease)
	}
	script := filepath.Join(root, "scripts", "install.sh")

	if out, err := exec.Command(script).CombinedOutput(); err == nil || !strings.Contains(string(out), "usage") {
		t.Errorf("install.sh without PREFIX: %v, %q; want a usage error", err, out)
	}

	prefix := filepath.Join(t.TempDir(), "usr")
	if out, err := exec.Command(script, prefix).CombinedOutput(); err != nil {
		t.Fatalf("install.sh %s: %v\n%s", prefix, err, out)
	}
	share := filepath.Join(prefix, "share", "cvm")
	var got []string
	filepath.WalkDir(prefix, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(prefix, p)
		if d.IsDir() && rel == filepath.Join("share", "cvm", "modules", kernel.DefaultRelease) {
			got = append(got, rel+"/")
			return filepath.SkipDir
		}
		if !d.IsDir() {
			fi, _ := d.Info()
			got = append(got, rel+" "+fi.Mode().Perm().String())
		}
		return nil
	})
	want := []string{
		"bin/containerd-shim-cvm-v2 -rwxr-xr-x",
		"bin/cvm -rwxr-xr-x",
		"bin/cvm-kbs -rwxr-xr-x",
		"share/cvm/cvm-agent -rwxr-xr-x",
		"share/cvm/modules/" + kernel.DefaultRelease + "/",
		"share/cvm/vmlinuz-" + kernel.DefaultRelease + " -rw-r--r--",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("installed files (-want +got):\n%s", diff)
	}

	// The shim finds the agent from its installed place.
	agent, err := findAgentFrom(filepath.Join(prefix, "bin", "containerd-shim-cvm-v2"))
	if err != nil || filepath.Clean(agent) != filepath.Join(share, AgentName) {
		t.Errorf("the installed shim finds the agent at %q (%v), want %s", agent, err, filepath.Join(share, AgentName))
	}
	// The agent is static (the initramfs has no dynamic loader).
	f, err := elf.Open(filepath.Join(share, AgentName))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("the installed agent is dynamically linked")
		}
	}
	f.Close()
	// The kernel opens with its module tree, and the pod modules resolve.
	k, err := kernel.Open(filepath.Join(share, "vmlinuz-"+kernel.DefaultRelease))
	if err != nil {
		t.Fatal(err)
	}
	if k.Release != kernel.DefaultRelease || k.ModulesDir != filepath.Join(share, "modules", kernel.DefaultRelease) {
		t.Errorf("installed kernel: release %q, modules %q", k.Release, k.ModulesDir)
	}
	if _, err := k.Modules(launchconfig.PodModules(launchconfig.TEENone)); err != nil {
		t.Errorf("pod modules from the installed tree: %v", err)
	}
	// Installing again replaces the tree (idempotent).
	if out, err := exec.Command(script, prefix).CombinedOutput(); err != nil {
		t.Errorf("install.sh a second time: %v\n%s", err, out)
	}
}

package vmtest

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/greatjail/cvm/internal/ctrtest"
	"github.com/greatjail/cvm/launcher/engine"
	"github.com/greatjail/cvm/launcher/shim"
	agentv1 "github.com/greatjail/cvm/proto/cvm/agent/v1"
)

// TestHotplugInVM: the pod's first container boots the VM with its root as
// /dev/vda; the next ones get their roots as hot-plugged disks (QMP), found
// by the agent by serial; a removed container's disk is unplugged and its
// slot reused.
func TestHotplugInVM(t *testing.T) {
	needVMs(t)
	k := testKernel(t)
	dir := t.TempDir()
	agent := filepath.Join(dir, "cvm-agent")
	goBuild(t, agent, "github.com/greatjail/cvm/cmd/cvm-agent")
	bin := filepath.Join(dir, "bin")
	os.Mkdir(bin, 0o755)
	prog := ctrtest.BuildProg(t, bin)
	// Each container's root holds /name with the container's name.
	roots := map[string]string{}
	for _, id := range []string{"c1", "c2", "c3", "c4"} {
		name := filepath.Join(dir, id+".name")
		os.WriteFile(name, []byte(id), 0o644)
		roots[id] = filepath.Join(dir, "root-"+id)
		ctrtest.RootDir(t, roots[id], ctrtest.Image{Files: map[string]string{"bin/prog": prog, "name": name}})
	}
	bundle := filepath.Join(dir, "bundle")
	os.Mkdir(bundle, 0o755)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	sb, err := shim.NewVM(shim.VMConfig{Engine: &engine.QEMU{}, Kernel: k, Init: agent, HotplugSlots: 2})(ctx, bundle, "pod")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		sb.Close(context.Background())
		if t.Failed() {
			for _, f := range []string{"console.log", "agent.log", "engine.log"} {
				b, _ := os.ReadFile(filepath.Join(bundle, "vm", f))
				t.Logf("%s:\n%s", f, b)
			}
		}
	}()
	spec, _ := json.Marshal(specs.Spec{
		Process: &specs.Process{Args: []string{"/bin/prog", "read", "/name"}, Cwd: "/", Env: []string{"PATH=/bin"}},
	})
	var rootfs = map[string]*agentv1.ContainerRootfs{}
	create := func(id string) error {
		r, err := sb.Rootfs(ctx, id, roots[id])
		if err != nil {
			return err
		}
		rootfs[id] = r
		_, err = sb.Containers().Create(ctx, &agentv1.CreateContainerRequest{ContainerId: id, OciSpec: spec, Rootfs: r})
		return err
	}
	run := func(id string) string {
		c := sb.Containers()
		if _, err := c.Start(ctx, &agentv1.StartProcessRequest{ContainerId: id, Stdout: true}); err != nil {
			t.Fatalf("Start %s: %v", id, err)
		}
		out, err := c.Output(ctx, &agentv1.ProcessOutputRequest{ContainerId: id, Stream: agentv1.StdioStream_STDIO_STREAM_STDOUT})
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for {
			chunk, err := out.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("Output %s: %v", id, err)
			}
			b.Write(chunk.GetData())
		}
		if _, err := c.Wait(ctx, &agentv1.WaitProcessRequest{ContainerId: id}); err != nil {
			t.Fatalf("Wait %s: %v", id, err)
		}
		return b.String()
	}
	remove := func(id string) {
		if _, err := sb.Containers().Remove(ctx, &agentv1.RemoveContainerRequest{ContainerId: id}); err != nil {
			t.Fatalf("Remove %s: %v", id, err)
		}
		if err := sb.ReleaseRootfs(ctx, id); err != nil {
			t.Fatalf("ReleaseRootfs %s: %v", id, err)
		}
	}
	for _, id := range []string{"c1", "c2", "c3"} {
		if err := create(id); err != nil {
			t.Fatalf("create %s: %v", id, err)
		}
	}
	// Two slots, both taken: the fourth container has no room.
	if err := create("c4"); err == nil || !strings.Contains(err.Error(), "slots are in use") {
		t.Errorf("a fourth container with two hot-plug slots: %v, want the slots to be full", err)
	}
	got := []string{run("c1"), run("c2"), run("c3")}
	if diff := cmp.Diff([]string{"c1", "c2", "c3"}, got); diff != "" {
		t.Errorf("each container sees its own root (-want +got):\n%s", diff)
	}
	if rootfs["c1"].GetBlock().GetDevice() != "/dev/vda" || rootfs["c2"].GetBlock().GetSerial() == "" {
		t.Errorf("root disks: c1 %v, c2 %v; want /dev/vda, then a serial", rootfs["c1"], rootfs["c2"])
	}
	// Unplug c2; its slot takes c4.
	remove("c2")
	if err := create("c4"); err != nil {
		t.Fatalf("create c4 after c2's disk was unplugged: %v", err)
	}
	if got := run("c4"); got != "c4" {
		t.Errorf("c4 reads %q", got)
	}
	for _, id := range []string{"c4", "c3", "c1"} {
		remove(id)
	}
}

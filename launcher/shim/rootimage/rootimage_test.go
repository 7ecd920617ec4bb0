package rootimage

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/greatjail/cvm/guest-agent/containers"
	"github.com/greatjail/cvm/internal/ctrtest"
)

func TestExt4Size(t *testing.T) {
	tests := []struct {
		u          Usage
		size, inos uint64
	}{
		{Usage{}, 8 << 20, 64},
		{Usage{Bytes: 100 << 20, Nodes: 1000}, 127 << 20, 1314},
	}
	for _, tc := range tests {
		if size, inos := ext4Size(tc.u); size != tc.size || inos != tc.inos {
			t.Errorf("ext4Size(%+v) = %d, %d; want %d, %d", tc.u, size, inos, tc.size, tc.inos)
		}
	}
}

// TestImageInGuestManager makes an image of a root with the test program,
// attaches it read-only on a loop device and runs the program from it
// through the guest agent's containers package, as the microVM will
// (there the device is a virtio disk).
func TestImageInGuestManager(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("loop devices and mounts need root: run the test as root")
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		t.Skip("needs losetup (util-linux)")
	}
	root := filepath.Join(t.TempDir(), "root")
	bin := filepath.Join(t.TempDir(), "bin")
	os.Mkdir(bin, 0o755)
	ctrtest.RootDir(t, root, ctrtest.Image{Files: map[string]string{"bin/prog": ctrtest.BuildProg(t, bin)}})
	for _, f := range []Format{EXT4, EROFS} {
		t.Run(string(f), func(t *testing.T) {
			if err := Available(f); err != nil {
				t.Skipf("%v: install e2fsprogs / erofs-utils", err)
			}
			img := filepath.Join(t.TempDir(), "root."+string(f))
			if err := Make(context.Background(), f, root, img); err != nil {
				t.Fatal(err)
			}
			if fi, err := os.Stat(img); err != nil || fi.Size()%Block != 0 {
				t.Fatalf("the %s image: %v, %v; want a size that is whole %d-byte blocks", f, fi.Size(), err, Block)
			}
			b, err := exec.Command("losetup", "--find", "--show", "--read-only", img).Output()
			if err != nil {
				t.Fatalf("losetup %s: %v", img, err)
			}
			dev := strings.TrimSpace(string(b))
			t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })

			m, err := containers.New(containers.Options{Dir: filepath.Join(t.TempDir(), "state")})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close(context.Background())
			spec, _ := json.Marshal(specs.Spec{Process: &specs.Process{Args: []string{"/bin/prog", "ls", "/bin"}, Cwd: "/"}})
			ctx := context.Background()
			if err := m.Create(ctx, "c", spec, containers.Rootfs{Device: dev, FSType: string(f)}); err != nil {
				t.Fatal(err)
			}
			if _, err := m.Start(ctx, "c", "", nil, containers.Stdio{Stdout: true}); err != nil {
				t.Fatal(err)
			}
			r, err := m.Output("c", "", 1)
			if err != nil {
				t.Fatal(err)
			}
			out, _ := io.ReadAll(r)
			r.Close()
			if e, err := m.Wait(ctx, "c", ""); err != nil || e.Status != 0 || string(out) != "prog\n" {
				t.Errorf("ls /bin from the %s image: %q, status %d, %v", f, out, e.Status, err)
			}
		})
	}
}

func TestMakeRejects(t *testing.T) {
	if err := Make(context.Background(), "xfs", t.TempDir(), filepath.Join(t.TempDir(), "x")); err == nil {
		t.Error("Make accepted format xfs")
	}
	if Available(EXT4) == nil {
		if err := Make(context.Background(), EXT4, filepath.Join(t.TempDir(), "missing"), filepath.Join(t.TempDir(), "x")); err == nil {
			t.Error("Make accepted a missing directory")
		}
	}
}

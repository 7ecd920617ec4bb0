package testhost

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseGuestLine(t *testing.T) {
	type out struct {
		Word, Rest string
		OK         bool
	}
	for _, tc := range []struct {
		line string
		want out
	}{
		{"CVMTEST: init", out{"init", "", true}},
		{"[    4.123456] CVMTEST: cpus 0-1", out{"cpus", "0-1", true}},
		{"[    4.1] CVMTEST: disk-read cvm-disk-pattern ab12", out{"disk-read", "cvm-disk-pattern ab12", true}},
		{"CVMTEST: fail vsock-host: no connection", out{"vsock-host", "fail vsock-host: no connection", true}},
		{"CVMTEST: fail modules virtio_blk: exists", out{"modules", "fail modules virtio_blk: exists", true}},
		{"CVMTEST: fail : odd", out{"fail", "fail : odd", true}},
		{"CVMTEST: ", out{}},
		{"[    1.0] virtio_blk virtio0: [vda] 2048 512-byte logical blocks", out{}},
	} {
		w, r, ok := parseGuestLine(tc.line)
		if d := cmp.Diff(tc.want, out{w, r, ok}); d != "" {
			t.Errorf("parseGuestLine(%q) (-want +got):\n%s", tc.line, d)
		}
	}
}

// TestModules resolves the guest's and the test host's modules in the
// real module trees: dependencies first, built-in ones (virtio in 6.12)
// left out, .ko.xz decompressed.
func TestModules(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		release     string
		names, want []string
	}{
		{"6.1.0-56-cloud-amd64", GuestModules, []string{"virtio_ring", "virtio", "virtio_mmio", "virtio_blk", "vsock",
			"vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport", "virtio_rng"}},
		{"6.12.117+deb13-cloud-amd64", GuestModules, []string{"virtio_mmio", "virtio_blk", "vsock",
			"vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport", "virtio_rng"}},
		{"6.12.117+deb13-cloud-amd64", HostModules, []string{"irqbypass", "kvm", "kvm_amd"}},
	} {
		k, err := FindKernel(root, tc.release)
		if errors.Is(err, ErrMissing) {
			t.Skipf("%v", err)
		}
		if err != nil {
			t.Fatal(err)
		}
		mods, err := Modules(k, tc.names...)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, m := range mods {
			got = append(got, m.Name)
			if len(m.Data) < 4 || string(m.Data[1:4]) != "ELF" {
				t.Errorf("%s %s: not a decompressed ELF object", tc.release, m.Name)
			}
		}
		if d := cmp.Diff(tc.want, got); d != "" {
			t.Errorf("%s: modules for %v (-want +got):\n%s", tc.release, tc.names, d)
		}
	}
	k, err := FindKernel(root, Releases[0])
	if err != nil {
		t.Fatal(err)
	}
	k.Modules = t.TempDir()
	if _, err := Modules(k, "virtio_blk"); err == nil {
		t.Error("Modules in an empty tree: no error")
	}
}

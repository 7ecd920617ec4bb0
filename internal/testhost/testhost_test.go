package testhost

import (
	"errors"
	"strings"
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

func TestVerdict(t *testing.T) {
	killed := errors.New("signal: killed")
	for _, tc := range []struct {
		name    string
		fails   []string
		done    bool
		stopped bool // by the power-off timer, after "done"
		werr    error
		want    string // "" for success, else a part of the error
	}{
		{name: "clean power-off", done: true},
		{name: "stopped after done", done: true, stopped: true, werr: killed},
		{name: "fail line", fails: []string{"case x"}, done: true, want: "test host failed: case x"},
		{name: "fail line, then stopped", fails: []string{"case x"}, done: true, stopped: true, werr: killed, want: "case x"},
		{name: "no done", werr: killed, want: "ended before its /init finished"},
		{name: "qemu failed after done", done: true, werr: errors.New("exit status 1"), want: "qemu: exit status 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := verdict(tc.fails, tc.done, tc.stopped, tc.werr, "")
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("verdict = %v, want success", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("verdict = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

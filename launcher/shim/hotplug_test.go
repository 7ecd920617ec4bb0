package shim

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/greatjail/cvm/launcher/engine"
)

// fakeDiskHotplug records what the shim asks of a builtin-engine Handle.
type fakeDiskHotplug struct {
	calls []string
	fail  error // returned by the next call, then cleared
}

func (f *fakeDiskHotplug) AttachDisk(ctx context.Context, slot int, path, serial string, ro bool) error {
	f.calls = append(f.calls, fmt.Sprintf("attach %d %s %s ro=%t", slot, path, serial, ro))
	err := f.fail
	f.fail = nil
	return err
}

func (f *fakeDiskHotplug) DetachDisk(ctx context.Context, slot int) error {
	f.calls = append(f.calls, fmt.Sprintf("detach %d", slot))
	err := f.fail
	f.fail = nil
	return err
}

var _ engine.DiskHotplug = (*fakeDiskHotplug)(nil)

// On an engine.DiskHotplug Handle, containers get free slots in order,
// read-only, with fresh serials; a freed slot is reused; a failed attach
// keeps no slot and a failed detach keeps its slot.
func TestEngineHotplug(t *testing.T) {
	ctx := context.Background()
	f := &fakeDiskHotplug{}
	h := newEngineHotplug(f, 2)
	add := func(id string) string {
		t.Helper()
		s, err := h.add(ctx, id, "/b/"+id+".ext4")
		if err != nil {
			t.Fatalf("add %s: %v", id, err)
		}
		return s
	}
	var serials []string
	serials = append(serials, add("a"), add("b"))
	if _, err := h.add(ctx, "c", "/b/c.ext4"); err == nil || !strings.Contains(err.Error(), "all 2 disk hot-plug slots are in use") {
		t.Errorf("third add = %v, want all slots in use", err)
	}
	if _, err := h.add(ctx, "a", "/b/a.ext4"); err == nil || !strings.Contains(err.Error(), "already") {
		t.Errorf("second add of a = %v, want a refusal", err)
	}
	if ok, err := h.remove(ctx, "a"); !ok || err != nil {
		t.Fatalf("remove a = %t, %v", ok, err)
	}
	if ok, err := h.remove(ctx, "a"); ok || err != nil {
		t.Errorf("second remove a = %t, %v; want false, nil", ok, err)
	}
	serials = append(serials, add("c")) // slot 0 again
	f.fail = errors.New("boom")
	if ok, err := h.remove(ctx, "b"); !ok || err == nil {
		t.Errorf("remove b with a failing detach = %t, %v; want true and the error", ok, err)
	}
	f.fail = errors.New("boom")
	if _, err := h.add(ctx, "d", "/b/d.ext4"); err == nil || !strings.Contains(err.Error(), "all 2") {
		// b still holds slot 1, c slot 0: no attach is even tried.
		t.Errorf("add d = %v, want all slots in use", err)
	}
	f.fail = nil
	if ok, err := h.remove(ctx, "c"); !ok || err != nil {
		t.Fatalf("remove c = %t, %v", ok, err)
	}
	f.fail = errors.New("no such file")
	if _, err := h.add(ctx, "e", "/b/e.ext4"); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("add e with a failing attach = %v, want its error", err)
	}
	serials = append(serials, add("e")) // the failed attach left slot 0 free

	if diff := cmp.Diff([]string{"cvm-disk-1", "cvm-disk-2", "cvm-disk-3", "cvm-disk-5"}, serials); diff != "" {
		t.Errorf("serials (-want +got):\n%s", diff)
	}
	want := []string{
		"attach 0 /b/a.ext4 cvm-disk-1 ro=true",
		"attach 1 /b/b.ext4 cvm-disk-2 ro=true",
		"detach 0",
		"attach 0 /b/c.ext4 cvm-disk-3 ro=true",
		"detach 1",
		"detach 0",
		"attach 0 /b/e.ext4 cvm-disk-4 ro=true",
		"attach 0 /b/e.ext4 cvm-disk-5 ro=true",
	}
	if diff := cmp.Diff(want, f.calls); diff != "" {
		t.Errorf("DiskHotplug calls (-want +got):\n%s", diff)
	}
	for _, s := range serials {
		if err := engine.ValidSerial(s); err != nil {
			t.Errorf("serial %q: %v", s, err)
		}
	}
}

func TestSelectEngine(t *testing.T) {
	noKVM := func() error { return errors.New("open /dev/kvm: no such file or directory") }
	kvm := func() error { return nil }
	tests := []struct {
		name, engine string
		kvm          func() error
		want         string // the engine's Name, or "" for an error
		wantErr      []string
	}{
		{"default is qemu", "", kvm, "qemu", nil},
		{"default without kvm", "", noKVM, "qemu", nil},
		{"qemu", "qemu", kvm, "qemu", nil},
		{"builtin", "builtin", kvm, "builtin", nil},
		{"auto with kvm", "auto", kvm, "builtin", nil},
		{"auto without kvm", "auto", noKVM, "qemu", nil},
		{"builtin without kvm", "builtin", noKVM, "", []string{"/dev/kvm", "runtime option engine", AnnotationEngine}},
		{"unknown", "xen", kvm, "", []string{`"xen"`, "runtime option engine", AnnotationEngine, "qemu, builtin or auto"}},
	}
	for _, tt := range tests {
		c, err := selectEngine(tt.engine, tt.kvm)
		if tt.want == "" {
			if err == nil {
				t.Errorf("%s: selectEngine(%q) = %s, want an error", tt.name, tt.engine, c.Engine.Name())
				continue
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%s: selectEngine(%q) = %v, want it to name %q", tt.name, tt.engine, err, w)
				}
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: selectEngine(%q) = %v", tt.name, tt.engine, err)
			continue
		}
		if got := c.Engine.Name(); got != tt.want {
			t.Errorf("%s: selectEngine(%q) = %s, want %s", tt.name, tt.engine, got, tt.want)
		}
	}
}

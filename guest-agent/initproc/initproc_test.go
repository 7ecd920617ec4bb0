package initproc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fakeSystem records calls and fails those named in errs.
type fakeSystem struct {
	calls []string
	errs  map[string]error // by target or module path
}

func (f *fakeSystem) Mount(source, target, fstype string, flags uintptr, data string) error {
	f.calls = append(f.calls, "mount "+fstype+" "+target)
	return f.errs[target]
}

func (f *fakeSystem) LoadModule(path string) error {
	f.calls = append(f.calls, "load "+filepath.Base(path))
	return f.errs[path]
}

func (f *fakeSystem) KillAll(sig syscall.Signal) error {
	f.calls = append(f.calls, fmt.Sprintf("killall %d", sig))
	return nil
}

func (f *fakeSystem) PowerOff() error { f.calls = append(f.calls, "poweroff"); return nil }

func TestSetup(t *testing.T) {
	dir := t.TempDir()
	order := filepath.Join(dir, "modules")
	if err := os.WriteFile(order, []byte("configfs\nvirtio_blk\nsev-guest\ndm_mod\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	mods := filepath.Join(dir, "lib")
	tests := []struct {
		name    string
		errs    map[string]error
		want    []string
		wantErr string
		logs    int
	}{
		{
			name: "all good",
			want: []string{
				"mount proc /proc", "mount sysfs /sys", "mount devtmpfs /dev", "mount tmpfs /run", "mount tmpfs /tmp", "mount devpts /dev/pts",
				"load configfs.ko", "load virtio_blk.ko", "load sev-guest.ko", "load dm_mod.ko",
				"mount configfs /sys/kernel/config",
			},
		},
		{
			name: "tolerated",
			errs: map[string]error{
				"/dev":                 syscall.EBUSY,  // the kernel mounted it
				"/dev/pts":             syscall.ENODEV, // optional
				mods + "/configfs.ko":  syscall.EEXIST,
				mods + "/sev-guest.ko": syscall.ENODEV, // not an SNP guest
				"/sys/kernel/config":   syscall.ENODEV, // optional
			},
			want: []string{
				"mount proc /proc", "mount sysfs /sys", "mount devtmpfs /dev", "mount tmpfs /run", "mount tmpfs /tmp", "mount devpts /dev/pts",
				"load configfs.ko", "load virtio_blk.ko", "load sev-guest.ko", "load dm_mod.ko",
				"mount configfs /sys/kernel/config",
			},
			logs: 3,
		},
		{
			name:    "module fails",
			errs:    map[string]error{mods + "/virtio_blk.ko": syscall.ENOEXEC},
			want:    []string{"mount proc /proc", "mount sysfs /sys", "mount devtmpfs /dev", "mount tmpfs /run", "mount tmpfs /tmp", "mount devpts /dev/pts", "load configfs.ko", "load virtio_blk.ko"},
			wantErr: "loading module virtio_blk",
		},
		{
			name:    "proc fails",
			errs:    map[string]error{"/proc": syscall.EPERM},
			want:    []string{"mount proc /proc"},
			wantErr: "mount proc at /proc",
		},
	}
	for _, tt := range tests {
		sys := &fakeSystem{errs: tt.errs}
		var logs []string
		err := Setup(sys, order, mods, func(f string, a ...any) { logs = append(logs, fmt.Sprintf(f, a...)) })
		if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("%s: Setup = %v, want error containing %q", tt.name, err, tt.wantErr)
		}
		if diff := cmp.Diff(tt.want, sys.calls); diff != "" {
			t.Errorf("%s: calls (-want +got):\n%s", tt.name, diff)
		}
		if len(logs) != tt.logs {
			t.Errorf("%s: logged %q, want %d lines", tt.name, logs, tt.logs)
		}
	}
}

func TestReadModules(t *testing.T) {
	dir := t.TempDir()
	if got, err := ReadModules(filepath.Join(dir, "absent")); err != nil || got != nil {
		t.Errorf("absent file: %v, %v; want no modules", got, err)
	}
	p := filepath.Join(dir, "modules")
	os.WriteFile(p, []byte("dm_mod\n\ndm_crypt\n"), 0o644)
	got, err := ReadModules(p)
	if diff := cmp.Diff([]string{"dm_mod", "dm_crypt"}, got); diff != "" || err != nil {
		t.Errorf("ReadModules: %v (-want +got):\n%s", err, diff)
	}
	os.WriteFile(p, []byte("../../etc/shadow\n"), 0o644)
	if _, err := ReadModules(p); err == nil || !strings.Contains(err.Error(), p) {
		t.Errorf("ReadModules(bad name) = %v, want an error naming %s", err, p)
	}
}

func TestLinuxRefusesOutsidePID1(t *testing.T) {
	if os.Getpid() == 1 {
		t.Skip("running as PID 1")
	}
	if err := (Linux{}).PowerOff(); !errors.Is(err, errNotInit) {
		t.Errorf("PowerOff outside PID 1 = %v, want errNotInit", err)
	}
	if err := (Linux{}).KillAll(syscall.SIGKILL); !errors.Is(err, errNotInit) {
		t.Errorf("KillAll outside PID 1 = %v, want errNotInit", err)
	}
}

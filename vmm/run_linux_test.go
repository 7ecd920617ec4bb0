package vmm

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/greatjail/cvm/vmm/kvm"
)

// Without a KVM device Run fails after Validate, naming the device, and
// leaves nothing behind (the vsock socket is never created).
func TestRunNoKVM(t *testing.T) {
	kernel := realKernel(t)
	dir := t.TempDir()
	dev := filepath.Join(dir, "kvm")
	sock := filepath.Join(dir, "v.sock")
	_, err := Run(context.Background(), Config{Kernel: kernel, MemorySize: 256 << 20, VCPUs: 1, KVMPath: dev, VsockUDS: sock})
	if !errors.Is(err, kvm.ErrNoKVM) {
		t.Fatalf("Run: %v, want kvm.ErrNoKVM", err)
	}
	if !strings.Contains(err.Error(), dev) {
		t.Errorf("error %q does not name %s", err, dev)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("vsock socket left behind: %v", err)
	}
}

// Invalid input fails in Validate, before KVM is touched.
func TestRunInvalid(t *testing.T) {
	_, err := Run(context.Background(), Config{Kernel: []byte("junk"), MemorySize: 64 << 20, VCPUs: 1, KVMPath: "/nonexistent"})
	if !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("Run: %v, want ErrInvalidConfig", err)
	}
}

// Tier kvm: Run starts the real kernel and returns when ctx is canceled.
// Nothing about the boot is checked (on this project's dev machine stock
// kernels do not boot under its kvm_pvm module; see reference/vmm.md).
func TestRunCancel(t *testing.T) {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("tier kvm: /dev/kvm not usable: %v", err)
	}
	f.Close()
	kernel := realKernel(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var out bytes.Buffer
	res, err := Run(ctx, Config{Kernel: kernel, Cmdline: "console=ttyS0 panic=-1", MemorySize: 256 << 20, VCPUs: 1, Console: &out, RNG: true})
	if res != nil && res.Reason != ReasonCanceled {
		t.Logf("guest ended early: %+v", res)
		return
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run: %v, want the context's error", err)
	}
	t.Logf("result %+v; console %d bytes", res, out.Len())
}

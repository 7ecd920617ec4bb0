package snpmeasure

import (
	"bytes"
	"crypto/sha512"
	"encoding/binary"
	"os"
	"testing"

	"github.com/greatjail/cvm/vmm/loader"
	"github.com/greatjail/cvm/vmm/plan"
)

// TestPlanDigest checks the chain over a small plan against an independent
// computation of the PAGE_INFO records, and that every input matters.
func TestPlanDigest(t *testing.T) {
	code := bytes.Repeat([]byte{0x90}, 5000) // spans two pages
	p := &plan.Plan{
		MemorySize: 1 << 20, VCPUs: 1, BSP: plan.VCPUState{Mode: plan.Long64},
		Blobs: []plan.Blob{
			{Name: "code", GPA: 0x10000, Data: code, Size: uint64(len(code)), Type: plan.Normal},
			{Name: "zero", GPA: 0x20000, Size: plan.PageSize, Type: plan.Zero},
		},
	}
	got, err := PlanDigest(p)
	if err != nil {
		t.Fatal(err)
	}
	// Independent: PAGE_INFO = digest_cur || contents || len 0x70 || type || imi 0 || vmpl perms 0 || rsvd || gpa.
	var ld [48]byte
	step := func(typ byte, gpa uint64, contents []byte) {
		var rec [0x70]byte
		copy(rec[0:], ld[:])
		if contents != nil {
			h := sha512.Sum384(contents)
			copy(rec[0x30:], h[:])
		}
		binary.LittleEndian.PutUint16(rec[0x60:], 0x70)
		rec[0x62] = typ
		binary.LittleEndian.PutUint64(rec[0x68:], gpa)
		ld = sha512.Sum384(rec[:])
	}
	page1 := code[:4096]
	page2 := make([]byte, 4096)
	copy(page2, code[4096:])
	step(1, 0x10000, page1)
	step(1, 0x11000, page2)
	step(3, 0x20000, nil)
	if got != ld {
		t.Fatalf("PlanDigest = %x, want %x", got, ld)
	}
	// Every input matters: contents, order, type.
	p.Blobs[0].Data = append([]byte{0x91}, code[1:]...)
	if d, _ := PlanDigest(p); d == got {
		t.Error("changing a byte of a NORMAL page did not change the digest")
	}
	p.Blobs[0].Data = code
	p.Blobs[0], p.Blobs[1] = p.Blobs[1], p.Blobs[0]
	if d, _ := PlanDigest(p); d == got {
		t.Error("changing the launch order did not change the digest")
	}
	p.Blobs[0], p.Blobs[1] = p.Blobs[1], p.Blobs[0]
	p.Blobs[1].Type = plan.Unmeasured
	if d, _ := PlanDigest(p); d == got {
		t.Error("changing a page type did not change the digest")
	}
	// An invalid plan is refused.
	p.Blobs[1].GPA = 0x10000
	if _, err := PlanDigest(p); err == nil {
		t.Error("PlanDigest of overlapping blobs succeeded")
	}
}

// TestPlanDigestLinux measures the plan of a real Linux boot: the same
// inputs give the same digest, and the command line and initrd count.
func TestPlanDigestLinux(t *testing.T) {
	kernel, err := os.ReadFile("../../.cache/inputs/vmlinuz-6.1.0-56-cloud-amd64")
	if err != nil {
		t.Skipf("Debian kernel missing: run scripts/fetch-test-inputs.sh (make test does): %v", err)
	}
	initrd, err := os.ReadFile("../../testdata/measure/inputs/initrd-tiny.cpio")
	if err != nil {
		t.Fatal(err)
	}
	digest := func(cmdline string, initrd []byte) [48]byte {
		t.Helper()
		p, err := loader.Linux(loader.BootOptions{Kernel: kernel, Initrd: initrd, Cmdline: cmdline, MemorySize: 256 << 20, VCPUs: 2})
		if err != nil {
			t.Fatal(err)
		}
		d, err := PlanDigest(p)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	a, b := digest("console=ttyS0", initrd), digest("console=ttyS0", initrd)
	if a != b {
		t.Error("the same plan measured twice gave two digests")
	}
	if digest("console=ttyS0 debug", initrd) == a {
		t.Error("the command line does not change the digest")
	}
	other := bytes.Clone(initrd)
	other[100] ^= 1
	if digest("console=ttyS0", other) == a {
		t.Error("the initrd does not change the digest")
	}
}

package launcher

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// TestMeasurePod: the pod measurement is reproducible, differs from a
// launch's, and every measured input changes it.
func TestMeasurePod(t *testing.T) {
	k := testKernel(t)
	agent := goBuild(t, "./internal/demo/hello")
	d := t.TempDir()
	s := PodSpec{Kernel: k, Agent: agent, TEE: "sim", KBSCA: writeCA(t, d, "ca"), Resource: "pods/a"}
	a, err := MeasurePod(s)
	if err != nil {
		t.Fatal(err)
	}
	b, err := MeasurePod(s)
	if err != nil {
		t.Fatal(err)
	}
	if a.Digest() != b.Digest() || len(a.Digest()) != 96 || a.Parameters["mode"] != "pod" {
		t.Errorf("MeasurePod twice: %s and %s (parameters %v); want the same 96 hex digits, mode pod", a.Digest(), b.Digest(), a.Parameters)
	}
	for name, edit := range map[string]func(*PodSpec){
		"resource": func(s *PodSpec) { s.Resource = "pods/b" },
		"ca":       func(s *PodSpec) { s.KBSCA = writeCA(t, d, "other") },
		"vcpus":    func(s *PodSpec) { s.VCPUs = 2 },
		"memory":   func(s *PodSpec) { s.Memory = 1 << 30 },
	} {
		s2 := s
		edit(&s2)
		c, err := MeasurePod(s2)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if c.Digest() == a.Digest() {
			t.Errorf("changing the %s left the pod measurement unchanged", name)
		}
	}
	for _, tc := range []struct {
		name string
		edit func(*PodSpec)
		want string
	}{
		{"tee snp", func(s *PodSpec) { s.TEE = "snp" }, "only sim"},
		{"no CA", func(s *PodSpec) { s.KBSCA = "" }, "--kbs-ca"},
		{"no resource", func(s *PodSpec) { s.Resource = "" }, "--resource"},
		{"vcpus 65", func(s *PodSpec) { s.VCPUs = 65 }, "--vcpus"},
		{"memory 64M", func(s *PodSpec) { s.Memory = 64 << 20 }, "--memory"},
	} {
		s2 := s
		tc.edit(&s2)
		if _, err := MeasurePod(s2); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: MeasurePod = %v, want ErrInvalid naming %s", tc.name, err, tc.want)
		}
	}
}

// A pod's hot-plug slots are in its plan: with none it is a launch's plan,
// each slot count gives another digest, and a negative count is refused.
func TestPodPlanDigestSlots(t *testing.T) {
	kraw, err := os.ReadFile(testKernel(t))
	if err != nil {
		t.Fatal(err)
	}
	initrd := []byte("not really an initramfs, but bytes to place")
	launch, err := PlanDigest(kraw, initrd, "console=ttyS0", 1, 256<<20)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[[48]byte]int{}
	for _, slots := range []int{0, 1, DefaultPodHotplugSlots} {
		d, err := PodPlanDigest(kraw, initrd, "console=ttyS0", 1, 256<<20, slots)
		if err != nil {
			t.Fatalf("%d slots: %v", slots, err)
		}
		if (d == launch) != (slots == 0) {
			t.Errorf("%d slots: digest equal to the launch's %v, want %v", slots, d == launch, slots == 0)
		}
		if prev, ok := seen[d]; ok {
			t.Errorf("%d and %d slots give the same digest", prev, slots)
		}
		seen[d] = slots
	}
	if _, err := PodPlanDigest(kraw, initrd, "console=ttyS0", 1, 256<<20, -1); !errors.Is(err, ErrInvalid) {
		t.Errorf("-1 slots: %v, want ErrInvalid", err)
	}
}

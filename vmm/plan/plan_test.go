package plan

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func validPlan(blobs ...Blob) *Plan {
	return &Plan{MemorySize: 1 << 20, VCPUs: 1, Blobs: blobs, BSP: VCPUState{Mode: Long64}}
}

func TestValidate(t *testing.T) {
	page := bytes.Repeat([]byte{1}, PageSize)
	tests := []struct {
		name    string
		plan    *Plan
		wantErr string // substring; "" means valid
	}{
		{"empty plan", validPlan(), ""},
		{"adjacent pages", validPlan(
			Blob{Name: "a", GPA: 0x1000, Data: page, Size: PageSize, Type: Normal},
			Blob{Name: "b", GPA: 0x2000, Size: PageSize, Type: Zero},
		), ""},
		{"unaligned blobs on distinct pages", validPlan(
			Blob{Name: "a", GPA: 0x500, Data: []byte{1}, Size: 0x28, Type: Normal},
			Blob{Name: "b", GPA: 0x1ff0, Data: []byte{1}, Size: 0x10, Type: Normal},
		), ""},
		{"last page of memory", validPlan(
			Blob{Name: "a", GPA: 1<<20 - PageSize, Size: PageSize, Type: Normal},
		), ""},
		{"byte overlap", validPlan(
			Blob{Name: "a", GPA: 0x1000, Size: 0x2000, Type: Normal},
			Blob{Name: "b", GPA: 0x2800, Size: 0x10, Type: Normal},
		), `blob "a" [0x1000, 0x3000) and blob "b" [0x2800, 0x2810) share a page`},
		{"page shared without byte overlap", validPlan(
			Blob{Name: "gdt", GPA: 0x500, Size: 0x20, Type: Normal},
			Blob{Name: "idt", GPA: 0x520, Size: 0x8, Type: Normal},
		), `blob "gdt" [0x500, 0x520) and blob "idt" [0x520, 0x528) share a page`},
		{"overlap reported in address order", validPlan(
			Blob{Name: "late", GPA: 0x3000, Size: 0x1000, Type: Normal},
			Blob{Name: "early", GPA: 0x1000, Size: 0x3000, Type: Normal},
		), `blob "early" [0x1000, 0x4000) and blob "late"`},
		{"past memory end", validPlan(
			Blob{Name: "big", GPA: 1<<20 - PageSize, Size: 2 * PageSize, Type: Normal},
		), `blob "big": [0xff000, +0x2000) outside memory [0, 0x100000)`},
		{"gpa overflow", validPlan(
			Blob{Name: "wrap", GPA: ^uint64(0) - 10, Size: 100, Type: Normal},
		), `blob "wrap"`},
		{"data longer than size", validPlan(
			Blob{Name: "d", GPA: 0, Data: make([]byte, 10), Size: 5, Type: Normal},
		), `blob "d": 10 bytes of data exceed size 0x5`},
		{"empty blob", validPlan(Blob{Name: "e", GPA: 0, Type: Normal}), `blob "e": empty`},
		{"duplicate name", validPlan(
			Blob{Name: "x", GPA: 0, Size: 1, Type: Normal},
			Blob{Name: "x", GPA: 0x1000, Size: 1, Type: Normal},
		), `blob "x": name used twice`},
		{"no name", validPlan(Blob{GPA: 0x3000, Size: 1, Type: Normal}), "blob at 0x3000 has no name"},
		{"page type 0", validPlan(Blob{Name: "t", Size: 1}), `blob "t": page type PageType(0)`},
		{"page type vmsa", validPlan(Blob{Name: "v", Size: PageSize, Type: VMSA}), `blob "v": page type vmsa`},
		{"zero with data", validPlan(Blob{Name: "z", Data: []byte{0}, Size: 1, Type: Zero}), `blob "z": zero pages carry no data`},
		{"secrets unaligned", validPlan(Blob{Name: "s", GPA: 0x10, Size: PageSize, Type: Secrets}), `blob "s": secrets blob must be one aligned page`},
		{"cpuid two pages", validPlan(Blob{Name: "c", Size: 2 * PageSize, Type: CPUID}), `blob "c": cpuid blob must be one aligned page`},
		{"memory unaligned", &Plan{MemorySize: 1000, VCPUs: 1, BSP: VCPUState{Mode: Long64}}, "memory size 0x3e8"},
		{"no vcpus", &Plan{MemorySize: PageSize, BSP: VCPUState{Mode: Long64}}, "0 vcpus"},
		{"no mode", &Plan{MemorySize: PageSize, VCPUs: 1}, "boot vcpu mode Mode(0)"},
		{"bad e820", &Plan{MemorySize: PageSize, VCPUs: 1, BSP: VCPUState{Mode: Protected32}, E820: []E820Entry{{Addr: 1, Size: 0}}}, "e820 entry"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.plan.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("Validate() = %v, want an ErrInvalid containing %q", err, tt.wantErr)
			}
		})
	}
}

type page struct {
	GPA  uint64
	Type PageType
	Data string // the non-zero bytes of the page, as "off:byte" pairs; "nil" for a nil page
}

func summarize(b []byte) string {
	if b == nil {
		return "nil"
	}
	var s []string
	for i, c := range b {
		if c != 0 {
			s = append(s, fmt.Sprintf("%#x:%d", i, c))
		}
	}
	return strings.Join(s, " ")
}

func TestPages(t *testing.T) {
	p := validPlan(
		// Launch order is blob order, not address order.
		Blob{Name: "late", GPA: 0x5000, Data: []byte{7}, Size: 1, Type: Normal},
		// Unaligned, spanning a page boundary, with a zero tail.
		Blob{Name: "span", GPA: 0x1ffe, Data: []byte{1, 2, 3, 4}, Size: 0x1010, Type: Normal},
		Blob{Name: "zero", GPA: 0x8000, Size: 2 * PageSize, Type: Zero},
		Blob{Name: "cpuid", GPA: 0x4000, Data: []byte{9}, Size: PageSize, Type: CPUID},
	)
	var got []page
	err := p.Pages(func(gpa uint64, t PageType, b []byte) error {
		if b != nil && len(b) != PageSize {
			return fmt.Errorf("page %#x has %d bytes", gpa, len(b))
		}
		got = append(got, page{gpa, t, summarize(b)})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []page{
		{0x5000, Normal, "0x0:7"},
		{0x1000, Normal, "0xffe:1 0xfff:2"},
		{0x2000, Normal, "0x0:3 0x1:4"},
		{0x3000, Normal, ""}, // the zero tail of "span" ends at 0x300e
		{0x8000, Zero, "nil"},
		{0x9000, Zero, "nil"},
		{0x4000, CPUID, "0x0:9"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Pages() mismatch (-want +got):\n%s", diff)
	}
}

func TestPagesErrors(t *testing.T) {
	bad := validPlan(Blob{Name: "a", Size: 1, Type: Normal}, Blob{Name: "b", GPA: 1, Size: 1, Type: Normal})
	called := false
	if err := bad.Pages(func(uint64, PageType, []byte) error { called = true; return nil }); !errors.Is(err, ErrInvalid) || called {
		t.Errorf("Pages(overlapping plan) = %v, called %v; want ErrInvalid before any call", err, called)
	}
	stop := errors.New("stop")
	n := 0
	p := validPlan(Blob{Name: "a", Size: 3 * PageSize, Type: Normal})
	if err := p.Pages(func(uint64, PageType, []byte) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Errorf("Pages() = %v after %d calls, want the callback's error after 1", err, n)
	}
}

func TestStrings(t *testing.T) {
	got := []string{Normal.String(), VMSA.String(), Zero.String(), Unmeasured.String(), Secrets.String(), CPUID.String(), PageType(9).String(),
		Long64.String(), Protected32.String(), Mode(0).String()}
	want := []string{"normal", "vmsa", "zero", "unmeasured", "secrets", "cpuid", "PageType(9)", "long64", "protected32", "Mode(0)"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("String() mismatch (-want +got):\n%s", diff)
	}
}

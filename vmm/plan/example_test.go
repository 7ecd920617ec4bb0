package plan_test

import (
	"fmt"
	"log"

	"github.com/greatjail/cvm/vmm/plan"
)

func ExamplePlan_Pages() {
	p := &plan.Plan{
		MemorySize: 2 << 20,
		VCPUs:      1,
		BSP:        plan.VCPUState{Mode: plan.Protected32, RIP: 0x100000},
		Blobs: []plan.Blob{
			{Name: "kernel", GPA: 0x100000, Data: []byte{0xf4}, Size: 0x1800, Type: plan.Normal},
			{Name: "scratch", GPA: 0x8000, Size: 0x1000, Type: plan.Zero},
		},
	}
	err := p.Pages(func(gpa uint64, t plan.PageType, page []byte) error {
		fmt.Printf("%#x %v first byte present: %v\n", gpa, t, page != nil && page[0] != 0)
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// 0x100000 normal first byte present: true
	// 0x101000 normal first byte present: false
	// 0x8000 zero first byte present: false
}

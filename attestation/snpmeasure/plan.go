package snpmeasure

import (
	"fmt"

	"github.com/greatjail/cvm/vmm/plan"
)

// PlanDigest is the SEV-SNP launch digest of a launch plan of our own VMM:
// the PAGE_INFO chain over every page of the plan in launch order, each with
// its page type (NORMAL pages hashed, the others chained with zero
// contents), exactly as SNP_LAUNCH_UPDATE would measure them. It is the
// value the simulated TEE reports for a guest launched from the plan, so
// that `cvm measure`, the broker's reference values and the launch agree by
// construction.
//
// VMSA pages are not part of a plan (KVM adds them at LAUNCH_FINISH); the
// hardware SNP backend of the builtin VMM will append them after these
// pages, and this function will take the vCPU template then.
func PlanDigest(p *plan.Plan) ([48]byte, error) {
	d := NewDigest()
	err := p.Pages(func(gpa uint64, t plan.PageType, page []byte) error {
		switch t {
		case plan.Normal, plan.Zero, plan.Unmeasured, plan.Secrets, plan.CPUID:
		default:
			return fmt.Errorf("snpmeasure: plan page at %#x has page type %d, which a plan may not hold", gpa, t)
		}
		if t == plan.Normal {
			d.Update(PageType(t), gpa, page)
		} else {
			d.Update(PageType(t), gpa, nil)
		}
		return nil
	})
	if err != nil {
		return [48]byte{}, err
	}
	return d.Sum(), nil
}

package vmm

import "errors"

// cleanup is a stack of undo steps run last-in first-out.
type cleanup []func() error

func (c *cleanup) push(f func() error) { *c = append(*c, f) }

// run runs and clears every step, newest first, and joins their errors.
func (c *cleanup) run() error {
	var errs []error
	for i := len(*c) - 1; i >= 0; i-- {
		if err := (*c)[i](); err != nil {
			errs = append(errs, err)
		}
	}
	*c = nil
	return errors.Join(errs...)
}

//go:build !linux

package vmm

import (
	"context"
	"errors"
)

// Run needs Linux KVM.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	return nil, errors.New("vmm: KVM needs Linux")
}

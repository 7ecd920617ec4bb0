//go:build !linux

package engine

import "errors"

// ProbeKVM reports that KVM is Linux-only.
func ProbeKVM() error { return errors.New("KVM needs Linux") }

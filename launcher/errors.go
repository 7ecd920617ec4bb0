package launcher

import (
	"errors"
	"fmt"
)

// Exit codes of a launch that did not run the workload to its end.
const (
	// ExitLaunchFailed: bad input, engine error, broker unreachable, disk
	// problem, boot timeout, agent failure.
	ExitLaunchFailed = 125
	// ExitDenied: the key broker denied the guest.
	ExitDenied = 126
)

// Errors a launch fails with, for errors.Is. Every error Run returns wraps
// exactly one of ErrInvalid, ErrDenied or ErrLaunch.
var (
	// ErrDenied means the key broker refused the guest's evidence or the
	// resource's rule. The broker gives the guest no reasons.
	ErrDenied = errors.New("the key broker denied this guest: its measurement or policy did not pass; the operator's audit log has the reasons")
	// ErrLaunch is any other launch failure.
	ErrLaunch = errors.New("launch failed")
	// ErrUnreachable (wrapping ErrLaunch) means the key broker could not be
	// reached.
	ErrUnreachable = fmt.Errorf("%w: the key broker is unreachable", ErrLaunch)
)

// ExitCode maps an error from Run to the process exit code: 0 for nil,
// ExitDenied for ErrDenied, ExitLaunchFailed for everything else.
func ExitCode(err error) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, ErrDenied):
		return ExitDenied
	default:
		return ExitLaunchFailed
	}
}

package testhost

import (
	"os"
	"syscall"
)

// rusage returns the peak resident set of an exited process in KiB.
func rusage(ps *os.ProcessState) (int64, bool) {
	ru, ok := ps.SysUsage().(*syscall.Rusage)
	if !ok || ru == nil {
		return 0, false
	}
	return ru.Maxrss, true
}

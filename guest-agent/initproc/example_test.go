package initproc_test

import (
	"fmt"
	"syscall"

	"github.com/greatjail/cvm/guest-agent/initproc"
)

// ExitCode reports a status the way a shell does.
func ExampleExitCode() {
	exited3 := syscall.WaitStatus(3 << 8)
	killed := syscall.WaitStatus(syscall.SIGKILL)
	fmt.Println(initproc.ExitCode(exited3))
	fmt.Println(initproc.ExitCode(killed))
	// Output:
	// 3 0
	// 137 9
}

package launcher_test

import (
	"errors"
	"fmt"

	"github.com/greatjail/cvm/launcher"
)

// A launch's error decides the process's exit status: the broker's denial
// is told apart from every other failure, and carries no reasons.
func ExampleExitCode() {
	for _, err := range []error{
		nil,
		launcher.ErrDenied,
		fmt.Errorf("%w at 127.0.0.1:8443: no answer after 5 tries", launcher.ErrUnreachable),
		errors.New("qemu engine: start qemu-system-x86_64: permission denied"),
	} {
		fmt.Println(launcher.ExitCode(err))
	}
	// Output:
	// 0
	// 126
	// 125
	// 125
}

// Validate names the first problem before anything starts.
func ExampleSpec_Validate() {
	s := launcher.Spec{KBS: "broker.example:8443", TEE: "sim"}
	fmt.Println(s.Validate())
	// Output:
	// invalid launch: --disk FILE is required (the encrypted disk image, from 'cvm image encrypt')
}

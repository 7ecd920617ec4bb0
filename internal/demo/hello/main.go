// Command hello is the workload of `make demo` and of the launcher's
// end-to-end tests: a tiny static program that runs inside the
// confidential microVM, from the encrypted disk. It prints one line
// greeting its arguments, one line on stderr, and exits with the code given
// by --exit (default 0).
//
//	hello [--exit N] [WORD]...
package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

func main() {
	args := os.Args[1:]
	code := 0
	if len(args) >= 2 && args[0] == "--exit" {
		n, err := strconv.Atoi(args[1])
		if err != nil || n < 0 || n > 255 {
			fmt.Fprintf(os.Stderr, "hello: --exit %q: want 0..255\n", args[1])
			os.Exit(2)
		}
		code, args = n, args[2:]
	}
	who := "world"
	if len(args) > 0 {
		who = strings.Join(args, " ")
	}
	fmt.Printf("hello, %s, from inside the confidential microVM\n", who)
	fmt.Fprintf(os.Stderr, "hello: exiting with %d\n", code)
	os.Exit(code)
}

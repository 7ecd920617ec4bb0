// Command workload is the agent tests' entrypoint: a static program run
// chrooted into the fake unlocked disk. Its arguments are steps:
//
//	out:TEXT   print TEXT and a newline on stdout
//	err:TEXT   print TEXT and a newline on stderr
//	big:N      write N bytes of 'x' to stdout
//	ls         print the names in / (shows the chroot)
//	env        print the environment, one variable a line
//	hang       sleep until a signal ends it (default handling)
//	exit:N     exit with status N
package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	for _, step := range os.Args[1:] {
		verb, arg, _ := strings.Cut(step, ":")
		switch verb {
		case "out":
			fmt.Println(arg)
		case "err":
			fmt.Fprintln(os.Stderr, arg)
		case "big":
			n, _ := strconv.Atoi(arg)
			os.Stdout.Write([]byte(strings.Repeat("x", n)))
		case "ls":
			es, err := os.ReadDir("/")
			if err != nil {
				fmt.Println("ls:", err)
			}
			for _, e := range es {
				fmt.Println(e.Name())
			}
		case "env":
			for _, e := range os.Environ() {
				fmt.Println(e)
			}
		case "hang":
			for {
				time.Sleep(time.Hour)
			}
		case "exit":
			n, _ := strconv.Atoi(arg)
			os.Exit(n)
		default:
			fmt.Fprintln(os.Stderr, "workload: unknown step", step)
			os.Exit(100)
		}
	}
}

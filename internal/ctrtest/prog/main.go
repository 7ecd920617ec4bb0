// Command prog is the workload of the container tests: a small static
// program with one subcommand per behaviour a test checks. Tests build it
// with CGO_ENABLED=0 and put it at /bin/prog in a root file system.
//
//	prog echo ARGS...     print ARGS joined by spaces
//	prog stderr ARGS...   print ARGS to standard error
//	prog exit N           exit with status N
//	prog env              print the environment, one variable a line
//	prog id               print "uid=U gid=G groups=G1,G2"
//	prog pwd              print the working directory
//	prog core             print the soft and hard RLIMIT_CORE
//	prog read FILE        print the contents of FILE
//	prog cat              copy standard input to standard output
//	prog sleep SECONDS    sleep, then exit 0
//	prog ls DIR           print the names in DIR
//	prog write FILE TEXT  write TEXT to FILE
//	prog tty              check that stdin, stdout and stderr are the
//	                      controlling terminal and print "tty ROWS COLS
//	                      NAME" (NAME: the terminal's path here, or "-");
//	                      then for each line read print "line TEXT ROWS
//	                      COLS" (the size now); at end of input print "eof"
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "prog: no subcommand")
		os.Exit(2)
	}
	args := os.Args[2:]
	switch os.Args[1] {
	case "echo":
		fmt.Println(strings.Join(args, " "))
	case "stderr":
		fmt.Fprintln(os.Stderr, strings.Join(args, " "))
	case "exit":
		n, _ := strconv.Atoi(arg(args, 0))
		os.Exit(n)
	case "env":
		for _, e := range os.Environ() {
			fmt.Println(e)
		}
	case "id":
		gs, _ := os.Getgroups()
		s := make([]string, len(gs))
		for i, g := range gs {
			s[i] = strconv.Itoa(g)
		}
		fmt.Printf("uid=%d gid=%d groups=%s\n", os.Getuid(), os.Getgid(), strings.Join(s, ","))
	case "pwd":
		d, err := os.Getwd()
		check(err)
		fmt.Println(d)
	case "core":
		var r syscall.Rlimit
		check(syscall.Getrlimit(syscall.RLIMIT_CORE, &r))
		fmt.Printf("%d %d\n", r.Cur, r.Max)
	case "read":
		b, err := os.ReadFile(arg(args, 0))
		check(err)
		os.Stdout.Write(b)
	case "cat":
		_, err := io.Copy(os.Stdout, os.Stdin)
		check(err)
	case "sleep":
		n, _ := strconv.Atoi(arg(args, 0))
		time.Sleep(time.Duration(n) * time.Second)
	case "ls":
		es, err := os.ReadDir(arg(args, 0))
		check(err)
		for _, e := range es {
			fmt.Println(e.Name())
		}
	case "write":
		check(os.WriteFile(arg(args, 0), []byte(arg(args, 1)), 0o644))
	case "tty":
		tty()
	default:
		fmt.Fprintf(os.Stderr, "prog: unknown subcommand %q\n", os.Args[1])
		os.Exit(2)
	}
}

func arg(args []string, i int) string {
	if i < len(args) {
		return args[i]
	}
	return ""
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "prog:", err)
		os.Exit(1)
	}
}

func tty() {
	for fd := 0; fd <= 2; fd++ {
		if _, err := unix.IoctlGetTermios(fd, unix.TCGETS); err != nil {
			check(fmt.Errorf("descriptor %d is not a terminal: %w", fd, err))
		}
	}
	sid, err := unix.IoctlGetInt(0, unix.TIOCGSID)
	check(err)
	if own, _ := unix.Getsid(0); sid != own {
		check(fmt.Errorf("the terminal belongs to session %d, not ours (%d)", sid, own))
	}
	size := func() string {
		ws, err := unix.IoctlGetWinsize(0, unix.TIOCGWINSZ)
		check(err)
		return fmt.Sprintf("%d %d", ws.Row, ws.Col)
	}
	fmt.Printf("tty %s %s\n", size(), ttyName())
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		fmt.Printf("line %s %s\n", in.Text(), size())
	}
	check(in.Err())
	fmt.Println("eof")
}

// ttyName is the path of the terminal on descriptor 0 as this process
// sees it (what ttyname(3) finds), or "-" if that path does not lead to it
// here: a terminal from a devpts instance outside the process's root.
func ttyName() string {
	p, err := os.Readlink("/proc/self/fd/0")
	if err != nil {
		return "-"
	}
	var fd0, named unix.Stat_t
	if unix.Fstat(0, &fd0) != nil || unix.Stat(p, &named) != nil || fd0.Dev != named.Dev || fd0.Ino != named.Ino {
		return "-"
	}
	return p
}

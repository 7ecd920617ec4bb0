package vmm

import (
	"fmt"

	seccomp "github.com/elastic/go-seccomp-bpf"

	"github.com/greatjail/cvm/vmm/kvm"
)

// seccompSyscalls are the system calls a running VMM process makes after
// set-up: the Go runtime (threads, memory, signals, timers, the network
// poller), KVM_RUN and interrupt injection (ioctl, restricted by request
// number), the disk (positional reads and writes, fsync), the console, the
// entropy source (getrandom) and the hybrid vsock's Unix sockets (accepting
// host connections, dialing <uds>_<port>, removing the socket at the end).
// Opening files, executing programs, creating listening sockets and most of
// the kernel's API are refused.
var seccompSyscalls = []string{
	// Go runtime: threads, memory, scheduling, signals, exit.
	"clone", "exit", "exit_group", "futex", "sched_yield", "sched_getaffinity",
	"nanosleep", "clock_nanosleep", "clock_gettime", "gettid", "getpid", "tgkill", "tkill",
	"mmap", "munmap", "madvise", "mprotect",
	"rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack", "restart_syscall",
	// Descriptors and the network poller.
	"read", "write", "readv", "writev", "close", "fcntl", "fstat", "newfstatat", "lseek",
	"epoll_wait", "epoll_pwait", "epoll_ctl", "eventfd2", "pipe2",
	// Disks and entropy.
	"pread64", "pwrite64", "preadv", "pwritev", "fsync", "fdatasync", "getrandom",
	// Hybrid vsock: host connections in, guest connections out.
	"socket", "connect", "accept4", "getsockopt", "setsockopt", "getsockname", "getpeername",
	"shutdown", "recvfrom", "sendto", "recvmsg", "sendmsg", "unlinkat",
}

// SeccompPolicy is the allowlist [LockDown] installs: seccompSyscalls and
// ioctl with one of kvm.RunningIoctls; any other call fails with EPERM.
func SeccompPolicy() seccomp.Policy {
	var ioctls []seccomp.NameWithConditions
	for _, req := range kvm.RunningIoctls() {
		ioctls = append(ioctls, seccomp.NameWithConditions{
			Name:       "ioctl",
			Conditions: seccomp.ArgumentConditions{{Argument: 1, Operation: seccomp.Equal, Value: req}},
		})
	}
	return seccomp.Policy{
		DefaultAction: seccomp.ActionErrno,
		Syscalls: []seccomp.SyscallGroup{{
			Action:             seccomp.ActionAllow,
			Names:              seccompSyscalls,
			NamesWithCondtions: ioctls,
		}},
	}
}

// LockDown installs SeccompPolicy on every thread of the process (seccomp
// TSYNC) and sets no_new_privs. It cannot be undone: call it only in a
// process that runs one VM and then exits (Config.Seccomp makes Run call it
// once the VM is set up, before the first vCPU runs).
func LockDown() error {
	f := seccomp.Filter{NoNewPrivs: true, Flag: seccomp.FilterFlagTSync, Policy: SeccompPolicy()}
	if err := seccomp.LoadFilter(f); err != nil {
		return fmt.Errorf("vmm: install seccomp filter: %w", err)
	}
	return nil
}

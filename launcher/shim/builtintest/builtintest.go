// Package builtintest is the vm tier of the containerd runtime class on
// cvm's own VMM: real containerd 2.4 with containerd-shim-cvm-v2 configured
// for the builtin engine (shim option engine = "builtin"), driven by ctr and
// crictl. The builtin engine needs a /dev/kvm that runs guests, so the test
// (TestBuiltinShim) boots the QEMU TCG test host of package
// internal/testhost with its own /init (command
// launcher/shim/builtintest/ctrinit) and everything the runtime class needs
// in the test host's initramfs: containerd, ctr and crictl (static, from
// `make containerd-tools`), the shim and cvm-agent, the Debian 13 kernel
// with its module tree, mkfs.ext4 with its shared libraries, the shim's
// configuration and two OCI images built here (internal/ctrtest).
//
// Inside, /init loads kvm-amd, brings up loopback, mounts cgroup2 and runs
// this package's own test binary (go test -c) with -test.run
// TestInTestHost: a real containerd with every path under a tmpfs
// directory and the native snapshotter (internal/ctrtest), the images
// imported, and the cases run with ctr and crictl, each a subtest. /init
// prints the binary's outcome as a "CVMHOST: test {json}" line; the outer
// test reads every subtest's verdict from the console and fails each one
// that did not pass, with its output. The test host runs with
// testhost.BootOptions.Unfreeze: a freeze of the test host (QEMU 7.2 TCG
// losing a timer interrupt's wakeup at a nested boot, see
// docs/testing.md) is logged with QEMU's view of it and revived.
//
// Run it with `go test ./launcher/shim/builtintest
// -run TestBuiltinShim -v -timeout 40m` (-builtintest.log FILE keeps the test host's
// console). It needs qemu-system-x86_64, mkfs.ext4, the Debian 13 kernel
// with its module tree (`make test-inputs`) and containerd 2.4 with ctr and
// crictl (`make containerd-tools`), and skips naming what is missing.
package builtintest

// InitConfigPath is where ctrinit finds its InitConfig in the test host.
const InitConfigPath = "/etc/cvmtest/ctrinit.json"

// InitConfig tells ctrinit what to run once /dev/kvm works.
type InitConfig struct {
	// Test is the test binary to run, with Args; its output goes to the
	// console behind "T| ".
	Test string
	Args []string
	// Env is the test binary's whole environment.
	Env []string
	// ModuleParams are parameters of the modules ctrinit loads, by
	// module name (e.g. "kvm_amd": "vgif=0").
	ModuleParams map[string]string `json:",omitempty"`
}

// InsideEnv names the environment variable that gives the test binary,
// inside the test host, the path of its Inside configuration; without it,
// TestInTestHost skips.
const InsideEnv = "CVM_SHIM_BUILTINTEST_CONFIG"

// Inside is what TestInTestHost finds in the test host: where everything
// is.
type Inside struct {
	ContainerdBin string // holds containerd and ctr
	Crictl        string
	ShimDir       string // holds containerd-shim-cvm-v2 and cvm-agent
	ShimConfig    string // the shim's configuration (TOML): engine builtin, kernel, memory
	KernelRelease string // the guest kernel's release, which /proc/version in a container names
	ProgImage     string // OCI tarball of ProgImageName (internal/ctrtest/prog at /bin/prog)
	PauseImage    string // OCI tarball of PauseImageName (the same program, sleeping)
	// Cases are the subtests to run, by name (CaseCtrRun, ...); the
	// others are skipped.
	Cases []string
}

// The images' names.
const (
	ProgImageName  = "localhost/cvm-test/prog:1"
	PauseImageName = "localhost/cvm-test/pause:1"
)

// The cases of TestInTestHost, in the order they run.
const (
	CaseCtrRun   = "ctr_run"  // ctr run --rm: output and a zero exit code
	CaseCtrExit  = "ctr_exit" // ctr run --rm: a non-zero exit code comes back
	CaseDetached = "detached" // ctr run -d, task exec (output, exit code), kill, delete
	CaseCrictl   = "crictl"   // a CRI pod: two containers (hot-plugged disks), logs, exec, stop, rm
)

// Package builtintest is the vm tier of `cvm launch --engine builtin`: the
// launcher's success and denial cases on cvm's own VMM. The builtin engine
// needs a /dev/kvm that runs guests, so on a machine without one the test
// (TestBuiltinLaunch) boots the QEMU TCG test host of package
// internal/testhost with its own /init (command
// launcher/builtintest/launchinit) and everything a launch needs in the
// test host's initramfs: the cvm, cvm-kbs and cvm-agent binaries, the
// Debian 13 kernel and its module tree, a simulated TEE and a key broker's
// state, an encrypted disk holding internal/demo/hello and its key, and the
// measurement `cvm measure launch` computed on the outer machine.
//
// Inside, /init loads kvm-amd, brings up the test host's loopback, starts
// cvm-kbs on it, registers the measurement, the disk key and a policy with
// `cvm kbs`, runs each launch of its [Config] and prints each outcome as a
// "CVMHOST: launch {json}" line ([Result]); the outer test judges them. A
// launch built on one machine and measured on another must be accepted:
// that is what the success case proves.
//
// Run it with `go test ./launcher/builtintest -run TestBuiltinLaunch -v`
// (-builtintest.log FILE keeps the test host's console). It needs
// qemu-system-x86_64, mkfs.ext4 and the Debian 13 kernel with its module
// tree in .cache/inputs (`make test-inputs`), and skips naming what is
// missing. On a machine whose /dev/kvm is hardware-backed it still uses the
// test host: one path, the same everywhere.
package builtintest

// ConfigPath is where launchinit finds its Config in the test host.
const ConfigPath = "/etc/cvmtest/launch.json"

// LaunchWord is the word after testhost's "CVMHOST: " prefix of a line
// carrying one Result as JSON.
const LaunchWord = "launch"

// Config is what launchinit runs, in order.
type Config struct {
	// Env is added to the environment of every command.
	Env []string
	// Broker is the argv of the key broker, started in the background
	// and stopped (SIGTERM) at the end.
	Broker []string
	// Ready is an argv retried until it succeeds: the broker serves.
	Ready []string
	// Setup are commands run in order once the broker is ready; a
	// failure is fatal ("CVMHOST: fail").
	Setup [][]string
	// Cases are the launches; each gets one Result line.
	Cases []Case
}

// Case is one launch.
type Case struct {
	Name string
	Argv []string
	// StateDir is the launch's --state-dir: its logs are copied to the
	// console after the launch.
	StateDir string
}

// Result is what one launch did.
type Result struct {
	Name     string
	ExitCode int // -1: the command did not run or was killed
	Stdout   string
	Stderr   string
	Err      string `json:",omitempty"` // starting or waiting failed
	Seconds  float64
}

// Command cvm is the cvm command line: verify attestation evidence, run the
// simulated TEE, and (in later releases) measure, launch and manage
// confidential microVMs. It is wiring only: flags are parsed into option
// structs and handed to library packages.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// Exit codes: 0 success, 1 the operation ran and failed (for example the
// evidence did not verify), 2 the command was used wrongly.
const (
	exitFailure = 1
	exitUsage   = 2
)

// usageError marks errors that should exit with exitUsage.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	root := newRoot()
	err := root.ExecuteContext(ctx)
	stop()
	if err == nil {
		return
	}
	fmt.Fprintln(os.Stderr, "cvm:", err)
	var ue usageError
	if errors.As(err, &ue) {
		os.Exit(exitUsage)
	}
	os.Exit(exitFailure)
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "cvm",
		Short: "Confidential microVMs: attest, measure, launch",
		Long: `cvm runs workloads in KVM microVMs whose memory is encrypted by AMD SEV-SNP
or Intel TDX, and releases keys only to guests that prove by hardware
attestation that they run what their owner expects.

This release verifies attestation evidence (SEV-SNP, TDX, TPM) into claims
and provides a simulated TEE for development and CI.`,
		Example: `  # Verify a recorded SEV-SNP report offline, at a fixed time
  cvm attest verify --tee snp --report report.bin --certs vcek.der --offline --now 2025-01-01T00:00:00Z

  # Round trip through the simulated TEE
  cvm attest sim init --dir ./sim
  cvm attest sim report --dir ./sim --measurement $(printf 'ab%.0s' {1..48}) --report-data 01 --out r.bin
  cvm attest sim certs --dir ./sim --out vcek.pem
  cvm attest verify --tee sim --report r.bin --certs vcek.pem --sim-root ./sim/root.pem`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.ArbitraryArgs,
		RunE:          groupRun,
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError{fmt.Errorf("%w (see '%s --help')", err, c.CommandPath())}
	})
	root.AddCommand(newVersion(), newAttest(), newKBS(), newMeasure(), newVM(), newLaunch(), newImage())
	return root
}

func newVersion() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of cvm",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			v := version
			if bi, ok := debug.ReadBuildInfo(); ok && v == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
				v = bi.Main.Version
			}
			fmt.Fprintf(c.OutOrStdout(), "cvm %s (%s, %s/%s)\n", v, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return nil
		},
	}
}

// groupRun is the RunE of a command that only groups subcommands: alone it
// prints its help; followed by anything that is not one of its subcommands
// it is a usage error. (Left to cobra, "cvm bogus" would exit 1 and
// "cvm attest bogus" would print the help and exit 0.) Groups set Args to
// cobra.ArbitraryArgs so that the argument reaches groupRun.
func groupRun(c *cobra.Command, args []string) error {
	if len(args) == 0 {
		return c.Help()
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], c.CommandPath())
	if c.SuggestionsMinimumDistance <= 0 {
		c.SuggestionsMinimumDistance = 2 // cobra's default for its own suggestions
	}
	if s := c.SuggestionsFor(args[0]); len(s) > 0 {
		msg += fmt.Sprintf(" (did you mean %q?)", s[0])
	}
	return usageError{fmt.Errorf("%s (see '%s --help')", msg, c.CommandPath())}
}

// noArgs rejects positional arguments with a usage error.
func noArgs(c *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("%s takes no arguments, got %q (see '%s --help')", c.CommandPath(), args, c.CommandPath())}
	}
	return nil
}

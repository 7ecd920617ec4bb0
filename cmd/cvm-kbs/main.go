// Command cvm-kbs is the cvm key broker daemon: `init` creates its CA,
// certificates, keys and configuration; `serve` runs it until SIGTERM. It is
// wiring only; the broker is package kbs.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/greatjail/cvm/kbs/kbscmd"
	"github.com/spf13/cobra"
)

var version = "dev"

type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usage(err error) error {
	if errors.Is(err, kbscmd.ErrUsage) {
		return usageError{err}
	}
	return err
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRoot().ExecuteContext(ctx)
	stop()
	if err == nil {
		return
	}
	fmt.Fprintln(os.Stderr, "cvm-kbs:", err)
	var ue usageError
	if errors.As(err, &ue) {
		os.Exit(2)
	}
	os.Exit(1)
}

func noArgs(c *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("%s takes no arguments, got %q", c.CommandPath(), args)}
	}
	return nil
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "cvm-kbs",
		Short: "The cvm key broker: releases keys only to attested guests",
		Long: `cvm-kbs verifies a guest's hardware evidence (SEV-SNP, TDX, TPM, or the
simulated TEE when configured), appraises it against reference values and
per-resource release rules, and releases resources sealed with HPKE to the
guest's attested key. TLS always; the admin API needs a client certificate
from the broker's CA (role admin or auditor).`,
		Example: `  cvm-kbs init --dir /etc/cvm-kbs --listen 127.0.0.1:8443
  cvm-kbs serve --config /etc/cvm-kbs/kbs.yaml
  cvm kbs --admin-config /etc/cvm-kbs/admin.yaml resource list`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError{fmt.Errorf("%w (see '%s --help')", err, c.CommandPath())}
	})

	var io kbscmd.InitOptions
	initCmd := &cobra.Command{
		Use:   "init --dir DIR [--listen ADDR] [--sim-root FILE]",
		Short: "Create a broker: CA, server and client certificates, keys, kbs.yaml, admin.yaml",
		Long: `init creates DIR with everything a broker needs: a CA (ca.pem), the server
certificate, admin and auditor client certificates, the key-encryption key
that encrypts resources at rest, the token signing key, the challenge key,
kbs.yaml (the server's configuration) and admin.yaml / auditor.yaml (what
'cvm kbs' needs). With --sim-root the broker trusts that simulated-TEE root;
without it, simulated evidence is denied. It never overwrites an existing
broker, and on failure removes what it wrote.`,
		Example: `  cvm-kbs init --dir ./kbs --listen 127.0.0.1:8443 --sim-root ./sim/root.pem`,
		Args:    noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			io.Out = c.OutOrStdout()
			return usage(kbscmd.Init(io))
		},
	}
	initCmd.Flags().StringVar(&io.Dir, "dir", "", "directory to create the broker in")
	initCmd.Flags().StringVar(&io.Listen, "listen", "127.0.0.1:8443", "address the broker will listen on (host:port)")
	initCmd.Flags().StringVar(&io.SimRoot, "sim-root", "", "simulated-TEE root.pem to trust (development and CI only)")

	var cfg string
	serve := &cobra.Command{
		Use:     "serve --config FILE",
		Short:   "Serve until SIGTERM or SIGINT, then shut down cleanly",
		Example: `  cvm-kbs serve --config ./kbs/kbs.yaml`,
		Args:    noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return usage(kbscmd.Serve(c.Context(), cfg, c.ErrOrStderr(), nil))
		},
	}
	serve.Flags().StringVar(&cfg, "config", "", "the kbs.yaml written by init")

	var rcfg string
	rotate := &cobra.Command{
		Use:   "rotate-kek --config FILE",
		Short: "Re-encrypt every resource under the first KEK in kek_files (broker stopped)",
		Long: `Key-encryption-key rotation (docs/kbs.md): put the new KEK file first in
kek_files with the old one after it, stop the broker, run rotate-kek, start
the broker, then remove the old KEK from kek_files.`,
		Example: `  openssl rand -hex 32 > kbs/kek-2.key && chmod 600 kbs/kek-2.key
  # kbs.yaml: kek_files: [kek-2.key, kek.key]
  cvm-kbs rotate-kek --config kbs/kbs.yaml`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return usage(kbscmd.RotateKEK(c.Context(), rcfg, c.OutOrStdout()))
		},
	}
	rotate.Flags().StringVar(&rcfg, "config", "", "the kbs.yaml written by init")
	root.AddCommand(initCmd, serve, rotate)
	return root
}

package main

import (
	"errors"
	"fmt"

	"github.com/greatjail/cvm/kbs/kbscmd"
	"github.com/spf13/cobra"
)

func kbsErr(err error) error {
	if errors.Is(err, kbscmd.ErrUsage) {
		return usageError{err}
	}
	return err
}

func newKBS() *cobra.Command {
	var adminConfig string
	c := &cobra.Command{
		Use:   "kbs",
		Short: "Administer a key broker; fetch a resource as a guest",
		Long: `Operator commands talk to a broker with the client certificate named in
admin.yaml (written by 'cvm-kbs init'); an auditor.yaml allows only reads.
'fetch' is the guest side: attest with the platform's evidence (or the
simulated TEE) and receive a resource sealed to an ephemeral key.`,
		Example: `  cvm kbs --admin-config kbs/admin.yaml resource put repo/key/disk --file disk.key
  cvm kbs --admin-config kbs/admin.yaml refvalue add --tee sim --measurement $M
  cvm kbs fetch --addr 127.0.0.1:8443 --ca kbs/ca.pem --resource repo/key/disk --tee sim --sim-dir sim --measurement $M`,
		Args: cobra.ArbitraryArgs,
		RunE: groupRun,
	}
	c.PersistentFlags().StringVar(&adminConfig, "admin-config", "", "admin.yaml (or auditor.yaml) written by 'cvm-kbs init'")

	// withAdmin runs fn with an admin client connected per --admin-config.
	withAdmin := func(fn func(c *cobra.Command, a *kbscmd.Admin, args []string) error) func(*cobra.Command, []string) error {
		return func(c *cobra.Command, args []string) error {
			conn, err := kbscmd.DialAdmin(adminConfig)
			if err != nil {
				return kbsErr(err)
			}
			defer conn.Close()
			return kbsErr(fn(c, &kbscmd.Admin{Conn: conn, Out: c.OutOrStdout()}, args))
		}
	}
	group := func(use, short string) *cobra.Command {
		return &cobra.Command{Use: use, Short: short, Args: cobra.ArbitraryArgs, RunE: groupRun}
	}

	resource := group("resource", "Resources (secrets released to attested guests)")
	var file string
	put := &cobra.Command{Use: "put NAME --file F", Short: "Store F as a new version of NAME", Args: exactArgs(1),
		Example: "  cvm kbs --admin-config admin.yaml resource put repo/key/disk --file disk.key",
		RunE: withAdmin(func(c *cobra.Command, a *kbscmd.Admin, args []string) error {
			return a.ResourcePut(c.Context(), args[0], file)
		})}
	put.Flags().StringVar(&file, "file", "", "file holding the resource (at most 1 MiB)")
	list := &cobra.Command{Use: "list", Short: "List resources", Args: noArgs,
		Example: "  cvm kbs --admin-config admin.yaml resource list",
		RunE:    withAdmin(func(c *cobra.Command, a *kbscmd.Admin, _ []string) error { return a.ResourceList(c.Context()) })}
	rm := &cobra.Command{Use: "rm NAME", Short: "Delete every version of NAME", Args: exactArgs(1),
		Example: "  cvm kbs --admin-config admin.yaml resource rm repo/key/disk",
		RunE: withAdmin(func(c *cobra.Command, a *kbscmd.Admin, args []string) error {
			return a.ResourceRemove(c.Context(), args[0])
		})}
	resource.AddCommand(put, list, rm)

	pol := group("policy", "Release rules (CEL over claims and appraisal)")
	var pfile, claims, res string
	pset := &cobra.Command{Use: "set NAME --file F", Short: "Set the release rule of resource NAME", Args: exactArgs(1),
		Example: `  echo 'appraisal.status == "affirming" && claims.tee == "snp"' > rule.cel
  cvm kbs --admin-config admin.yaml policy set repo/key/disk --file rule.cel`,
		RunE: withAdmin(func(c *cobra.Command, a *kbscmd.Admin, args []string) error {
			return a.PolicySet(c.Context(), args[0], pfile)
		})}
	pset.Flags().StringVar(&pfile, "file", "", "file holding the CEL expression")
	pget := &cobra.Command{Use: "get NAME", Short: "Print the release rule of NAME", Args: exactArgs(1),
		Example: "  cvm kbs --admin-config admin.yaml policy get repo/key/disk",
		RunE:    withAdmin(func(c *cobra.Command, a *kbscmd.Admin, args []string) error { return a.PolicyGet(c.Context(), args[0]) })}
	peval := &cobra.Command{Use: "eval --resource NAME --claims F", Short: "Dry run: the decision for the claims in F and every rule that decided it", Args: noArgs,
		Example: `  cvm attest verify --tee sim --report r.bin --certs vcek.pem --sim-root root.pem > claims.json
  cvm kbs --admin-config admin.yaml policy eval --resource repo/key/disk --claims claims.json`,
		RunE: withAdmin(func(c *cobra.Command, a *kbscmd.Admin, _ []string) error {
			return a.PolicyEval(c.Context(), res, claims)
		})}
	peval.Flags().StringVar(&res, "resource", "", "resource whose rule to evaluate")
	peval.Flags().StringVar(&claims, "claims", "", "claims JSON, as 'cvm attest verify' prints")
	pol.AddCommand(pset, pget, peval)

	rv := group("refvalue", "Reference values (accepted measurements)")
	var tee, meas, note string
	rvadd := &cobra.Command{Use: "add --tee snp|tdx|sim --measurement HEX", Short: "Accept a launch measurement (SEV-SNP MEASUREMENT, TDX MRTD)", Args: noArgs,
		Example: "  cvm kbs --admin-config admin.yaml refvalue add --tee snp --measurement $(cvm measure snp --firmware OVMF.fd --vcpus 1 --vcpu-type EPYC-v4 --guest-features 0x1 --vmm-type qemu)",
		RunE: withAdmin(func(c *cobra.Command, a *kbscmd.Admin, _ []string) error {
			return a.RefValueAdd(c.Context(), tee, meas, note)
		})}
	rvadd.Flags().StringVar(&tee, "tee", "", "snp, tdx or sim")
	rvadd.Flags().StringVar(&meas, "measurement", "", "96 hex digits")
	rvadd.Flags().StringVar(&note, "note", "", "free text recorded with the value")
	rvimport := &cobra.Command{Use: "import FILE", Short: "Accept the measurements in a 'cvm measure --json' document", Args: exactArgs(1),
		Example: "  cvm measure tdx --firmware OVMF.fd --json > mrtd.json\n  cvm kbs --admin-config admin.yaml refvalue import mrtd.json",
		RunE: withAdmin(func(c *cobra.Command, a *kbscmd.Admin, args []string) error {
			return a.RefValueImport(c.Context(), args[0])
		})}
	rvlist := &cobra.Command{Use: "list", Short: "List reference values and requirements", Args: noArgs,
		Example: "  cvm kbs --admin-config auditor.yaml refvalue list",
		RunE:    withAdmin(func(c *cobra.Command, a *kbscmd.Admin, _ []string) error { return a.RefValueList(c.Context()) })}
	rvrm := &cobra.Command{Use: "rm ID", Short: "Delete a reference value (IDs as 'refvalue list' shows)", Args: exactArgs(1),
		Example: "  cvm kbs --admin-config admin.yaml refvalue rm rv-3",
		RunE: withAdmin(func(c *cobra.Command, a *kbscmd.Admin, args []string) error {
			return a.RefValueRemove(c.Context(), args[0])
		})}
	var reqFile string
	rvreq := &cobra.Command{Use: "requirements --file F", Short: "Set one TEE's appraisal requirements (minimum TCB, TDX statuses, ...)", Args: noArgs,
		Example: "  cvm kbs --admin-config admin.yaml refvalue requirements --file snp-requirements.json",
		Long: `F is JSON: {"tee": "snp", "min_tcb": {"Milan": {"bootloader": 3, "tee": 0, "snp": 20, "microcode": 209}},
"allowed_tdx_tcb_statuses": ["UpToDate"], "require_fresh_collateral": true,
"accept_unchecked": ["crl"], "min_guest_svn": 1}; fields that do not apply to
the TEE are refused. Both the committed and the launch TCB must meet min_tcb.`,
		RunE: withAdmin(func(c *cobra.Command, a *kbscmd.Admin, _ []string) error {
			return a.RequirementsSet(c.Context(), reqFile)
		})}
	rvreq.Flags().StringVar(&reqFile, "file", "", "requirements JSON")
	rv.AddCommand(rvadd, rvimport, rvlist, rvrm, rvreq)

	au := group("audit", "The append-only, hash-chained audit log")
	var n int
	tail := &cobra.Command{Use: "tail [-n N]", Short: "Print the last N records as JSON lines", Args: noArgs,
		Example: "  cvm kbs --admin-config auditor.yaml audit tail -n 50",
		RunE:    withAdmin(func(c *cobra.Command, a *kbscmd.Admin, _ []string) error { return a.AuditTail(c.Context(), n) })}
	tail.Flags().IntVarP(&n, "n", "n", 20, "number of records")
	verify := &cobra.Command{Use: "verify", Short: "Check the whole chain; exit 1 if any record was edited, removed or reordered", Args: noArgs,
		Example: "  cvm kbs --admin-config auditor.yaml audit verify",
		RunE:    withAdmin(func(c *cobra.Command, a *kbscmd.Admin, _ []string) error { return a.AuditVerify(c.Context()) })}
	au.AddCommand(tail, verify)

	var fo kbscmd.FetchOptions
	fetch := &cobra.Command{
		Use:   "fetch --addr HOST:PORT --ca FILE --resource NAME --tee sim|snp|tdx [flags]",
		Short: "As a guest: attest and receive a resource",
		Long: `fetch runs the guest side of the protocol, the same code the guest agent
uses: challenge, an ephemeral key, evidence binding both (from the
platform's report device for snp/tdx, or signed by the simulated TEE in
--sim-dir), attest, and the resource sealed to the ephemeral key. It writes
the resource to --out or stdout and exits 0; a denial exits 1.`,
		Example: `  cvm kbs fetch --addr 127.0.0.1:8443 --ca kbs/ca.pem --resource repo/key/disk \
      --tee sim --sim-dir ./sim --measurement $M --out disk.key`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			fo.Stdout = c.OutOrStdout()
			err := kbscmd.Fetch(c.Context(), fo)
			if errors.Is(err, kbscmd.ErrDenied) {
				return fmt.Errorf("%w: the broker refused this guest; its operator can see why in the audit log ('cvm kbs audit tail')", err)
			}
			return kbsErr(err)
		},
	}
	ff := fetch.Flags()
	ff.StringVar(&fo.Addr, "addr", "", "broker address, host:port")
	ff.StringVar(&fo.CA, "ca", "", "the broker's CA certificate (PEM); nothing else is trusted")
	ff.StringVar(&fo.Resource, "resource", "", "resource name")
	ff.StringVar(&fo.TEE, "tee", "", "sim, snp or tdx")
	ff.StringVar(&fo.SimDir, "sim-dir", "", "simulated-TEE directory (with --tee sim)")
	ff.StringVar(&fo.Measurement, "measurement", "", "launch measurement the simulated TEE reports, 96 hex digits (with --tee sim)")
	ff.BoolVar(&fo.Debug, "policy-debug", false, "simulate a debug-enabled guest (with --tee sim)")
	ff.StringVar(&fo.Out, "out", "", "write the resource to this file (mode 0600) instead of stdout")

	c.AddCommand(resource, pol, rv, au, fetch)
	return c
}

func exactArgs(n int) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if len(args) != n {
			return usageError{fmt.Errorf("%s takes %d argument(s), got %d (see '%s --help')", c.CommandPath(), n, len(args), c.CommandPath())}
		}
		return nil
	}
}

package main

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/greatjail/cvm/attestation/attestcmd"
	"github.com/spf13/cobra"
)

func newAttest() *cobra.Command {
	c := &cobra.Command{
		Use:   "attest",
		Short: "Verify attestation evidence; run the simulated TEE",
		Long: `Verify SEV-SNP reports, TDX quotes and TPM quotes into normalized claims
(docs/claims.md), and manage the simulated TEE used for development and CI.`,
		Args: cobra.ArbitraryArgs,
		RunE: groupRun,
	}
	c.AddCommand(newAttestVerify(), newAttestSim(), newAttestCache(), newAttestCollateral())
	return c
}

func newAttestVerify() *cobra.Command {
	var o attestcmd.VerifyOptions
	var now string
	c := &cobra.Command{
		Use:   "verify --tee snp|tdx|tpm|sim --report FILE [flags]",
		Short: "Verify evidence and print its claims as JSON",
		Long: `Verify checks every signature and certificate chain of the evidence against
pinned roots (AMD ARK/ASK/ASVK for Milan, Genoa and Turin; the Intel SGX Root
CA; the TPM attestation keys you trust; the sim root you name) and prints the
claims as one JSON object on stdout (exit 0). On any failed check it prints
the reason on stderr and exits 1. Usage errors exit 2.

Evidence files:
  snp, sim  raw ATTESTATION_REPORT (1184 bytes), optionally followed by the
            certificate table of an extended report
  tdx       raw quote (version 4); its PCK chain is embedded, no --certs needed
  tpm       JSON cvm.attestation.v1.Evidence document (report = TPMS_ATTEST,
            signature, ak_public, pcrs, event_log, base64 as protojson)

Offline, checks that only add assurance and whose material is missing (an
SEV-SNP CRL, TDX collateral) are listed under "unchecked" in the claims and
left to policy; for TDX the tcb_status is then "unknown".`,
		Example: `  cvm attest verify --tee snp --report report.bin --certs vcek.der --offline
  cvm attest verify --tee snp --report report.bin --cert-cache /var/cache/cvm/kds --offline
  cvm attest verify --tee tdx --report quote.dat --collateral ./collateral --now 2023-07-01T01:00:00Z
  cvm attest verify --tee tpm --report quote.json --ak ak.pem   # no --ak: nothing is trusted
  cvm attest verify --tee sim --report r.bin --certs vcek.pem --sim-root ./sim/root.pem`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if o.TEE == "" {
				return usageError{errors.New("--tee is required: snp, tdx, tpm or sim")}
			}
			if o.Report == "" {
				return usageError{errors.New("--report FILE is required")}
			}
			o.Now = time.Now()
			if now != "" {
				t, err := time.Parse(time.RFC3339, now)
				if err != nil {
					return usageError{fmt.Errorf("--now: want RFC 3339 time such as 2025-01-31T12:00:00Z: %w", err)}
				}
				o.Now = t
			}
			o.HTTPClient = &http.Client{Timeout: 30 * time.Second}
			claims, err := attestcmd.Verify(c.Context(), o)
			if err != nil {
				if errors.Is(err, attestcmd.ErrUsage) {
					return usageError{err}
				}
				return fmt.Errorf("verification failed: %w", err)
			}
			enc := json.NewEncoder(c.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(claims)
		},
	}
	f := c.Flags()
	f.StringVar(&o.TEE, "tee", "", "evidence kind: snp, tdx, tpm or sim")
	f.StringVar(&o.Report, "report", "", "evidence file (see above)")
	f.StringArrayVar(&o.Certs, "certs", nil, "certificate file, PEM or DER (repeatable): SEV-SNP VCEK/VLEK/ASK/ARK (TDX quotes carry their PCK chain)")
	f.StringVar(&o.Collateral, "collateral", "", "TDX collateral directory (see docs/attestation.md for the layout)")
	f.StringVar(&o.SimRoot, "sim-root", "", "root.pem of a simulated TEE (required and only valid with --tee sim)")
	f.StringArrayVar(&o.AKs, "ak", nil, "PEM public key of a trusted TPM attestation key (repeatable; tpm only)")
	f.StringVar(&o.EventLog, "event-log", "", "TPM event log file (overrides the one in the evidence)")
	f.StringVar(&now, "now", "", "verification time, RFC 3339 (default: the current time)")
	f.BoolVar(&o.Offline, "offline", false, "never use the network; certificates come from the evidence, --certs and --cert-cache")
	f.StringVar(&o.CertCache, "cert-cache", "", "SEV-SNP certificate cache directory (seed it with 'cvm attest cache seed')")
	f.BoolVar(&o.CheckRevocations, "check-revocations", false, "check CRLs (SEV-SNP ASK via AMD KDS or the cache; TDX PCK via collateral)")
	f.StringVar(&o.PCSURL, "pcs-url", "https://api.trustedservices.intel.com", "Intel PCS or PCCS base URL for TDX collateral when online")
	return c
}

func newAttestSim() *cobra.Command {
	c := &cobra.Command{
		Use:   "sim",
		Short: "The simulated TEE (development and CI only)",
		Long: `The simulated TEE plays AMD's PSP: it holds a signing chain made for this
installation (ARK and ASK RSA-4096, VCEK ECDSA P-384, as AMD's) and signs
SEV-SNP format reports. Verifiers accept them only when given the sim root
explicitly, and the claims say "tee": "sim", never "snp".`,
		Args: cobra.ArbitraryArgs,
		RunE: groupRun,
	}
	var dir string
	initCmd := &cobra.Command{
		Use:     "init --dir DIR",
		Short:   "Create a simulated-TEE signing chain in DIR",
		Example: "  cvm attest sim init --dir ./sim",
		Args:    noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if dir == "" {
				return usageError{errors.New("--dir is required")}
			}
			fmt.Fprintln(c.ErrOrStderr(), "generating RSA-4096 ARK and ASK keys and a P-384 VCEK (takes a few seconds)...")
			root, err := attestcmd.SimInit(dir, rand.Reader, time.Now())
			if err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "%s\n", root)
			return nil
		},
	}
	initCmd.Flags().StringVar(&dir, "dir", "", "directory to create (must not hold an authority already)")

	var ro attestcmd.SimReportOptions
	report := &cobra.Command{
		Use:     "report --dir DIR --measurement HEX --report-data HEX --out FILE",
		Short:   "Sign an SEV-SNP format report with the simulated TEE",
		Example: "  cvm attest sim report --dir ./sim --measurement $(printf '00%.0s' {1..48}) --report-data 0102 --out r.bin",
		Args:    noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := attestcmd.SimReport(ro); err != nil {
				if errors.Is(err, attestcmd.ErrUsage) {
					return usageError{err}
				}
				return err
			}
			return nil
		},
	}
	rf := report.Flags()
	rf.StringVar(&ro.Dir, "dir", "", "simulated-TEE directory made by 'sim init'")
	rf.StringVar(&ro.Measurement, "measurement", "", "launch measurement, 96 hex digits")
	rf.StringVar(&ro.ReportData, "report-data", "", "REPORT_DATA, up to 128 hex digits, zero-padded")
	rf.StringVar(&ro.HostData, "host-data", "", "HOST_DATA, up to 64 hex digits, zero-padded")
	rf.BoolVar(&ro.Debug, "policy-debug", false, "set the guest policy DEBUG bit")
	rf.StringVar(&ro.Out, "out", "", "file to write the 1184-byte report to")

	var cdir, out string
	certs := &cobra.Command{
		Use:     "certs --dir DIR --out FILE",
		Short:   "Write the simulated VCEK certificate (PEM)",
		Example: "  cvm attest sim certs --dir ./sim --out vcek.pem",
		Args:    noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if err := attestcmd.SimCerts(cdir, out); err != nil {
				if errors.Is(err, attestcmd.ErrUsage) {
					return usageError{err}
				}
				return err
			}
			return nil
		},
	}
	certs.Flags().StringVar(&cdir, "dir", "", "simulated-TEE directory made by 'sim init'")
	certs.Flags().StringVar(&out, "out", "", "file to write the VCEK certificate to")
	c.AddCommand(initCmd, report, certs)
	return c
}

func newAttestCache() *cobra.Command {
	c := &cobra.Command{
		Use:   "cache",
		Short: "Manage the offline SEV-SNP certificate cache",
		Long: `Verifiers fetch VCEK certificates from AMD's key distribution service by
chip ID and TCB. Hosts that verify offline keep them in a cache directory
(layout in docs/attestation.md); 'seed' stores certificates there.`,
		Args: cobra.ArbitraryArgs,
		RunE: groupRun,
	}
	var dir, report string
	var certs []string
	seed := &cobra.Command{
		Use:   "seed --cache DIR --report FILE --certs FILE...",
		Short: "Store the VCEK (and ASK/ARK) that verify REPORT in the cache",
		Example: `  cvm attest cache seed --cache /var/cache/cvm/kds --report report.bin --certs vcek.der
  cvm attest verify --tee snp --report report.bin --cert-cache /var/cache/cvm/kds --offline`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			paths, err := attestcmd.SeedCache(dir, report, certs)
			if err != nil {
				if errors.Is(err, attestcmd.ErrUsage) {
					return usageError{err}
				}
				return err
			}
			for _, p := range paths {
				if rel, err := filepath.Rel(dir, p); err == nil {
					p = filepath.Join(dir, rel)
				}
				fmt.Fprintln(c.OutOrStdout(), p)
			}
			return nil
		},
	}
	seed.Flags().StringVar(&dir, "cache", defaultCacheDir(), "cache directory")
	seed.Flags().StringVar(&report, "report", "", "SEV-SNP report the certificates belong to")
	seed.Flags().StringArrayVar(&certs, "certs", nil, "certificate file, PEM or DER (repeatable)")
	c.AddCommand(seed)
	return c
}

func defaultCacheDir() string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "cvm", "amd-kds")
	}
	return ""
}

func newAttestCollateral() *cobra.Command {
	c := &cobra.Command{
		Use:   "collateral",
		Short: "Manage TDX collateral for offline verification",
		Long: `TDX verification evaluates the platform's TCB against Intel's collateral
(TCB info, QE identity, CRLs). Hosts that verify offline keep it in a
directory (layout in docs/attestation.md); 'fetch' fills one from Intel PCS
or a PCCS. Collateral expires within about a month: refresh it regularly.`,
		Args: cobra.ArbitraryArgs,
		RunE: groupRun,
	}
	var o attestcmd.FetchCollateralOptions
	fetch := &cobra.Command{
		Use:   "fetch --report QUOTE --dir DIR [--pcs-url URL]",
		Short: "Fetch collateral for the platform that produced QUOTE into DIR",
		Example: `  cvm attest collateral fetch --report quote.dat --dir /var/cache/cvm/tdx
  cvm attest verify --tee tdx --report quote.dat --collateral /var/cache/cvm/tdx --offline`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			o.Now = time.Now()
			o.HTTPClient = &http.Client{Timeout: 30 * time.Second}
			fmspc, ca, err := attestcmd.FetchCollateral(c.Context(), o)
			if err != nil {
				if errors.Is(err, attestcmd.ErrUsage) {
					return usageError{err}
				}
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "%s: collateral for FMSPC %s (PCK %s CA)\n", o.Dir, fmspc, ca)
			return nil
		},
	}
	f := fetch.Flags()
	f.StringVar(&o.Report, "report", "", "a TDX quote from the platform")
	f.StringVar(&o.Dir, "dir", "", "directory to store the collateral in")
	f.StringVar(&o.PCSURL, "pcs-url", "https://api.trustedservices.intel.com", "Intel PCS or PCCS base URL")
	c.AddCommand(fetch)
	return c
}

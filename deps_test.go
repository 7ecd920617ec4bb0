package cvm

import (
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// linkRule says what a package or binary must never link.
type linkRule struct {
	pkg string // relative import path, e.g. "./cmd/cvm-agent"
	// missingOK names why the package may not exist yet; the rule then skips.
	missingOK string
	// forbidden are import paths (or prefixes ending in "/") never to link.
	forbidden []string
	// stdOnly requires that everything linked is in the standard library.
	stdOnly bool
}

const mod = "github.com/greatjail/cvm/"

// Fakes and test helpers live in packages named ...test; production
// binaries never link them, nor the standard testing package (whose
// presence would also mean test flags in the binary).
var testOnly = []string{"testing", "github.com/google/go-sev-guest/testing", "github.com/google/go-tdx-guest/testing"}

// verifiers check evidence; a guest produces it and never links them.
var verifiers = []string{mod + "attestation/sevsnp", mod + "attestation/tdx", mod + "attestation/tpm", mod + "attestation/sim"}

// brokerSide is the key broker and its server-side parts; a guest links only
// the protocol pieces it shares (kbs/seal, kbs/client).
var brokerSide = []string{
	mod + "kbs", mod + "kbs/store", mod + "kbs/store/", mod + "kbs/audit", mod + "kbs/resources",
	mod + "kbs/challenge", mod + "kbs/token", mod + "kbs/pki", mod + "kbs/config", mod + "policy", mod + "policy/",
}

var linkRules = []linkRule{
	{
		// The guest agent runs inside the TEE: it produces evidence but must
		// not contain verifiers, the broker, the VMM or the launcher, and
		// never any fake.
		pkg: "./cmd/cvm-agent",
		forbidden: slices.Concat(verifiers, brokerSide, testOnly, []string{
			mod + "attestation/attestcmd", mod + "vmm", mod + "vmm/", mod + "launcher", mod + "launcher/",
			"github.com/google/go-sev-guest/verify", "github.com/google/go-tdx-guest/verify",
		}),
	},
	{
		// The guest side of the broker protocol: the agent will link it.
		pkg:       "./kbs/client",
		forbidden: slices.Concat(verifiers, brokerSide, testOnly),
	},
	{
		pkg:       "./cmd/cvm",
		forbidden: append([]string{mod + "attestation/tpm/tpmtest", mod + "kbs/store/storetest"}, testOnly...),
	},
	{
		// The shim containerd runs: never a test fixture (the host-side
		// sandbox of shimtest, the VM test shims, the containerd harness).
		pkg: "./cmd/containerd-shim-cvm-v2",
		forbidden: append([]string{mod + "launcher/shim/shimtest", mod + "launcher/shim/vmtest", mod + "internal/ctrtest",
			mod + "attestation/tpm/tpmtest", mod + "kbs/store/storetest"}, testOnly...),
	},
	{
		pkg:       "./cmd/cvm-kbs",
		forbidden: append([]string{mod + "kbs/store/storetest"}, testOnly...),
	},
	{
		// Shared by the guest agent and the broker: standard library only.
		pkg:     "./attestation/runtimedata",
		stdOnly: true,
	},
}

func TestLinkRules(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is not on PATH (go test itself needs it): %v", err)
	}
	for _, r := range linkRules {
		t.Run(strings.TrimPrefix(r.pkg, "./"), func(t *testing.T) {
			if _, err := os.Stat(r.pkg); os.IsNotExist(err) {
				if r.missingOK == "" {
					t.Fatalf("%s does not exist", r.pkg)
				}
				t.Skip(r.missingOK)
			}
			out, err := exec.Command(goBin, "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", r.pkg).CombinedOutput()
			if err != nil {
				t.Fatalf("go list -deps %s: %v\n%s", r.pkg, err, out)
			}
			stdOut, err := exec.Command(goBin, "list", "-deps", "-f", "{{if .Standard}}{{.ImportPath}}{{end}}", r.pkg).CombinedOutput()
			if err != nil {
				t.Fatalf("go list -deps %s: %v\n%s", r.pkg, err, stdOut)
			}
			deps := strings.Fields(string(out)) // non-standard, including r.pkg itself
			std := strings.Fields(string(stdOut))
			self := mod + strings.TrimPrefix(r.pkg, "./")
			for _, d := range append(deps, std...) {
				for _, f := range r.forbidden {
					if d == f || (strings.HasSuffix(f, "/") && strings.HasPrefix(d, f)) {
						t.Errorf("%s links %s, which it must never link", r.pkg, d)
					}
				}
			}
			if r.stdOnly {
				for _, d := range deps {
					if d != self {
						t.Errorf("%s links non-standard package %s; it must use the standard library only", r.pkg, d)
					}
				}
			}
		})
	}
}

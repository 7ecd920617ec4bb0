package shim

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/guest-agent/launchconfig"
	"github.com/greatjail/cvm/kbs/resources"
	"github.com/greatjail/cvm/launcher/shim/rootimage"
)

// The annotations of the pod's first task (for CRI, the pause container's,
// which carries the pod annotations containerd's pod_annotations lets
// through) that configure its microVM.
const (
	AnnotationVCPUs  = "io.cvm.vcpus"  // 1..64; default 1
	AnnotationMemory = "io.cvm.memory" // <n>M or <n>G, 128M..64G; default 512M
	AnnotationKernel = "io.cvm.kernel" // absolute path of a bzImage; default kernel.Default()
	AnnotationTEE    = "io.cvm.tee"    // none (default), sim, snp, tdx
	AnnotationRootfs = "io.cvm.rootfs" // ext4 (default) or erofs: the root image format
	AnnotationEngine = "io.cvm.engine" // qemu (default), builtin or auto: the VMM (engine.Select)
	// A confidential pod's key broker: HOST:PORT as the host reaches it,
	// its CA certificate file (PEM, measured into the pod's launch
	// configuration), the resource the guest fetches to prove it was
	// accepted, and (tee sim) the simulated TEE's directory.
	AnnotationKBS      = "io.cvm.kbs"
	AnnotationKBSCA    = "io.cvm.kbs-ca"
	AnnotationResource = "io.cvm.resource"
	AnnotationSimDir   = "io.cvm.sim-dir"
)

// VMOptions are a pod's microVM settings from its annotations. Zero
// values mean the defaults.
type VMOptions struct {
	VCPUs  int
	Memory uint64 // bytes
	Kernel string
	TEE    attestation.TEE
	Format rootimage.Format
	// Engine is the VMM that runs the pod: EngineQEMU, EngineBuiltin or
	// EngineAuto; "" means DefaultEngine.
	Engine string
	// KBS, KBSCA (a file), Resource and SimDir (a directory) configure a
	// confidential pod's attestation (tee sim, snp, tdx).
	KBS, KBSCA, Resource, SimDir string
}

// The values of AnnotationEngine (and the runtime option engine): the
// engine.Select names. DefaultEngine is the one used when neither is set.
const (
	EngineQEMU    = "qemu"
	EngineBuiltin = "builtin"
	EngineAuto    = "auto"
	DefaultEngine = EngineQEMU
)

// checkConfidential checks that a confidential pod has what it needs and
// a plain one has no broker settings.
func (o VMOptions) checkConfidential() error {
	if o.TEE == "" || o.TEE == launchconfig.TEENone {
		if o.KBS != "" || o.KBSCA != "" || o.Resource != "" || o.SimDir != "" {
			return fmt.Errorf("shim: kbs, kbs_ca, resource and sim_dir (%s, %s, %s, %s) are for a confidential pod; set %s to sim, snp or tdx",
				AnnotationKBS, AnnotationKBSCA, AnnotationResource, AnnotationSimDir, AnnotationTEE)
		}
		return nil
	}
	var missing []string
	for _, f := range []struct{ v, name string }{
		{o.KBS, AnnotationKBS}, {o.KBSCA, AnnotationKBSCA}, {o.Resource, AnnotationResource},
	} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if o.TEE == attestation.TEESim && o.SimDir == "" {
		missing = append(missing, AnnotationSimDir)
	}
	if len(missing) > 0 {
		return fmt.Errorf("shim: a confidential pod (tee %s) needs %s (as annotations or runtime options)", o.TEE, strings.Join(missing, ", "))
	}
	if o.TEE != attestation.TEESim && o.SimDir != "" {
		return fmt.Errorf("shim: %s is only for tee sim, not %s", AnnotationSimDir, o.TEE)
	}
	return nil
}

// ParseVMOptions reads the io.cvm.* annotations. Unknown io.cvm.* keys are
// errors (a typo must not silently give a default VM); other annotations
// are ignored.
func ParseVMOptions(ann map[string]string) (VMOptions, error) {
	var o VMOptions
	for k, v := range ann {
		if !strings.HasPrefix(k, "io.cvm.") {
			continue
		}
		bad := func(want string) error {
			return fmt.Errorf("shim: annotation %s=%q: want %s", k, v, want)
		}
		switch k {
		case AnnotationVCPUs:
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 64 {
				return VMOptions{}, bad("a vCPU count from 1 to 64")
			}
			o.VCPUs = n
		case AnnotationMemory:
			n, err := parseMemory(v)
			if err != nil {
				return VMOptions{}, bad("<n>M or <n>G from 128M to 64G")
			}
			o.Memory = n
		case AnnotationKernel:
			if !filepath.IsAbs(v) || filepath.Clean(v) != v {
				return VMOptions{}, bad("a clean absolute path of a kernel image")
			}
			o.Kernel = v
		case AnnotationTEE:
			switch t := attestation.TEE(v); t {
			case launchconfig.TEENone, attestation.TEESim, attestation.TEESEVSNP, attestation.TEETDX:
				o.TEE = t
			default:
				return VMOptions{}, bad("none, sim, snp or tdx")
			}
		case AnnotationRootfs:
			switch f := rootimage.Format(v); f {
			case rootimage.EXT4, rootimage.EROFS:
				o.Format = f
			default:
				return VMOptions{}, bad("ext4 or erofs")
			}
		case AnnotationEngine:
			switch v {
			case EngineQEMU, EngineBuiltin, EngineAuto:
				o.Engine = v
			default:
				return VMOptions{}, bad("qemu, builtin or auto")
			}
		case AnnotationKBS:
			host, port, err := net.SplitHostPort(v)
			if p, perr := strconv.ParseUint(port, 10, 16); err != nil || host == "" || perr != nil || p == 0 {
				return VMOptions{}, bad("HOST:PORT of the key broker")
			}
			o.KBS = v
		case AnnotationKBSCA, AnnotationSimDir:
			if !filepath.IsAbs(v) || filepath.Clean(v) != v {
				return VMOptions{}, bad("a clean absolute path")
			}
			if k == AnnotationKBSCA {
				o.KBSCA = v
			} else {
				o.SimDir = v
			}
		case AnnotationResource:
			if err := resources.ValidName(v); err != nil {
				return VMOptions{}, bad(fmt.Sprintf("a broker resource name (%v)", err))
			}
			o.Resource = v
		default:
			return VMOptions{}, fmt.Errorf("shim: unknown annotation %s (known: %s)", k, strings.Join([]string{
				AnnotationVCPUs, AnnotationMemory, AnnotationKernel, AnnotationTEE, AnnotationRootfs, AnnotationEngine,
				AnnotationKBS, AnnotationKBSCA, AnnotationResource, AnnotationSimDir}, ", "))
		}
	}
	return o, nil
}

// parseMemory reads <n>M or <n>G (MiB, GiB) within 128 MiB..64 GiB.
func parseMemory(s string) (uint64, error) {
	if len(s) < 2 {
		return 0, fmt.Errorf("memory %q: too short", s)
	}
	var shift uint
	switch s[len(s)-1] {
	case 'M':
		shift = 20
	case 'G':
		shift = 30
	default:
		return 0, fmt.Errorf("memory %q: no M or G suffix", s)
	}
	n, err := strconv.ParseUint(s[:len(s)-1], 10, 32)
	if err != nil {
		return 0, fmt.Errorf("memory %q: %w", s, err)
	}
	b := n << shift
	if b < 128<<20 || b > 64<<30 {
		return 0, fmt.Errorf("memory %q: outside 128M..64G", s)
	}
	return b, nil
}

// bundleVMOptions reads the VM options from the annotations of the
// bundle's config.json.
func bundleVMOptions(bundle string) (VMOptions, error) {
	path := filepath.Join(bundle, "config.json")
	b, err := os.ReadFile(path)
	if err != nil {
		return VMOptions{}, fmt.Errorf("shim: bundle spec: %w", err)
	}
	var spec struct {
		Annotations map[string]string `json:"annotations"`
	}
	if err := json.Unmarshal(b, &spec); err != nil {
		return VMOptions{}, fmt.Errorf("shim: bundle spec %s: %w", path, err)
	}
	o, err := ParseVMOptions(spec.Annotations)
	if err != nil {
		return VMOptions{}, fmt.Errorf("%w (in %s)", err, path)
	}
	return o, nil
}

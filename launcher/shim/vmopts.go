package shim

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/guest-agent/launchconfig"
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
)

// VMOptions are a pod's microVM settings from its annotations. Zero
// values mean the defaults.
type VMOptions struct {
	VCPUs  int
	Memory uint64 // bytes
	Kernel string
	TEE    attestation.TEE
	Format rootimage.Format
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
		default:
			return VMOptions{}, fmt.Errorf("shim: unknown annotation %s (known: %s, %s, %s, %s, %s)", k,
				AnnotationVCPUs, AnnotationMemory, AnnotationKernel, AnnotationTEE, AnnotationRootfs)
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

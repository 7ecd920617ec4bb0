// Command containerd-shim-cvmtest-v2 is the shim's test fixture binary
// (runtime io.containerd.cvmtest.v2): the real task service of
// launcher/shim with the in-process host sandbox of launcher/shim/shimtest.
// Its containers run on the host, chrooted: a protocol fixture for the
// integration tests, never isolation, never installed.
package main

//
// The sandbox state of pod P lives in $CVMTEST_SANDBOX_DIR/P (default
// under the system temporary directory), so `shim delete` after a crash
// can find and unmount it.
import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"

	"github.com/greatjail/cvm/launcher/shim"
	"github.com/greatjail/cvm/launcher/shim/shimtest"
)

func main() {
	parent := os.Getenv("CVMTEST_SANDBOX_DIR")
	if parent == "" {
		parent = filepath.Join(os.TempDir(), "cvmtest-sandbox")
	}
	shim.Run(context.Background(), shim.Options{
		Name: "io.containerd.cvmtest.v2",
		NewSandbox: func(ctx context.Context, r shim.SandboxRequest) (shim.Sandbox, error) {
			// The runtime options, as the shipped shim reads them, are
			// recorded for the tests (TestRuntimeOptions).
			o, err := shim.ParseRuntimeOptions(r.Options)
			if err != nil {
				return nil, err
			}
			b, _ := json.Marshal(o)
			if err := os.MkdirAll(parent, 0o700); err != nil {
				return nil, err
			}
			if err := os.WriteFile(filepath.Join(parent, r.PodID+".runtime-options.json"), b, 0o600); err != nil {
				return nil, err
			}
			return shimtest.New(ctx, filepath.Join(parent, r.PodID))
		},
		Cleanup: func(ctx context.Context, bundle string) error {
			return shimtest.Cleanup(filepath.Join(parent, podOf(bundle)))
		},
	})
}

// podOf reads the pod ID of a bundle as the shim groups tasks.
func podOf(bundle string) string {
	var spec struct {
		Annotations map[string]string `json:"annotations"`
	}
	if b, err := os.ReadFile(filepath.Join(bundle, "config.json")); err == nil {
		json.Unmarshal(b, &spec)
	}
	if p := spec.Annotations["io.kubernetes.cri.sandbox-id"]; p != "" {
		return p
	}
	return filepath.Base(bundle)
}

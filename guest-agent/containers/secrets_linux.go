package containers

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// mountSecrets gives the container the pod's released secrets as files
// under SecretsDir: a tmpfs of its own (guest memory, which the TEE
// encrypts; nothing reaches the host's disk), files mode 0444, the tmpfs
// remounted read-only, noexec, nosuid and nodev once written.
func (c *container) mountSecrets(secrets []Secret) error {
	if len(secrets) == 0 {
		return nil
	}
	dest, err := inRoot(c.root, SecretsDir)
	if err != nil {
		return err
	}
	var size int
	for _, s := range secrets {
		if err := ValidSecretName(s.Name); err != nil {
			return err
		}
		size += len(s.Data) + 4096
	}
	const flags = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	if err := c.mount("tmpfs", dest, "tmpfs", flags, fmt.Sprintf("mode=0755,size=%d", size+64<<10)); err != nil {
		return err
	}
	for _, s := range secrets {
		p := filepath.Join(dest, filepath.FromSlash(s.Name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("containers: secret %s: %w", s.Name, err)
		}
		if err := os.WriteFile(p, s.Data, 0o444); err != nil {
			return fmt.Errorf("containers: secret %s: %w", s.Name, err)
		}
	}
	if err := unix.Mount("", dest, "", flags|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("containers: remount %s read-only: %w", dest, err)
	}
	return nil
}

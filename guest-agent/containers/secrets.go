package containers

import (
	"fmt"
	"strings"
)

// SecretsDir is where a container finds the secrets the key broker
// released to its pod: the file SecretsDir/NAME holds the resource NAME
// (e.g. /run/cvm/secrets/pods/db-password).
const SecretsDir = "/run/cvm/secrets"

// MaxSecretName bounds a secret's name (a broker resource path, whose limit it matches).
const MaxSecretName = 512

// Secret is one released secret: its broker resource name and bytes.
type Secret struct {
	Name string
	Data []byte
}

// ValidSecretName checks that name can be a relative path under
// SecretsDir: slash-separated elements of [A-Za-z0-9._-], none empty,
// "." or "..".
func ValidSecretName(name string) error {
	if name == "" || len(name) > MaxSecretName {
		return fmt.Errorf("%w: secret name %q: empty or longer than %d bytes", ErrInvalid, name, MaxSecretName)
	}
	for _, el := range strings.Split(name, "/") {
		if el == "" || el == "." || el == ".." {
			return fmt.Errorf("%w: secret name %q: empty, \".\" or \"..\" path element", ErrInvalid, name)
		}
		for _, r := range el {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
				return fmt.Errorf("%w: secret name %q: %q is outside [A-Za-z0-9._-]", ErrInvalid, name, r)
			}
		}
	}
	return nil
}

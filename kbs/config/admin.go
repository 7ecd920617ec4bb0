package config

import (
	"crypto/tls"
	"errors"
	"path/filepath"

	"github.com/greatjail/cvm/kbs/pki"
)

// Admin is an admin client's configuration, admin.yaml: what `cvm kbs
// --admin-config` needs to reach the broker's admin API.
type Admin struct {
	// Address is the broker, host:port. The server certificate must name
	// host.
	Address string `json:"address"`
	// CA is the CA certificate (PEM) the server certificate must chain to.
	CA string `json:"ca"`
	// Cert is the client certificate (PEM); its OU is the role.
	Cert string `json:"cert"`
	// Key is the client certificate's key (PKCS#8 PEM).
	Key string `json:"key"`
}

// LoadAdmin reads admin.yaml at path: strictly parsed, relative paths made
// absolute against the file's directory, and validated.
func LoadAdmin(path string) (*Admin, error) {
	abs, data, err := readConfig(path)
	if err != nil {
		return nil, err
	}
	var a Admin
	if err := decode(data, &a); err != nil {
		err.File = path
		return nil, err
	}
	dir := filepath.Dir(abs)
	for _, p := range []*string{&a.CA, &a.Cert, &a.Key} {
		resolvePath(p, dir)
	}
	if err := a.Validate(); err != nil {
		var e *Error
		if errors.As(err, &e) {
			e.File = path
		}
		return nil, err
	}
	return &a, nil
}

// Validate checks the address and that the files exist, parse, and that
// the key matches the certificate, listing every problem in an *Error.
func (a *Admin) Validate() error {
	_, ps := a.check()
	return ps.err("")
}

// ClientTLS returns the admin client's TLS configuration (pki.ClientTLS),
// expecting the server certificate to name Address's host.
func (a *Admin) ClientTLS() (*tls.Config, error) {
	cfg, ps := a.check()
	if err := ps.err(""); err != nil {
		return nil, err
	}
	return cfg, nil
}

func (a *Admin) check() (*tls.Config, problems) {
	var ps problems
	host, err := splitAddress(a.Address)
	switch {
	case a.Address == "":
		ps.add("address", "required")
	case err != nil:
		ps.add("address", "%v", err)
	case host == "":
		ps.add("address", "%q names no host", a.Address)
	}
	var caPEM, certPEM, keyPEM []byte
	read := func(field, path string, parse func([]byte) error) []byte {
		if path == "" {
			ps.add(field, "required")
			return nil
		}
		b, err := readFile(path)
		if err != nil {
			ps.add(field, "%v", err)
			return nil
		}
		if err := parse(b); err != nil {
			ps.add(field, "%s: %v", path, err)
			return nil
		}
		return b
	}
	caPEM = read("ca", a.CA, nonEmptyCerts)
	certPEM = read("cert", a.Cert, nonEmptyCerts)
	keyPEM = read("key", a.Key, func(b []byte) error { _, err := pki.ParseKey(b); return err })
	if len(ps) > 0 {
		return nil, ps
	}
	cfg, err := pki.ClientTLS(caPEM, certPEM, keyPEM, host)
	if err != nil {
		ps.add("key", "does not match cert: %v", err)
		return nil, ps
	}
	return cfg, nil
}

package sim

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
)

// Files of a saved authority.
const (
	fileRoot     = "root.pem"
	fileVCEK     = "vcek.pem"
	fileARKKey   = "ark.key"
	fileASKKey   = "ask.key"
	fileVCEKKey  = "vcek.key"
	fileIdentity = "identity.json"
)

// identityVersion is the format version of identity.json.
const identityVersion = 1

// identity is identity.json: what the keys and certificates do not say.
type identity struct {
	Version int        `json:"version"`
	Product string     `json:"product"`
	ChipID  string     `json:"chip_id"`
	TCB     tcbVersion `json:"tcb"`
}

// Save writes the authority to dir: root.pem (ARK then ASK certificate),
// vcek.pem, ark.key, ask.key and vcek.key (PKCS#8 PEM, mode 0600) and
// identity.json (chip id, TCB, product). It creates dir (and missing
// parents) with mode 0700 if needed. It never overwrites: if any of these
// files exists it writes nothing and returns an error wrapping
// fs.ErrExist. On failure it removes the files it created.
func (a *Authority) Save(dir string) (err error) {
	files, err := a.marshal()
	if err != nil {
		return fmt.Errorf("sim: save %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("sim: save: %w", err)
	}
	if st, err := os.Stat(dir); err != nil {
		return fmt.Errorf("sim: save: %w", err)
	} else if !st.IsDir() {
		return fmt.Errorf("sim: save: %s is not a directory", dir)
	}
	for _, f := range files {
		p := filepath.Join(dir, f.name)
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("sim: save: refusing to overwrite existing authority: %s: %w", p, fs.ErrExist)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("sim: save: %w", err)
		}
	}
	var created []string
	defer func() {
		if err != nil {
			for _, p := range created {
				os.Remove(p)
			}
		}
	}()
	for _, f := range files {
		p := filepath.Join(dir, f.name)
		if err := writeNew(p, f.data, f.mode); err != nil {
			return fmt.Errorf("sim: save: %w", err)
		}
		created = append(created, p)
	}
	return syncDir(dir)
}

type file struct {
	name string
	data []byte
	mode fs.FileMode
}

// marshal returns the authority's files, keys last.
func (a *Authority) marshal() ([]file, error) {
	id, err := json.MarshalIndent(identity{
		Version: identityVersion,
		Product: Product,
		ChipID:  hex.EncodeToString(a.chipID[:]),
		TCB:     a.tcb,
	}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	files := []file{
		{fileRoot, a.RootPEM(), 0o644},
		{fileVCEK, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.vcek.Raw}), 0o644},
		{fileIdentity, append(id, '\n'), 0o644},
	}
	for _, k := range []struct {
		name string
		key  crypto.PrivateKey
	}{{fileARKKey, a.arkKey}, {fileASKKey, a.askKey}, {fileVCEKKey, a.vcekKey}} {
		der, err := x509.MarshalPKCS8PrivateKey(k.key)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k.name, err)
		}
		files = append(files, file{k.name, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600})
	}
	return files, nil
}

// writeNew creates path (failing if it exists), writes data and syncs it.
// If it created the file but could not complete it, it removes it.
func writeNew(path string, data []byte, mode fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sim: save: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sim: save: sync %s: %w", dir, err)
	}
	return nil
}

// Load reads an authority written by Save and checks that it is whole and
// consistent: each key matches its certificate, the VCEK chains to the ASK
// and the ASK to the self-signed ARK, every certificate carries the sim
// marker, and the VCEK's hwID and TCB extensions match identity.json.
// Errors name the file at fault. A loaded authority draws REPORT_IDs from
// crypto/rand.
func Load(dir string) (*Authority, error) {
	a := &Authority{rand: &lockedReader{r: rand.Reader}}
	read := func(name string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("sim: load: %w", err)
		}
		return b, nil
	}
	bad := func(name string, format string, args ...any) error {
		return fmt.Errorf("sim: load: %s: %s", filepath.Join(dir, name), fmt.Sprintf(format, args...))
	}

	b, err := read(fileRoot)
	if err != nil {
		return nil, err
	}
	certs, err := parseCertsPEM(b)
	if err != nil {
		return nil, bad(fileRoot, "%v", err)
	}
	if len(certs) != 2 {
		return nil, bad(fileRoot, "want 2 certificates (ARK, ASK), found %d", len(certs))
	}
	a.ark, a.ask = certs[0], certs[1]
	if b, err = read(fileVCEK); err != nil {
		return nil, err
	}
	if certs, err = parseCertsPEM(b); err != nil {
		return nil, bad(fileVCEK, "%v", err)
	}
	if len(certs) != 1 {
		return nil, bad(fileVCEK, "want 1 certificate (VCEK), found %d", len(certs))
	}
	a.vcek = certs[0]

	for _, k := range []struct {
		name string
		dst  any
	}{{fileARKKey, &a.arkKey}, {fileASKKey, &a.askKey}, {fileVCEKKey, &a.vcekKey}} {
		b, err := read(k.name)
		if err != nil {
			return nil, err
		}
		if err := parseKeyPEM(b, k.dst); err != nil {
			return nil, bad(k.name, "%v", err)
		}
	}

	if b, err = read(fileIdentity); err != nil {
		return nil, err
	}
	var id identity
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&id); err != nil {
		return nil, bad(fileIdentity, "%v", err)
	}
	switch chip, err := hex.DecodeString(id.ChipID); {
	case id.Version != identityVersion:
		return nil, bad(fileIdentity, "version %d, want %d", id.Version, identityVersion)
	case id.Product != Product:
		return nil, bad(fileIdentity, "product %q, want %q", id.Product, Product)
	case err != nil || len(chip) != chipIDSize:
		return nil, bad(fileIdentity, "chip_id is not %d bytes of hex", chipIDSize)
	case !id.TCB.valid():
		return nil, bad(fileIdentity, "tcb %+v out of range", id.TCB)
	default:
		copy(a.chipID[:], chip)
		a.tcb = id.TCB
	}

	if err := a.check(); err != nil {
		return nil, fmt.Errorf("sim: load %s: %w", dir, err)
	}
	return a, nil
}

// check verifies that a loaded authority is consistent.
func (a *Authority) check() error {
	for _, c := range []struct {
		file, role, cn string
		cert           *x509.Certificate
		pub            crypto.PublicKey
	}{
		{fileRoot, "ARK", arkCommonName, a.ark, &a.arkKey.PublicKey},
		{fileRoot, "ASK", askCommonName, a.ask, &a.askKey.PublicKey},
		{fileVCEK, "VCEK", vcekCommonName, a.vcek, &a.vcekKey.PublicKey},
	} {
		if c.cert.Subject.CommonName != c.cn {
			return fmt.Errorf("%s: %s certificate common name %q, want %q", c.file, c.role, c.cert.Subject.CommonName, c.cn)
		}
		if c.cert.Subject.SerialNumber != marker {
			return fmt.Errorf("%s: %s certificate is not a simulated-TEE certificate (subject serialNumber %q, want %q)", c.file, c.role, c.cert.Subject.SerialNumber, marker)
		}
		if !c.pub.(interface{ Equal(crypto.PublicKey) bool }).Equal(c.cert.PublicKey) {
			return fmt.Errorf("%s: %s certificate does not match its private key", c.file, c.role)
		}
	}
	if err := a.ark.CheckSignatureFrom(a.ark); err != nil {
		return fmt.Errorf("%s: ARK certificate is not self-signed: %w", fileRoot, err)
	}
	if err := a.ask.CheckSignatureFrom(a.ark); err != nil {
		return fmt.Errorf("%s: ASK certificate is not signed by the ARK: %w", fileRoot, err)
	}
	if err := a.vcek.CheckSignatureFrom(a.ask); err != nil {
		return fmt.Errorf("%s: VCEK certificate is not signed by the ASK: %w", fileVCEK, err)
	}
	want, err := vcekExtensions(a.chipID, a.tcb)
	if err != nil {
		return fmt.Errorf("%s: %w", fileIdentity, err)
	}
	for _, w := range want {
		i := slices.IndexFunc(a.vcek.Extensions, func(e pkix.Extension) bool { return e.Id.Equal(w.Id) })
		if i < 0 || !bytes.Equal(a.vcek.Extensions[i].Value, w.Value) {
			return fmt.Errorf("%s: VCEK extension %v does not match %s (chip id, tcb)", fileVCEK, w.Id, fileIdentity)
		}
	}
	return nil
}

// parseCertsPEM parses a sequence of PEM CERTIFICATE blocks and nothing
// else.
func parseCertsPEM(b []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for n := 1; ; n++ {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %d is %q, want CERTIFICATE", n, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", n, err)
		}
		certs = append(certs, c)
	}
	if len(bytes.TrimSpace(b)) != 0 {
		return nil, fmt.Errorf("%d bytes of trailing data that are not PEM", len(bytes.TrimSpace(b)))
	}
	return certs, nil
}

// parseKeyPEM parses one PKCS#8 PEM private key into dst, which is
// **rsa.PrivateKey (RSA-4096) or **ecdsa.PrivateKey (P-384).
func parseKeyPEM(b []byte, dst any) error {
	block, rest := pem.Decode(b)
	if block == nil || block.Type != "PRIVATE KEY" {
		return errors.New("not a PEM PRIVATE KEY")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return errors.New("trailing data after the key")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return err
	}
	switch d := dst.(type) {
	case **rsa.PrivateKey:
		rk, ok := k.(*rsa.PrivateKey)
		if !ok || rk.N.BitLen() != 4096 {
			return errors.New("not an RSA-4096 key")
		}
		*d = rk
	case **ecdsa.PrivateKey:
		ek, ok := k.(*ecdsa.PrivateKey)
		if !ok || ek.Curve != elliptic.P384() {
			return errors.New("not an ECDSA P-384 key")
		}
		*d = ek
	default:
		return fmt.Errorf("internal error: key destination %T", dst)
	}
	return nil
}

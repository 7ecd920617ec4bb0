package tdx

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/greatjail/cvm/internal/atomicfile"
)

// DirCollateral serves collateral from files in Dir, for offline
// verification and as a cache seeded by SaveCollateral. The layout, with
// <fmspc> in lowercase hex and <ca> "platform" or "processor":
//
//	tcbinfo-<fmspc>.json          TCB info body (required)
//	tcbinfo-issuer-chain.pem      its PEM issuer chain (required)
//	qe-identity.json              QE identity body (required)
//	qe-identity-issuer-chain.pem  its PEM issuer chain (required)
//	pckcrl-<ca>.der               DER PCK CRL (optional)
//	pckcrl-issuer-chain.pem       its PEM issuer chain (optional)
//	rootcrl.der                   DER Intel SGX Root CA CRL (optional)
//
// A missing required file is an error wrapping fs.ErrNotExist; missing
// optional files leave the corresponding fields nil. DirCollateral reads the
// filesystem and is never used by the verifier directly, only when injected.
type DirCollateral struct {
	Dir string
}

var _ CollateralSource = DirCollateral{}

// Collateral implements CollateralSource.
func (d DirCollateral) Collateral(ctx context.Context, fmspc []byte, ca string) (*Collateral, error) {
	names, err := collateralFiles(fmspc, ca)
	if err != nil {
		return nil, err
	}
	c := &Collateral{}
	for _, f := range names.fields(c) {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("tdx: collateral dir: %w", err)
		}
		b, err := readLimited(filepath.Join(d.Dir, f.name))
		if errors.Is(err, fs.ErrNotExist) && f.optional {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("tdx: collateral dir: %w", err)
		}
		*f.dst = b
	}
	return c, nil
}

// SaveCollateral writes c into dir in the DirCollateral layout, creating
// dir if needed. Each file is replaced atomically (written to a temporary
// file in dir, synced, renamed), so a concurrent reader sees the old or the
// new version of each file, never a partial one. Optional files whose field
// in c is nil are removed, so the directory then describes exactly c.
func SaveCollateral(dir string, fmspc []byte, ca string, c *Collateral) error {
	if c == nil {
		return errors.New("tdx: save collateral: nil collateral")
	}
	names, err := collateralFiles(fmspc, ca)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("tdx: save collateral: %w", err)
	}
	// Issuer chains before the bodies they sign, so a reader that sees a
	// new body also sees its chain.
	for _, f := range names.fields(c) {
		path := filepath.Join(dir, f.name)
		if len(*f.dst) == 0 {
			if !f.optional {
				return fmt.Errorf("tdx: save collateral: %s is empty", f.name)
			}
			if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("tdx: save collateral: %w", err)
			}
			continue
		}
		if err := writeAtomic(path, *f.dst); err != nil {
			return fmt.Errorf("tdx: save collateral: %w", err)
		}
	}
	return nil
}

type fileNames struct {
	tcbInfo, pckCRL string
}

type fileField struct {
	name     string
	dst      *[]byte
	optional bool
}

func collateralFiles(fmspc []byte, ca string) (fileNames, error) {
	if len(fmspc) != 6 {
		return fileNames{}, fmt.Errorf("tdx: collateral dir: FMSPC is %d bytes, want 6", len(fmspc))
	}
	// ca becomes part of a file name: only the two known values.
	if ca != "platform" && ca != "processor" {
		return fileNames{}, fmt.Errorf("tdx: collateral dir: CA %q, want \"platform\" or \"processor\"", ca)
	}
	return fileNames{
		tcbInfo: "tcbinfo-" + hex.EncodeToString(fmspc) + ".json",
		pckCRL:  "pckcrl-" + ca + ".der",
	}, nil
}

// fields lists the files in write order, each with the field of c it holds.
func (n fileNames) fields(c *Collateral) []fileField {
	return []fileField{
		{name: "tcbinfo-issuer-chain.pem", dst: &c.TCBInfoIssuerChain},
		{name: n.tcbInfo, dst: &c.TCBInfo},
		{name: "qe-identity-issuer-chain.pem", dst: &c.QEIdentityIssuerChain},
		{name: "qe-identity.json", dst: &c.QEIdentity},
		{name: "pckcrl-issuer-chain.pem", dst: &c.PCKCRLIssuerChain, optional: true},
		{name: n.pckCRL, dst: &c.PCKCRL, optional: true},
		{name: "rootcrl.der", dst: &c.RootCRL, optional: true},
	}
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxCollateralSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxCollateralSize {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxCollateralSize)
	}
	return b, nil
}

func writeAtomic(path string, b []byte) error { return atomicfile.Write(path, b, 0o644) }

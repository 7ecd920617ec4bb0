package sim

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/greatjail/cvm/testdata"
)

var allFiles = []string{fileARKKey, fileASKKey, fileIdentity, fileRoot, fileVCEKKey, fileVCEK} // sorted

// saved writes the shared authority to a fresh directory.
func saved(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "sim")
	if err := testAuthority(t).Save(dir); err != nil {
		t.Fatalf("Save(%s) = %v", dir, err)
	}
	return dir
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// TestSaveLoad: Load returns the authority Save wrote, with its files and
// modes, and it still signs reports the original root verifies.
func TestSaveLoad(t *testing.T) {
	a := testAuthority(t)
	dir := saved(t)
	if diff := cmp.Diff(allFiles, listDir(t, dir)); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
	st, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		t.Errorf("dir mode %v, want 0700", st.Mode().Perm())
	}
	for _, k := range []string{fileARKKey, fileASKKey, fileVCEKKey} {
		st, err := os.Stat(filepath.Join(dir, k))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s mode %v, want 0600", k, st.Mode().Perm())
		}
	}

	b, err := Load(dir)
	if err != nil {
		t.Fatalf("Load(%s) = %v", dir, err)
	}
	type state struct {
		Root, VCEK             []byte
		ChipID                 [64]byte
		TCB                    uint64
		ARK, ASK, VCEKKey, Key bool
	}
	get := func(x *Authority) state {
		return state{
			Root: x.RootPEM(), VCEK: x.VCEK(), ChipID: x.ChipID(), TCB: x.TCB().Raw,
			ARK: x.arkKey.Equal(a.arkKey), ASK: x.askKey.Equal(a.askKey), VCEKKey: x.vcekKey.Equal(a.vcekKey),
			Key: x.ark.Equal(a.ark) && x.ask.Equal(a.ask) && x.vcek.Equal(a.vcek),
		}
	}
	if diff := cmp.Diff(get(a), get(b)); diff != "" {
		t.Errorf("loaded authority (-saved +loaded):\n%s", diff)
	}
	table, err := b.CertTable()
	if err != nil {
		t.Fatal(err)
	}
	if err := goSevGuestVerify(mustReport(t, b, testRequest(false)), table, a.RootPEM(), nil); err != nil {
		t.Errorf("report of loaded authority, verified with the saved root = %v", err)
	}
}

// TestSaveRefusesOverwrite: Save never replaces an existing authority, not
// even one file of it, and writes nothing when it refuses.
func TestSaveRefusesOverwrite(t *testing.T) {
	a := testAuthority(t)
	dir := saved(t)
	root, err := os.ReadFile(filepath.Join(dir, fileRoot))
	if err != nil {
		t.Fatal(err)
	}
	if err := otherAuthority(t).Save(dir); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("Save over an existing authority = %v, want fs.ErrExist", err)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, fileRoot)); !bytes.Equal(after, root) {
		t.Error("refused Save changed root.pem")
	}

	for _, name := range allFiles {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, name), []byte("precious"), 0o600); err != nil {
				t.Fatal(err)
			}
			err := a.Save(dir)
			if !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), name) {
				t.Fatalf("Save with existing %s = %v, want fs.ErrExist naming it", name, err)
			}
			if diff := cmp.Diff([]string{name}, listDir(t, dir)); diff != "" {
				t.Errorf("files after refused Save (-want +got):\n%s", diff)
			}
		})
	}
}

// TestSaveExistingEmptyDir: an existing empty directory is fine.
func TestSaveExistingEmptyDir(t *testing.T) {
	dir := t.TempDir()
	if err := testAuthority(t).Save(dir); err != nil {
		t.Fatalf("Save(empty dir) = %v", err)
	}
	if _, err := Load(dir); err != nil {
		t.Fatalf("Load = %v", err)
	}
}

// TestSaveNotADirectory: Save into a regular file fails without writing.
func TestSaveNotADirectory(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := testAuthority(t).Save(f); err == nil {
		t.Fatal("Save(regular file) = nil error")
	}
}

// TestLoadErrors: every missing, corrupt or inconsistent file is named in
// the error, with the reason.
func TestLoadErrors(t *testing.T) {
	o := otherAuthority(t)
	odir := filepath.Join(t.TempDir(), "other")
	if err := o.Save(odir); err != nil {
		t.Fatal(err)
	}
	readOther := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(odir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	replace := func(name string, data []byte) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	edit := func(name, old, new string) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			p := filepath.Join(dir, name)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			s := strings.Replace(string(b), old, new, 1)
			if s == string(b) {
				t.Fatalf("%s has no %q", name, old)
			}
			if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	type tc struct {
		name   string
		mutate func(t *testing.T, dir string)
		file   string // named in the error
		reason string // substring of the error
		is     error
	}
	var cases []tc
	for _, f := range allFiles {
		cases = append(cases,
			tc{"missing " + f, func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, f)) }, f, "no such file", fs.ErrNotExist},
			tc{"garbage " + f, replace(f, []byte("garbage\n")), f, "", nil},
		)
	}
	cases = append(cases, []tc{
		{"root.pem one certificate", replace(fileRoot, readOther(fileVCEK)), fileRoot, "want 2 certificates", nil},
		{"root.pem of AMD (not sim)", replace(fileRoot, testdata.SNPMilanASKARK), fileRoot, "common name", nil},
		{"root.pem of another authority", replace(fileRoot, o.RootPEM()), fileRoot, "does not match its private key", nil},
		{"vcek.pem of another authority", replace(fileVCEK, readOther(fileVCEK)), fileVCEK, "does not match its private key", nil},
		{"vcek.key of another authority", replace(fileVCEKKey, readOther(fileVCEKKey)), fileVCEK, "does not match its private key", nil},
		{"ark.key is the ask key", replace(fileARKKey, readOther(fileASKKey)), fileRoot, "does not match its private key", nil},
		{"vcek.key is an RSA key", replace(fileVCEKKey, readOther(fileARKKey)), fileVCEKKey, "not an ECDSA P-384 key", nil},
		{"ark.key is an EC key", replace(fileARKKey, readOther(fileVCEKKey)), fileARKKey, "not an RSA-4096 key", nil},
		{"key with trailing data", replace(fileVCEKKey, append(readOther(fileVCEKKey), "x"...)), fileVCEKKey, "trailing data", nil},
		{"root.pem with trailing data", replace(fileRoot, append(testAuthority(t).RootPEM(), "x"...)), fileRoot, "trailing data", nil},
		{"chip id of another authority", replace(fileIdentity, readOther(fileIdentity)), fileVCEK, "does not match identity.json", nil},
		{"tcb changed", edit(fileIdentity, `"snp": 22`, `"snp": 21`), fileVCEK, "does not match identity.json", nil},
		{"tcb out of range", edit(fileIdentity, `"snp": 22`, `"snp": 200`), fileIdentity, "out of range", nil},
		{"short chip id", edit(fileIdentity, `"chip_id": "`, `"chip_id": "00`), fileIdentity, "chip_id", nil},
		{"unknown field", edit(fileIdentity, `"version"`, `"extra": 1, "version"`), fileIdentity, "unknown field", nil},
		{"other product", edit(fileIdentity, `"Milan"`, `"Genoa"`), fileIdentity, "product", nil},
		{"other version", edit(fileIdentity, `"version": 1`, `"version": 2`), fileIdentity, "version 2", nil},
	}...)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := saved(t)
			c.mutate(t, dir)
			a, err := Load(dir)
			if err == nil {
				t.Fatalf("Load = %v, nil error", a)
			}
			msg := err.Error()
			if !strings.Contains(msg, c.file) || !strings.Contains(msg, c.reason) {
				t.Errorf("Load error = %q, want it to name %s and say %q", msg, c.file, c.reason)
			}
			if c.is != nil && !errors.Is(err, c.is) {
				t.Errorf("Load error = %v, want errors.Is %v", err, c.is)
			}
		})
	}
}

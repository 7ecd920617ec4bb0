package tdx

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestDirCollateralRepo(t *testing.T) {
	got, err := DirCollateral{Dir: repoTDX}.Collateral(context.Background(), sampleFMSPC, "platform")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(sampleCollateral(), got); diff != "" {
		t.Errorf("collateral (-want +got):\n%s", diff)
	}
	// The repository has no processor CA CRL: that optional file is absent.
	got, err = DirCollateral{Dir: repoTDX}.Collateral(context.Background(), sampleFMSPC, "processor")
	if err != nil {
		t.Fatal(err)
	}
	if got.PCKCRL != nil || got.RootCRL == nil {
		t.Errorf("processor collateral: PCK CRL %d bytes, root CRL %d bytes; want none and some", len(got.PCKCRL), len(got.RootCRL))
	}
}

func TestDirCollateralMissing(t *testing.T) {
	_, err := DirCollateral{Dir: repoTDX}.Collateral(context.Background(), []byte{0, 0x90, 0x6e, 0xd5, 0, 0}, "platform")
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("got %v, want fs.ErrNotExist", err)
	}
	for _, tc := range []struct {
		fmspc []byte
		ca    string
	}{
		{sampleFMSPC, "../platform"},
		{sampleFMSPC, ""},
		{[]byte{1, 2, 3}, "platform"},
	} {
		if _, err := (DirCollateral{Dir: repoTDX}).Collateral(context.Background(), tc.fmspc, tc.ca); err == nil {
			t.Errorf("Collateral(%x, %q) succeeded", tc.fmspc, tc.ca)
		}
		if err := SaveCollateral(t.TempDir(), tc.fmspc, tc.ca, sampleCollateral()); err == nil {
			t.Errorf("SaveCollateral(%x, %q) succeeded", tc.fmspc, tc.ca)
		}
	}
}

func TestSaveCollateral(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cache")
	want := sampleCollateral()
	if err := SaveCollateral(dir, sampleFMSPC, "platform", want); err != nil {
		t.Fatal(err)
	}
	got, err := DirCollateral{Dir: dir}.Collateral(context.Background(), sampleFMSPC, "platform")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	layout := []string{
		"pckcrl-issuer-chain.pem", "pckcrl-platform.der", "qe-identity-issuer-chain.pem", "qe-identity.json",
		"rootcrl.der", "tcbinfo-50806f000000.json", "tcbinfo-issuer-chain.pem",
	}
	if diff := cmp.Diff(layout, files(t, dir)); diff != "" {
		t.Errorf("saved files (-want +got):\n%s", diff)
	}

	// Saving without CRLs removes the stale ones.
	noCRL := sampleCollateral()
	noCRL.PCKCRL, noCRL.PCKCRLIssuerChain, noCRL.RootCRL = nil, nil, nil
	if err := SaveCollateral(dir, sampleFMSPC, "platform", noCRL); err != nil {
		t.Fatal(err)
	}
	got, err = DirCollateral{Dir: dir}.Collateral(context.Background(), sampleFMSPC, "platform")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(noCRL, got); diff != "" {
		t.Errorf("after saving without CRLs (-want +got):\n%s", diff)
	}

	empty := sampleCollateral()
	empty.QEIdentity = nil
	if err := SaveCollateral(dir, sampleFMSPC, "platform", empty); err == nil {
		t.Error("saving collateral without QE identity succeeded")
	}
	if err := SaveCollateral(dir, sampleFMSPC, "platform", nil); err == nil {
		t.Error("saving nil collateral succeeded")
	}
}

// files lists the files in dir, temporary files included.
func files(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

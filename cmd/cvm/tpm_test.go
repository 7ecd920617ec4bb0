package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/attestation/tpm"
	"github.com/greatjail/cvm/attestation/tpm/tpmtest"
	"github.com/greatjail/cvm/testdata"
	"google.golang.org/protobuf/encoding/protojson"
)

// writeTPMEvidence replays the real RHEL 8 event log into PCR values, quotes
// PCRs 0-7 with a SYNTHETIC attestation key made here, and writes the
// evidence document and the AK's public key. mutate may alter the evidence.
func writeTPMEvidence(t *testing.T, dir string, mutate func(*attestation.Evidence)) (evPath, akPath string) {
	t.Helper()
	events, err := tpm.ParseEventLog(testdata.TPMEventLogRHEL8)
	if err != nil {
		t.Fatal(err)
	}
	pcrs, err := tpm.Replay(events, tpm2.TPMAlgSHA256)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := tpmtest.Quote(key, tpm2.TPMAlgSHA256, pcrs, []int{0, 1, 2, 3, 4, 5, 6, 7}, []byte("nonce-1234"))
	if err != nil {
		t.Fatal(err)
	}
	ev.EventLog = testdata.TPMEventLogRHEL8
	if mutate != nil {
		mutate(ev)
	}
	m, err := attestation.EvidenceToProto(ev)
	if err != nil {
		t.Fatal(err)
	}
	js, err := protojson.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	evPath, akPath = filepath.Join(dir, "quote.json"), filepath.Join(dir, "ak.pem")
	if err := os.WriteFile(evPath, js, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(akPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return evPath, akPath
}

func TestVerifyTPM(t *testing.T) {
	ev, ak := writeTPMEvidence(t, t.TempDir(), nil)
	r := cvm(t, "attest", "verify", "--tee", "tpm", "--report", ev, "--ak", ak)
	if r.code != 0 {
		t.Fatalf("exit %d, want 0; stderr:\n%s", r.code, r.stderr)
	}
	c := claimsOf(t, r)
	pcrs, _ := c["pcrs"].(map[string]any)
	values, _ := pcrs["values"].(map[string]any)
	if c["tee"] != "tpm" || pcrs["hash"] != "sha256" || len(values) != 8 || c["report_data"] != "6e6f6e63652d31323334" {
		t.Errorf("claims = %v; want tee tpm, 8 sha256 PCRs, report_data = hex(\"nonce-1234\")", c)
	}
	if _, ok := c["unchecked"]; ok {
		t.Errorf("unchecked = %v with an event log given, want none", c["unchecked"])
	}

	// With no --ak, no key is trusted and nothing verifies.
	if r := cvm(t, "attest", "verify", "--tee", "tpm", "--report", ev); r.code != 1 || !strings.Contains(r.stderr, "attestation key") {
		t.Errorf("no --ak: exit %d, stderr %q; want exit 1 naming the attestation key", r.code, r.stderr)
	}
	// The evidence's own key is not trusted; only --ak is.
	_, otherAK := writeTPMEvidence(t, t.TempDir(), nil)
	if r := cvm(t, "attest", "verify", "--tee", "tpm", "--report", ev, "--ak", otherAK); r.code != 1 || !strings.Contains(r.stderr, "attestation key") {
		t.Errorf("untrusted AK: exit %d, stderr %q; want exit 1 naming the attestation key", r.code, r.stderr)
	}
	// A PCR value that is not what was quoted.
	dir := t.TempDir()
	bad, badAK := writeTPMEvidence(t, dir, func(e *attestation.Evidence) { e.PCRs[7][0] ^= 1 })
	if r := cvm(t, "attest", "verify", "--tee", "tpm", "--report", bad, "--ak", badAK); r.code != 1 || !strings.Contains(r.stderr, "pcr digest") {
		t.Errorf("altered PCR: exit %d, stderr %q; want exit 1 and 'pcr digest'", r.code, r.stderr)
	}
}

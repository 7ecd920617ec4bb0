package tpm_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-tpm/tpm2"

	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/attestation/tpm"
	"github.com/greatjail/cvm/attestation/tpm/tpmtest"
	"github.com/greatjail/cvm/testdata"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// fixedNow is the injected verification time of every test.
var fixedNow = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// testNonce is the qualifying data of the test quotes.
var testNonce = func() []byte { s := sha256.Sum256([]byte("cvm tpm test nonce")); return s[:] }()

// quotedPCRs are the PCRs the end-to-end quotes cover.
var quotedPCRs = []int{0, 1, 2, 3, 4, 5, 6, 7}

// syntheticKey returns the deterministic SYNTHETIC P-256 AK named label.
func syntheticKey(tb testing.TB, label string) *ecdsa.PrivateKey {
	tb.Helper()
	k, err := tpmtest.ECDSAKey(elliptic.P256(), label)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// replayLog parses log and replays it in bank alg.
func replayLog(tb testing.TB, log []byte, alg tpm2.TPMAlgID) map[int][]byte {
	tb.Helper()
	events, err := tpm.ParseEventLog(log)
	if err != nil {
		tb.Fatalf("ParseEventLog: %v", err)
	}
	pcrs, err := tpm.Replay(events, alg)
	if err != nil {
		tb.Fatalf("Replay: %v", err)
	}
	return pcrs
}

// rhel8Evidence is the end-to-end case: the RHEL 8 log replayed in
// SHA-256, quoted over PCRs 0-7 with testNonce by key, with the log.
func rhel8Evidence(tb testing.TB, key crypto.Signer) *attestation.Evidence {
	tb.Helper()
	ev, err := tpmtest.Quote(key, tpm2.TPMAlgSHA256, replayLog(tb, testdata.TPMEventLogRHEL8, tpm2.TPMAlgSHA256), quotedPCRs, testNonce)
	if err != nil {
		tb.Fatalf("tpmtest.Quote: %v", err)
	}
	ev.EventLog = testdata.TPMEventLogRHEL8
	return ev
}

// newVerifier returns a verifier trusting keys, at fixedNow.
func newVerifier(tb testing.TB, allowSHA1 bool, keys ...crypto.PublicKey) *tpm.Verifier {
	tb.Helper()
	v, err := tpm.New(tpm.Options{Now: func() time.Time { return fixedNow }, TrustedAKs: keys, AllowSHA1: allowSHA1})
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	return v
}

var sentinels = []error{
	attestation.ErrMalformed, attestation.ErrTooLarge, attestation.ErrSignature,
	attestation.ErrChain, attestation.ErrExpired, attestation.ErrRevoked,
	attestation.ErrMissing, attestation.ErrMismatch, attestation.ErrCollateral,
	attestation.ErrUnsupported,
}

// checkErr fails unless err is an *attestation.Error for TEE tpm and check
// that wraps sentinel and no other sentinel.
func checkErr(tb testing.TB, err, sentinel error, check string) {
	tb.Helper()
	if err == nil {
		tb.Fatalf("err = nil, want %v for check %q", sentinel, check)
	}
	var ae *attestation.Error
	if !errors.As(err, &ae) {
		tb.Fatalf("err = %v (%T), want *attestation.Error", err, err)
	}
	if ae.TEE != attestation.TEETPM || ae.Check != check || !errors.Is(err, sentinel) {
		tb.Fatalf("err = %v; want TEE %q, check %q, sentinel %v; got TEE %q, check %q", err, attestation.TEETPM, check, sentinel, ae.TEE, ae.Check)
	}
	n := 0
	for _, s := range sentinels {
		if errors.Is(err, s) {
			n++
		}
	}
	if n != 1 {
		tb.Fatalf("err = %v wraps %d sentinels, want exactly 1", err, n)
	}
	if ae.Detail == "" && ae.Cause == nil {
		tb.Fatalf("err = %v has no detail", err)
	}
}

// encodeLog is the inverse of tpm.ParseEventLog: the first event in the
// SHA-1 format, the others as TCG_PCR_EVENT2.
func encodeLog(events []tpm.Event) []byte {
	var b []byte
	le32 := func(v uint32) { b = binary.LittleEndian.AppendUint32(b, v) }
	for n, e := range events {
		le32(uint32(e.Index))
		le32(e.Type)
		if n == 0 {
			b = append(b, e.Digest(tpm2.TPMAlgSHA1)...)
		} else {
			le32(uint32(len(e.Digests)))
			for _, d := range e.Digests {
				b = binary.LittleEndian.AppendUint16(b, uint16(d.Alg))
				b = append(b, d.Value...)
			}
		}
		le32(uint32(len(e.Data)))
		b = append(b, e.Data...)
	}
	return b
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(tb testing.TB, name string, got []byte) {
	tb.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			tb.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		tb.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		tb.Errorf("%s differs from the golden file (-want +got):\n%s", path, cmp.Diff(string(want), string(got)))
	}
}

package sevsnp

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha512"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"slices"
	"testing"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/uuid"
	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/testdata"
)

// fuzzSeedTables returns real-shaped certificate tables: go-sev-guest's
// fake extended-report table, the real VCEK in a table, platform info.
func fuzzSeedTables(t testing.TB) [][]byte {
	f := newFake(t, fakeOpts{hwid: testHWID, tcb: milanTCB})
	fake, err := f.signer.CertTableBytes()
	if err != nil {
		t.Fatal(err)
	}
	vcek := (&abi.CertTable{Entries: []abi.CertTableEntry{{GUID: uuid.MustParse(abi.VcekGUID), RawCert: testdata.SNPMilanVCEK}}}).Marshal()
	wrap := make([]byte, 3*abi.CertTableEntrySize)
	copy(wrap, guidVCEK[:])
	binary.LittleEndian.PutUint32(wrap[16:], 0xFFFFFFF0)
	binary.LittleEndian.PutUint32(wrap[20:], 0x20)
	return [][]byte{fake, vcek, platformInfoTable(t, milanB0EAX), wrap, make([]byte, abi.CertTableEntrySize)}
}

// FuzzParseReport feeds report bytes with an appended certificate table
// to the parser. Invariants: no panic; failures are *attestation.Error
// with a parse sentinel; a parsed report re-encodes to its bytes; and the
// real VCEK's signature check accepts only the genuine signed bytes. (The
// signature alone stands in for Verify to keep the fuzzer fast; the full
// Verify of mutated reports is TestVerifyFlippedBits.)
func FuzzParseReport(f *testing.F) {
	f.Add(slices.Clone(testdata.SNPMilanReport))
	for _, table := range fuzzSeedTables(f) {
		f.Add(append(slices.Clone(testdata.SNPMilanReport), table...))
	}
	v3 := slices.Clone(testdata.SNPMilanReport)
	setV3(0x19, 0x01, 0x00)(v3)
	f.Add(v3)
	vcek, err := x509.ParseCertificate(testdata.SNPMilanVCEK)
	if err != nil {
		f.Fatal(err)
	}
	pub := vcek.PublicKey.(*ecdsa.PublicKey)
	genuine := abi.SignedComponent(testdata.SNPMilanReport)

	f.Fuzz(func(t *testing.T, b []byte) {
		ev := &attestation.Evidence{TEE: attestation.TEESEVSNP, Report: b}
		e, err := parseEvidence(attestation.TEESEVSNP, ev)
		if err != nil {
			var ae *attestation.Error
			if !errors.As(err, &ae) {
				t.Fatalf("parse error %T %v is not an *attestation.Error", err, err)
			}
			if !errors.Is(err, attestation.ErrMalformed) && !errors.Is(err, attestation.ErrTooLarge) && !errors.Is(err, attestation.ErrSignature) {
				t.Fatalf("parse error %v wraps no parse sentinel", err)
			}
			return
		}
		back, err := abi.ReportToAbiBytes(e.report)
		if err != nil {
			t.Fatalf("parsed report does not re-encode: %v", err)
		}
		if !bytes.Equal(back, b[:abi.ReportSize]) {
			t.Fatalf("parsed report re-encodes differently at byte 0x%X", firstDiff(back, b))
		}
		sig := e.raw[offSignature:]
		digest := sha512.Sum384(abi.SignedComponent(e.raw))
		if ecdsa.Verify(pub, digest[:], abi.AmdBigInt(sig[:0x48]), abi.AmdBigInt(sig[0x48:0x90])) && !bytes.Equal(abi.SignedComponent(e.raw), genuine) {
			t.Fatalf("a modified report's signature verified")
		}
	})
}

// FuzzCertTable feeds certificate tables to the table parser and to the
// evidence parser. Invariants: no panic; accepted tables have in-bounds,
// distinct entries that survive a marshal/parse round trip and that
// go-sev-guest's own parser reads the same way.
func FuzzCertTable(f *testing.F) {
	for _, table := range fuzzSeedTables(f) {
		f.Add(table)
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := parseEvidence(attestation.TEESEVSNP, &attestation.Evidence{TEE: attestation.TEESEVSNP, Report: testdata.SNPMilanReport, CertTable: b}); err != nil {
			var ae *attestation.Error
			if !errors.As(err, &ae) {
				t.Fatalf("error %T %v is not an *attestation.Error", err, err)
			}
		}
		entries, err := parseCertTable(b)
		if err != nil {
			return
		}
		if len(entries) > maxTableEntries {
			t.Fatalf("%d entries accepted, limit %d", len(entries), maxTableEntries)
		}
		var abiEntries []abi.CertTableEntry
		for i, e := range entries {
			for _, o := range entries[:i] {
				if o.guid == e.guid {
					t.Fatalf("duplicate GUID %x accepted", e.guid)
				}
			}
			abiEntries = append(abiEntries, abi.CertTableEntry{GUID: uuid.UUID(e.guid), RawCert: e.data})
		}
		// go-sev-guest agrees on every table we accept.
		var lib abi.CertTable
		if err := lib.Unmarshal(b); err != nil {
			t.Fatalf("go-sev-guest rejects a table we accept: %v", err)
		}
		if len(lib.Entries) != len(entries) {
			t.Fatalf("go-sev-guest sees %d entries, we see %d", len(lib.Entries), len(entries))
		}
		for i := range entries {
			if lib.Entries[i].GUID != uuid.UUID(entries[i].guid) || !bytes.Equal(lib.Entries[i].RawCert, entries[i].data) {
				t.Fatalf("entry %d differs from go-sev-guest's reading", i)
			}
		}
		again, err := parseCertTable((&abi.CertTable{Entries: abiEntries}).Marshal())
		if err != nil {
			t.Fatalf("re-marshaled table does not parse: %v", err)
		}
		if len(again) != len(entries) {
			t.Fatalf("round trip: %d entries, want %d", len(again), len(entries))
		}
		for i := range entries {
			if again[i].guid != entries[i].guid || !bytes.Equal(again[i].data, entries[i].data) {
				t.Fatalf("round trip changed entry %d", i)
			}
		}
	})
}

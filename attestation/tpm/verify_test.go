package tpm_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/binary"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-tpm/tpm2"

	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/attestation/tpm"
	"github.com/greatjail/cvm/attestation/tpm/tpmtest"
	"github.com/greatjail/cvm/testdata"
)

// rsaKey is a SYNTHETIC RSA-2048 AK generated once per test binary.
var rsaKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

func TestVerifyEndToEnd(t *testing.T) {
	for _, tc := range realLogs {
		t.Run(tc.name, func(t *testing.T) {
			key := syntheticKey(t, "end-to-end")
			ev, err := tpmtest.Quote(key, tpm2.TPMAlgSHA256, replayLog(t, tc.log, tpm2.TPMAlgSHA256), quotedPCRs, testNonce)
			if err != nil {
				t.Fatal(err)
			}
			ev.EventLog = tc.log
			claims, err := newVerifier(t, false, &key.PublicKey).Verify(context.Background(), ev)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			// The claimed PCRs are the values the real TPM reported.
			for _, i := range quotedPCRs {
				if got, want := []byte(claims.PCRs.Values[i]), recordedPCRs[tc.name][tpm2.TPMAlgSHA256][i]; !slices.Equal(got, want) {
					t.Errorf("claims PCR %d = %x, want recorded %x", i, got, want)
				}
			}
			js, err := json.MarshalIndent(claims, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			golden(t, "claims-"+tc.name+".json", append(js, '\n'))
		})
	}
}

// TestVerifyAccepts covers the key types, schemes and banks that verify.
func TestVerifyAccepts(t *testing.T) {
	p256 := syntheticKey(t, "accepts")
	p384, err := tpmtest.ECDSAKey(elliptic.P384(), "accepts")
	if err != nil {
		t.Fatal(err)
	}
	rsaK := rsaKey()
	rhel8 := func(alg tpm2.TPMAlgID) map[int][]byte { return replayLog(t, testdata.TPMEventLogRHEL8, alg) }
	withLog := func(ev *attestation.Evidence) *attestation.Evidence {
		ev.EventLog = testdata.TPMEventLogRHEL8
		return ev
	}
	quote := func(key crypto.Signer, alg tpm2.TPMAlgID, indices []int) *attestation.Evidence {
		ev, err := tpmtest.Quote(key, alg, rhel8(alg), indices, testNonce)
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	tests := []struct {
		name          string
		key           crypto.Signer
		ev            *attestation.Evidence
		allowSHA1     bool
		wantHash      string
		wantUnchecked []string
	}{
		{"p256 sha256 bank", p256, withLog(quote(p256, tpm2.TPMAlgSHA256, quotedPCRs)), false, "sha256", nil},
		{"p256 sha384 bank", p256, withLog(quote(p256, tpm2.TPMAlgSHA384, quotedPCRs)), false, "sha384", nil},
		{"p384 sha384 bank", p384, withLog(quote(p384, tpm2.TPMAlgSHA384, quotedPCRs)), false, "sha384", nil},
		{"rsassa", rsaK, withLog(quote(rsaK, tpm2.TPMAlgSHA256, quotedPCRs)), false, "sha256", nil},
		{"rsapss", rsaK, func() *attestation.Evidence {
			ev, err := tpmtest.QuoteScheme(rsaK, tpm2.TPMAlgRSAPSS, tpm2.TPMAlgSHA256, tpm2.TPMAlgSHA256, rhel8(tpm2.TPMAlgSHA256), quotedPCRs, testNonce)
			if err != nil {
				t.Fatal(err)
			}
			return withLog(ev)
		}(), false, "sha256", nil},
		{"rsassa sha512", rsaK, func() *attestation.Evidence {
			ev, err := tpmtest.QuoteScheme(rsaK, tpm2.TPMAlgRSASSA, tpm2.TPMAlgSHA512, tpm2.TPMAlgSHA256, rhel8(tpm2.TPMAlgSHA256), quotedPCRs, testNonce)
			if err != nil {
				t.Fatal(err)
			}
			return withLog(ev)
		}(), false, "sha256", nil},
		{"sha1 signature allowed", p256, func() *attestation.Evidence {
			ev, err := tpmtest.QuoteScheme(p256, tpm2.TPMAlgECDSA, tpm2.TPMAlgSHA1, tpm2.TPMAlgSHA256, rhel8(tpm2.TPMAlgSHA256), quotedPCRs, testNonce)
			if err != nil {
				t.Fatal(err)
			}
			return withLog(ev)
		}(), true, "sha256", nil},
		{"sha1 bank allowed", p256, withLog(quote(p256, tpm2.TPMAlgSHA1, quotedPCRs)), true, "sha1", nil},
		{"pcrs the log does not touch", p256, withLog(quote(p256, tpm2.TPMAlgSHA256, []int{0, 7, 14})), false, "sha256", nil},
		{"no event log", p256, quote(p256, tpm2.TPMAlgSHA256, quotedPCRs), false, "sha256", []string{"event log"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			claims, err := newVerifier(t, tc.allowSHA1, tc.key.Public()).Verify(context.Background(), tc.ev)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if claims.PCRs.Hash != tc.wantHash {
				t.Errorf("claims hash = %q, want %q", claims.PCRs.Hash, tc.wantHash)
			}
			if diff := cmp.Diff(tc.wantUnchecked, claims.Unchecked); diff != "" {
				t.Errorf("Unchecked (-want +got):\n%s", diff)
			}
			if !slices.Equal(claims.ReportData, testNonce) || !claims.VerifiedAt.Equal(fixedNow) || claims.TEE != attestation.TEETPM {
				t.Errorf("claims = %+v, want report data %x, verified at %v, TEE tpm", claims, testNonce, fixedNow)
			}
		})
	}
}

// resign re-signs report bytes changed by mutate, so that only the change
// under test, not the signature, can make verification fail.
func resign(t *testing.T, key crypto.Signer, ev *attestation.Evidence, mutate func(b []byte) []byte) *attestation.Evidence {
	t.Helper()
	ev.Report = mutate(slices.Clone(ev.Report))
	sig, err := tpmtest.Sign(key, ev.Report)
	if err != nil {
		t.Fatal(err)
	}
	ev.Signature = sig
	return ev
}

// resignAttest is resign over the parsed TPMS_ATTEST.
func resignAttest(t *testing.T, key crypto.Signer, ev *attestation.Evidence, mutate func(q *tpm2.TPMSQuoteInfo)) *attestation.Evidence {
	t.Helper()
	return resign(t, key, ev, func(b []byte) []byte {
		a, err := tpm2.Unmarshal[tpm2.TPMSAttest](b)
		if err != nil {
			t.Fatal(err)
		}
		q, err := a.Attested.Quote()
		if err != nil {
			t.Fatal(err)
		}
		mutate(q)
		a.Attested = tpm2.NewTPMUAttest(tpm2.TPMSTAttestQuote, q)
		return tpm2.Marshal(a)
	})
}

// alteredLog is the RHEL 8 log with the SHA-256 digest of the first
// measurement into pcr flipped.
func alteredLog(t *testing.T, pcr int) []byte {
	t.Helper()
	events, err := tpm.ParseEventLog(testdata.TPMEventLogRHEL8)
	if err != nil {
		t.Fatal(err)
	}
	for n, e := range events {
		if e.Index != pcr || e.Type == tpm.EventNoAction {
			continue
		}
		e.Digests = slices.Clone(e.Digests)
		for i, d := range e.Digests {
			if d.Alg == tpm2.TPMAlgSHA256 {
				v := slices.Clone(d.Value)
				v[0] ^= 1
				e.Digests[i].Value = v
			}
		}
		events[n] = e
		return encodeLog(events)
	}
	t.Fatalf("no measurement into PCR %d", pcr)
	return nil
}

// TestVerifyAttacks: each way of tampering with the evidence fails with
// its own sentinel and check.
func TestVerifyAttacks(t *testing.T) {
	key := syntheticKey(t, "attacks")
	other := syntheticKey(t, "attacks other")
	sha1PCRs := replayLog(t, testdata.TPMEventLogRHEL8, tpm2.TPMAlgSHA1)
	sha512PCRs := func() map[int][]byte {
		m := map[int][]byte{}
		for _, i := range quotedPCRs {
			m[i] = make([]byte, 64)
		}
		return m
	}()

	tests := []struct {
		name     string
		trusted  []crypto.PublicKey // nil: key
		mutate   func(ev *attestation.Evidence) *attestation.Evidence
		sentinel error
		check    string
		detail   string // substring of the error, if set
	}{
		{
			name:     "untrusted attestation key",
			trusted:  []crypto.PublicKey{&other.PublicKey},
			sentinel: attestation.ErrChain, check: "attestation key", detail: "not one of the 1 trusted keys",
		},
		{
			name:     "no trusted attestation keys",
			trusted:  []crypto.PublicKey{},
			sentinel: attestation.ErrMissing, check: "attestation key",
		},
		{
			name: "attestation key swapped for the attacker's",
			mutate: func(ev *attestation.Evidence) *attestation.Evidence {
				ak, err := tpmtest.AKPublic(&other.PublicKey)
				if err != nil {
					t.Fatal(err)
				}
				ev.AKPublic = ak
				return ev
			},
			sentinel: attestation.ErrChain, check: "attestation key",
		},
		{
			name:     "attestation key truncated",
			mutate:   func(ev *attestation.Evidence) *attestation.Evidence { ev.AKPublic = ev.AKPublic[:20]; return ev },
			sentinel: attestation.ErrMalformed, check: "attestation key",
		},
		{
			name:     "attestation key with a trailing byte",
			mutate:   func(ev *attestation.Evidence) *attestation.Evidence { ev.AKPublic = append(ev.AKPublic, 0); return ev },
			sentinel: attestation.ErrMalformed, check: "attestation key",
		},
		{
			name: "attestation key not restricted",
			mutate: func(ev *attestation.Evidence) *attestation.Evidence {
				p, err := tpm2.Unmarshal[tpm2.TPMTPublic](ev.AKPublic)
				if err != nil {
					t.Fatal(err)
				}
				p.ObjectAttributes.Restricted = false
				ev.AKPublic = tpm2.Marshal(p)
				return ev
			},
			sentinel: attestation.ErrUnsupported, check: "attestation key", detail: "not a restricted signing key",
		},
		{
			name:     "attestation key missing",
			mutate:   func(ev *attestation.Evidence) *attestation.Evidence { ev.AKPublic = nil; return ev },
			sentinel: attestation.ErrMissing, check: "attestation key",
		},
		{
			name: "signature from another key",
			mutate: func(ev *attestation.Evidence) *attestation.Evidence {
				sig, err := tpmtest.Sign(other, ev.Report)
				if err != nil {
					t.Fatal(err)
				}
				ev.Signature = sig
				return ev
			},
			sentinel: attestation.ErrSignature, check: "quote signature", detail: "does not verify",
		},
		{
			name: "signature over another quote",
			mutate: func(ev *attestation.Evidence) *attestation.Evidence {
				ev2, err := tpmtest.Quote(key, tpm2.TPMAlgSHA256, ev.PCRs, quotedPCRs, []byte("another nonce"))
				if err != nil {
					t.Fatal(err)
				}
				ev.Signature = ev2.Signature
				return ev
			},
			sentinel: attestation.ErrSignature, check: "quote signature",
		},
		{
			name: "rsa signature for an ecdsa key",
			mutate: func(ev *attestation.Evidence) *attestation.Evidence {
				sig, err := tpmtest.Sign(rsaKey(), ev.Report)
				if err != nil {
					t.Fatal(err)
				}
				ev.Signature = sig
				return ev
			},
			sentinel: attestation.ErrSignature, check: "quote signature", detail: "the attestation key signs with ecdsa-sha256",
		},
		{
			name: "signature in another scheme than the key's",
			mutate: func(ev *attestation.Evidence) *attestation.Evidence {
				sig, err := tpmtest.SignScheme(key, tpm2.TPMAlgECDSA, tpm2.TPMAlgSHA384, ev.Report)
				if err != nil {
					t.Fatal(err)
				}
				ev.Signature = sig
				return ev
			},
			sentinel: attestation.ErrSignature, check: "quote signature", detail: "ecdsa-sha384 signature, the attestation key signs with ecdsa-sha256",
		},
		{
			name: "sha1 signature refused",
			mutate: func(ev *attestation.Evidence) *attestation.Evidence {
				ev2, err := tpmtest.QuoteScheme(key, tpm2.TPMAlgECDSA, tpm2.TPMAlgSHA1, tpm2.TPMAlgSHA256, ev.PCRs, quotedPCRs, testNonce)
				if err != nil {
					t.Fatal(err)
				}
				ev2.EventLog = ev.EventLog
				return ev2
			},
			sentinel: attestation.ErrUnsupported, check: "quote signature", detail: "SHA-1",
		},
		{
			name: "hmac signature scheme",
			mutate: func(ev *attestation.Evidence) *attestation.Evidence {
				ev.Signature = tpm2.Marshal(tpm2.TPMTSignature{
					SigAlg:    tpm2.TPMAlgHMAC,
					Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgHMAC, &tpm2.TPMTHA{HashAlg: tpm2.TPMAlgSHA256, Digest: make([]byte, 32)}),
				})
				return ev
			},
			sentinel: attestation.ErrUnsupported, check: "quote signature",
		},
		{
			name: "ecdsa r not padded",
			mutate: func(ev *attestation.Evidence) *attestation.Evidence {
				s, err := tpm2.Unmarshal[tpm2.TPMTSignature](ev.Signature)
				if err != nil {
					t.Fatal(err)
				}
				e, err := s.Signature.ECDSA()
				if err != nil {
					t.Fatal(err)
				}
				e.SignatureR.Buffer = append([]byte{0}, e.SignatureR.Buffer...)
				ev.Signature = tpm2.Marshal(tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgECDSA, Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA, e)})
				return ev
			},
			sentinel: attestation.ErrMalformed, check: "quote signature",
		},
		{
			name: "signature truncated",
			mutate: func(ev *attestation.Evidence) *attestation.Evidence {
				ev.Signature = ev.Signature[:len(ev.Signature)-1]
				return ev
			},
			sentinel: attestation.ErrMalformed, check: "quote signature",
		},
		{
			name: "signature with a trailing byte",
			mutate: func(ev *attestation.Evidence) *attestation.Evidence {
				ev.Signature = append(ev.Signature, 0)
				return ev
			},
			sentinel: attestation.ErrMalformed, check: "quote signature",
		},
		{
			name: "wrong magic",
			mutate: func(ev *attestation.Evidence) *attestation.Evidence {
				return resign(t, key, ev, func(b []byte) []byte { binary.BigEndian.PutUint32(b, 0xff544348); return b })
			},
			sentinel: attestation.ErrMalformed, check: "quote", detail: "TPM_GENERATED_VALUE",
		},
		{
			name: "wrong type (certify)",
			mutate: func(ev *attestation.Evidence) *attestation.Evidence {
				return resign(t, key, ev, func(b []byte) []byte { binary.BigEndian.PutUint16(b[4:], uint16(tpm2.TPMSTAttestCertify)); return b })
			},
			sentinel: attestation.ErrMalformed, check: "quote", detail: "TPM_ST_ATTEST_QUOTE",
		},
		{
			name: "quote with a trailing byte",
			mutate: func(ev *attestation.Evidence) *attestation.Evidence {
				return resign(t, key, ev, func(b []byte) []byte { return append(b, 0) })
			},
			sentinel: attestation.ErrMalformed, check: "quote", detail: "trailing",
		},
		{
			name: "quote truncated",
			mutate: func(ev *attestation.Evidence) *attestation.Evidence {
				return resign(t, key, ev, func(b []byte) []byte { return b[:len(b)-3] })
			},
			sentinel: attestation.ErrMalformed, check: "quote",
		},
		{
			name:     "quote missing",
			mutate:   func(ev *attestation.Evidence) *attestation.Evidence { ev.Report = nil; return ev },
			sentinel: attestation.ErrMissing, check: "quote",
		},
		{
			name: "quote too large",
			mutate: func(ev *attestation.Evidence) *attestation.Evidence {
				ev.Report = make([]byte, 4097)
				return ev
			},
			sentinel: attestation.ErrTooLarge, check: "quote",
		},
		{
			name: "pcr value altered",
			mutate: func(ev *attestation.Evidence) *attestation.Evidence {
				ev.PCRs[4] = slices.Clone(ev.PCRs[4])
				ev.PCRs[4][0] ^= 1
				return ev
			},
			sentinel: attestation.ErrMismatch, check: "pcr digest",
		},
		{
			name:     "selected pcr not supplied",
			mutate:   func(ev *attestation.Evidence) *attestation.Evidence { delete(ev.PCRs, 5); return ev },
			sentinel: attestation.ErrMismatch, check: "pcr selection", detail: "quote selects PCR 5",
		},
		{
			name: "pcr supplied but not selected",
			mutate: func(ev *attestation.Evidence) *attestation.Evidence {
				ev.PCRs[9] = make([]byte, 32)
				return ev
			},
			sentinel: attestation.ErrMismatch, check: "pcr selection", detail: "evidence supplies PCR 9",
		},
		{
			name: "pcr value of the wrong size",
			mutate: func(ev *attestation.Evidence) *attestation.Evidence {
				ev.PCRs[3] = ev.PCRs[3][:20]
				return ev
			},
			sentinel: attestation.ErrMalformed, check: "pcrs",
		},
		{
			name: "two banks selected",
			mutate: func(ev *attestation.Evidence) *attestation.Evidence {
				return resignAttest(t, key, ev, func(q *tpm2.TPMSQuoteInfo) {
					q.PCRSelect.PCRSelections = append(q.PCRSelect.PCRSelections, tpm2.TPMSPCRSelection{Hash: tpm2.TPMAlgSHA1, PCRSelect: []byte{1, 0, 0}})
				})
			},
			sentinel: attestation.ErrMismatch, check: "pcr selection", detail: "2 PCR banks",
		},
		{
			name: "no pcrs selected",
			mutate: func(ev *attestation.Evidence) *attestation.Evidence {
				return resignAttest(t, key, ev, func(q *tpm2.TPMSQuoteInfo) {
					q.PCRSelect.PCRSelections[0].PCRSelect = []byte{0, 0, 0}
				})
			},
			sentinel: attestation.ErrMismatch, check: "pcr selection", detail: "no PCRs",
		},
		{
			name: "pcr 24 selected",
			mutate: func(ev *attestation.Evidence) *attestation.Evidence {
				return resignAttest(t, key, ev, func(q *tpm2.TPMSQuoteInfo) {
					q.PCRSelect.PCRSelections[0].PCRSelect = []byte{0xff, 0, 0, 1}
				})
			},
			sentinel: attestation.ErrMalformed, check: "pcr selection", detail: "PCR 24",
		},
		{
			name: "sha1 bank refused",
			mutate: func(ev *attestation.Evidence) *attestation.Evidence {
				ev2, err := tpmtest.Quote(key, tpm2.TPMAlgSHA1, sha1PCRs, quotedPCRs, testNonce)
				if err != nil {
					t.Fatal(err)
				}
				ev2.EventLog = ev.EventLog
				return ev2
			},
			sentinel: attestation.ErrUnsupported, check: "pcr bank", detail: "SHA-1",
		},
		{
			name: "sm3 bank",
			mutate: func(ev *attestation.Evidence) *attestation.Evidence {
				return resignAttest(t, key, ev, func(q *tpm2.TPMSQuoteInfo) {
					q.PCRSelect.PCRSelections[0].Hash = tpm2.TPMAlgSM3256
				})
			},
			sentinel: attestation.ErrUnsupported, check: "pcr bank",
		},
		{
			name: "event log digest altered",
			mutate: func(ev *attestation.Evidence) *attestation.Evidence {
				ev.EventLog = alteredLog(t, 7)
				return ev
			},
			sentinel: attestation.ErrMismatch, check: "event log replay", detail: "PCR 7: the event log replays to sha256 ",
		},
		{
			name: "event log of another machine",
			mutate: func(ev *attestation.Evidence) *attestation.Evidence {
				ev.EventLog = testdata.TPMEventLogUbuntu2404
				return ev
			},
			sentinel: attestation.ErrMismatch, check: "event log replay", detail: "PCR 0:",
		},
		{
			name: "event log without the quoted bank",
			mutate: func(ev *attestation.Evidence) *attestation.Evidence {
				ev2, err := tpmtest.Quote(key, tpm2.TPMAlgSHA512, sha512PCRs, quotedPCRs, testNonce)
				if err != nil {
					t.Fatal(err)
				}
				ev2.EventLog = ev.EventLog
				return ev2
			},
			sentinel: attestation.ErrMismatch, check: "event log replay", detail: "no sha512 digest",
		},
		{
			name: "event log truncated",
			mutate: func(ev *attestation.Evidence) *attestation.Evidence {
				ev.EventLog = ev.EventLog[:len(ev.EventLog)-100]
				return ev
			},
			sentinel: attestation.ErrMalformed, check: "event log", detail: "truncated",
		},
		{
			name: "event log too large",
			mutate: func(ev *attestation.Evidence) *attestation.Evidence {
				ev.EventLog = append(slices.Clone(ev.EventLog), make([]byte, attestation.MaxEvidenceSize)...)
				return ev
			},
			sentinel: attestation.ErrTooLarge, check: "event log",
		},
		{
			name:     "evidence for another tee",
			mutate:   func(ev *attestation.Evidence) *attestation.Evidence { ev.TEE = attestation.TEESEVSNP; return ev },
			sentinel: attestation.ErrUnsupported, check: "tee",
		},
		{
			name:     "no evidence",
			mutate:   func(ev *attestation.Evidence) *attestation.Evidence { return nil },
			sentinel: attestation.ErrMissing, check: "evidence",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev := rhel8Evidence(t, key)
			if tc.mutate != nil {
				ev = tc.mutate(ev)
			}
			trusted := tc.trusted
			if trusted == nil {
				trusted = []crypto.PublicKey{&key.PublicKey}
			}
			claims, err := newVerifier(t, false, trusted...).Verify(context.Background(), ev)
			if claims != nil {
				t.Errorf("Verify returned claims with an error")
			}
			checkErr(t, err, tc.sentinel, tc.check)
			if !strings.Contains(err.Error(), tc.detail) {
				t.Errorf("err = %v, want it to contain %q", err, tc.detail)
			}
		})
	}
}

// TestVerifyFlippedBits flips every bit of the quote and of the signature
// in turn: none of them ever verifies.
func TestVerifyFlippedBits(t *testing.T) {
	key := syntheticKey(t, "bit flips")
	orig := rhel8Evidence(t, key)
	v := newVerifier(t, false, &key.PublicKey)
	if _, err := v.Verify(context.Background(), orig); err != nil {
		t.Fatalf("Verify(original): %v", err)
	}
	fields := []struct {
		name   string
		get    func(ev *attestation.Evidence) *[]byte
		allow  []error
		checks []string
	}{
		{"report", func(ev *attestation.Evidence) *[]byte { return &ev.Report }, []error{attestation.ErrSignature, attestation.ErrMalformed}, []string{"quote signature", "quote"}},
		{"signature", func(ev *attestation.Evidence) *[]byte { return &ev.Signature }, []error{attestation.ErrSignature, attestation.ErrMalformed, attestation.ErrUnsupported}, []string{"quote signature"}},
	}
	for _, f := range fields {
		t.Run(f.name, func(t *testing.T) {
			for i := range len(*f.get(orig)) {
				for bit := range 8 {
					ev := *orig
					b := slices.Clone(*f.get(orig))
					b[i] ^= 1 << bit
					*f.get(&ev) = b
					claims, err := v.Verify(context.Background(), &ev)
					if err == nil || claims != nil {
						t.Fatalf("byte %d bit %d flipped: Verify succeeded", i, bit)
					}
					var ae *attestation.Error
					if !errors.As(err, &ae) || !slices.Contains(f.checks, ae.Check) || !slices.ContainsFunc(f.allow, func(s error) bool { return errors.Is(err, s) }) {
						t.Fatalf("byte %d bit %d flipped: err = %v, want one of %v for checks %v", i, bit, err, f.allow, f.checks)
					}
				}
			}
		})
	}
}

// TestVerifyFlippedAKBits flips every bit of the AK public area. Only the
// key is authenticated (by enrollment), so a flip may verify only if it
// changed nothing but the fields that do not bear on a quote: the auth
// policy and the object attributes Verify does not require.
func TestVerifyFlippedAKBits(t *testing.T) {
	key := syntheticKey(t, "bit flips")
	orig := rhel8Evidence(t, key)
	v := newVerifier(t, false, &key.PublicKey)
	origPub, err := tpm2.Unmarshal[tpm2.TPMTPublic](orig.AKPublic)
	if err != nil {
		t.Fatal(err)
	}
	accepted := 0
	for i := range len(orig.AKPublic) {
		for bit := range 8 {
			ev := *orig
			ev.AKPublic = slices.Clone(orig.AKPublic)
			ev.AKPublic[i] ^= 1 << bit
			_, err := v.Verify(context.Background(), &ev)
			if err != nil {
				var ae *attestation.Error
				if !errors.As(err, &ae) || ae.Check != "attestation key" {
					t.Fatalf("byte %d bit %d flipped: err = %v, want an attestation key error", i, bit, err)
				}
				continue
			}
			accepted++
			p, err := tpm2.Unmarshal[tpm2.TPMTPublic](ev.AKPublic)
			if err != nil {
				t.Fatalf("byte %d bit %d flipped: verified but does not parse: %v", i, bit, err)
			}
			if p.ObjectAttributes.Restricted != origPub.ObjectAttributes.Restricted || p.ObjectAttributes.SignEncrypt != origPub.ObjectAttributes.SignEncrypt {
				t.Fatalf("byte %d bit %d flipped: verified with changed restricted/sign attributes", i, bit)
			}
			p.ObjectAttributes = origPub.ObjectAttributes
			p.AuthPolicy = origPub.AuthPolicy
			if !slices.Equal(tpm2.Marshal(p), orig.AKPublic) {
				t.Fatalf("byte %d bit %d flipped: verified with a change outside the attributes and auth policy", i, bit)
			}
		}
	}
	// 32 attribute bits minus the six Verify requires.
	if accepted > 26 {
		t.Errorf("%d flips verified, want at most 26", accepted)
	}
}

func TestNew(t *testing.T) {
	now := func() time.Time { return fixedNow }
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		opts    tpm.Options
		wantErr bool
	}{
		{"ok", tpm.Options{Now: now, TrustedAKs: []crypto.PublicKey{&syntheticKey(t, "new").PublicKey, &rsaKey().PublicKey}}, false},
		{"no trusted keys is allowed", tpm.Options{Now: now}, false},
		{"no clock", tpm.Options{TrustedAKs: []crypto.PublicKey{&syntheticKey(t, "new").PublicKey}}, true},
		{"ed25519 key", tpm.Options{Now: now, TrustedAKs: []crypto.PublicKey{edPub}}, true},
		{"ecdsa key by value", tpm.Options{Now: now, TrustedAKs: []crypto.PublicKey{syntheticKey(t, "new").PublicKey}}, true},
		{"nil rsa key", tpm.Options{Now: now, TrustedAKs: []crypto.PublicKey{(*rsa.PublicKey)(nil)}}, true},
		{"nil ecdsa key", tpm.Options{Now: now, TrustedAKs: []crypto.PublicKey{(*ecdsa.PublicKey)(nil)}}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := tpm.New(tc.opts)
			if gotErr := err != nil; gotErr != tc.wantErr || (v == nil) != tc.wantErr {
				t.Errorf("New() = %v, %v; want error %t", v, err, tc.wantErr)
			}
		})
	}
}

func TestParseAKPublic(t *testing.T) {
	p256 := syntheticKey(t, "ak")
	p384, err := tpmtest.ECDSAKey(elliptic.P384(), "ak")
	if err != nil {
		t.Fatal(err)
	}
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	for _, pub := range []crypto.PublicKey{&p256.PublicKey, &p384.PublicKey, &rsaKey().PublicKey} {
		b, err := tpmtest.AKPublic(pub)
		if err != nil {
			t.Fatal(err)
		}
		got, err := tpm.ParseAKPublic(b)
		if err != nil {
			t.Fatalf("ParseAKPublic(%T): %v", pub, err)
		}
		if !got.(interface{ Equal(crypto.PublicKey) bool }).Equal(pub) {
			t.Errorf("ParseAKPublic(%T) = %v, want %v", pub, got, pub)
		}
	}

	akBytes := func(pub crypto.PublicKey, mutate func(p *tpm2.TPMTPublic)) []byte {
		b, err := tpmtest.AKPublic(pub)
		if err != nil {
			t.Fatal(err)
		}
		p, err := tpm2.Unmarshal[tpm2.TPMTPublic](b)
		if err != nil {
			t.Fatal(err)
		}
		mutate(p)
		return tpm2.Marshal(p)
	}
	tests := []struct {
		name     string
		b        []byte
		sentinel error
	}{
		{"empty", nil, attestation.ErrMalformed},
		{"too large", make([]byte, 4097), attestation.ErrTooLarge},
		{"decrypt key", akBytes(&p256.PublicKey, func(p *tpm2.TPMTPublic) { p.ObjectAttributes.Decrypt = true }), attestation.ErrUnsupported},
		{"not a signing key", akBytes(&p256.PublicKey, func(p *tpm2.TPMTPublic) { p.ObjectAttributes.SignEncrypt = false }), attestation.ErrUnsupported},
		{"point off the curve", akBytes(&p256.PublicKey, func(p *tpm2.TPMTPublic) {
			pt, err := p.Unique.ECC()
			if err != nil {
				t.Fatal(err)
			}
			pt.Y.Buffer = slices.Clone(pt.Y.Buffer)
			pt.Y.Buffer[31] ^= 1
			p.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, pt)
		}), attestation.ErrMalformed},
		{"rsa 1024", akBytes(&small.PublicKey, func(*tpm2.TPMTPublic) {}), attestation.ErrUnsupported},
		{"exportable (not fixedTPM)", akBytes(&p256.PublicKey, func(p *tpm2.TPMTPublic) { p.ObjectAttributes.FixedTPM = false }), attestation.ErrUnsupported},
		{"imported (not sensitiveDataOrigin)", akBytes(&p256.PublicKey, func(p *tpm2.TPMTPublic) { p.ObjectAttributes.SensitiveDataOrigin = false }), attestation.ErrUnsupported},
		{"unknown name algorithm", akBytes(&p256.PublicKey, func(p *tpm2.TPMTPublic) { p.NameAlg = 0x0b0b }), attestation.ErrUnsupported},
		{"rsa keyBits mismatch", akBytes(&rsaKey().PublicKey, func(p *tpm2.TPMTPublic) {
			parms, err := p.Parameters.RSADetail()
			if err != nil {
				t.Fatal(err)
			}
			parms.KeyBits = 3072
			p.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, parms)
		}), attestation.ErrMalformed},
		{"ecdaa scheme", akBytes(&p256.PublicKey, func(p *tpm2.TPMTPublic) {
			parms, err := p.Parameters.ECCDetail()
			if err != nil {
				t.Fatal(err)
			}
			parms.Scheme = tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgECDAA, Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDAA, &tpm2.TPMSSchemeECDAA{HashAlg: tpm2.TPMAlgSHA256})}
			p.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, parms)
		}), attestation.ErrUnsupported},
		{"symmetric algorithm", akBytes(&p256.PublicKey, func(p *tpm2.TPMTPublic) {
			parms, err := p.Parameters.ECCDetail()
			if err != nil {
				t.Fatal(err)
			}
			parms.Symmetric = tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgAES, KeyBits: tpm2.NewTPMUSymKeyBits(tpm2.TPMAlgAES, tpm2.TPMKeyBits(128)), Mode: tpm2.NewTPMUSymMode(tpm2.TPMAlgAES, tpm2.TPMAlgCFB)}
			p.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, parms)
		}), attestation.ErrUnsupported},
		{"keyedhash", tpm2.Marshal(tpm2.TPMTPublic{
			Type:             tpm2.TPMAlgKeyedHash,
			NameAlg:          tpm2.TPMAlgSHA256,
			ObjectAttributes: tpm2.TPMAObject{Restricted: true, SignEncrypt: true},
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgKeyedHash, &tpm2.TPMSKeyedHashParms{
				Scheme: tpm2.TPMTKeyedHashScheme{Scheme: tpm2.TPMAlgNull},
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgKeyedHash, &tpm2.TPM2BDigest{Buffer: make([]byte, 32)}),
		}), attestation.ErrUnsupported},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tpm.ParseAKPublic(tc.b)
			if got != nil {
				t.Errorf("ParseAKPublic returned a key with an error")
			}
			checkErr(t, err, tc.sentinel, "attestation key")
		})
	}
}

// TestVerifyConcurrent runs one verifier from several goroutines (run with
// -race).
func TestVerifyConcurrent(t *testing.T) {
	key := syntheticKey(t, "concurrent")
	ev := rhel8Evidence(t, key)
	v := newVerifier(t, false, &key.PublicKey)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if _, err := v.Verify(context.Background(), ev); err != nil {
				t.Errorf("Verify: %v", err)
			}
		})
	}
	wg.Wait()
}

// TestStrippedEventLog: a log cut down to its header replays none of the
// quoted PCRs; the claims must not say every check ran.
func TestStrippedEventLog(t *testing.T) {
	events, err := tpm.ParseEventLog(testdata.TPMEventLogRHEL8)
	if err != nil {
		t.Fatal(err)
	}
	pcrs, err := tpm.Replay(events, tpm2.TPMAlgSHA256)
	if err != nil {
		t.Fatal(err)
	}
	key := syntheticKey(t, "stripped")
	ev, err := tpmtest.Quote(key, tpm2.TPMAlgSHA256, pcrs, []int{0, 1, 2, 3, 4, 5, 6, 7}, []byte("n"))
	if err != nil {
		t.Fatal(err)
	}
	// Keep only the Spec ID header event: its length is the log's first
	// event (32-byte TCG_PCClientPCREvent header fields + event data).
	hdr := headerEventLen(t, testdata.TPMEventLogRHEL8)
	ev.EventLog = testdata.TPMEventLogRHEL8[:hdr]
	v := newVerifier(t, false, &key.PublicKey)
	c, err := v.Verify(context.Background(), ev)
	if err != nil {
		t.Fatalf("Verify() = %v", err)
	}
	if diff := cmp.Diff([]string{"event log"}, c.Unchecked); diff != "" {
		t.Errorf("Unchecked with a stripped log (-want +got):\n%s", diff)
	}
}

// headerEventLen returns the length of the first (SHA-1 format) event of a
// TCG log: pcrIndex, eventType, 20-byte digest, eventSize, event.
func headerEventLen(t *testing.T, b []byte) int {
	t.Helper()
	if len(b) < 32 {
		t.Fatal("log too short")
	}
	size := int(binary.LittleEndian.Uint32(b[28:32]))
	return 32 + size
}

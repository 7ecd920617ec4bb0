package tdx

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/testdata"
)

var sentinels = []error{
	attestation.ErrMalformed, attestation.ErrTooLarge, attestation.ErrSignature, attestation.ErrChain,
	attestation.ErrExpired, attestation.ErrRevoked, attestation.ErrMissing, attestation.ErrMismatch,
	attestation.ErrCollateral, attestation.ErrUnsupported,
}

// checkWellFormed asserts that err is an *attestation.Error with a check
// name wrapping exactly one sentinel.
func checkWellFormed(t *testing.T, err error) {
	t.Helper()
	var ae *attestation.Error
	if !errors.As(err, &ae) || ae.Check == "" {
		t.Fatalf("error %v is not an *attestation.Error with a check", err)
	}
	n := 0
	for _, s := range sentinels {
		if errors.Is(ae.Err, s) {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("error %v wraps %d sentinels, want 1", err, n)
	}
}

// fuzzBaseline is the verifier and the recorded quote's claims.
var fuzzBaseline = sync.OnceValues(func() (*Verifier, *attestation.Claims) {
	v, err := New(Options{Now: fixed(testNow)})
	if err != nil {
		panic(err)
	}
	c, err := v.Verify(context.Background(), tdxEvidence(testdata.TDXQuote))
	if err != nil {
		panic(err)
	}
	return v, c
})

// FuzzQuote feeds arbitrary bytes to the verifier (trusting only Intel's
// root, no collateral). It must never panic, every failure must be a
// well-formed *attestation.Error, and anything that verifies must carry
// exactly the recorded quote's claims: only the recorded quote's unsigned
// trailing bytes may change.
func FuzzQuote(f *testing.F) {
	f.Add(testdata.TDXQuote)
	f.Add(testdata.TDXQuote[:len(testdata.TDXQuote)-39])
	f.Add(synth().quote(nil))
	f.Add(testdata.TDXQuote[:headerSize])
	f.Add(testdata.TDXQuote[:signedOffset+4])
	f.Add(with(testdata.TDXQuote, 0, 5))
	v, want := fuzzBaseline()
	f.Fuzz(func(t *testing.T, raw []byte) {
		got, err := v.Verify(context.Background(), tdxEvidence(raw))
		if err != nil {
			checkWellFormed(t, err)
			return
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("a different quote verified with different claims (-recorded +got):\n%s", diff)
		}
	})
}

// FuzzTCBInfo fuzzes the collateral JSON: the signed-body envelope, the
// TCB info parser and the QE identity parser. Parsers must not panic and
// must round-trip what they accept; the envelope must only ever yield the
// exact bytes that the synthetic TCB signing key signed.
func FuzzTCBInfo(f *testing.F) {
	p := synth()
	spec := defaultColl(p)
	spec.tcb.TDXModuleIdentities = []tdxModuleIdentityJSON{{ID: "TDX_01", MRSigner: spec.tcb.TDXModule.MRSigner,
		Attributes: "0000000000000000", AttributesMask: "FFFFFFFFFFFFFFFF",
		TCBLevels: []tcbLevelJSON{{TCB: tcbJSON{ISVSVN: 2}, TCBDate: "2024-03-13T00:00:00Z", TCBStatus: "UpToDate"}}}}
	c := spec.collateral()
	signedTCB, err := json.Marshal(spec.tcb)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(c.TCBInfo)
	f.Add(c.QEIdentity)
	f.Add(testdata.TDXTCBInfo)
	f.Add(testdata.TDXQEIdentity)
	f.Add([]byte(`{"tcbInfo":{},"signature":""}`))
	v, err := New(Options{Now: fixed(testNow), Roots: p.roots(f)})
	if err != nil {
		f.Fatal(err)
	}
	eq := cmp.Options{cmp.AllowUnexported(tcbInfo{}, moduleIdentity{}, tcbLevel{}, qeIdentity{}), cmpopts.EquateEmpty()}
	f.Fuzz(func(t *testing.T, body []byte) {
		raw, _, err := v.verifySigned("tcb info", "tcbInfo", body, c.TCBInfoIssuerChain, testNow)
		if err == nil && !bytes.Equal(raw, signedTCB) {
			t.Fatalf("envelope accepted %q, which the key did not sign", raw)
		}
		if err != nil {
			checkWellFormed(t, err)
		}

		var outer map[string]json.RawMessage
		if json.Unmarshal(body, &outer) != nil {
			outer = map[string]json.RawMessage{"tcbInfo": body, "enclaveIdentity": body}
		}
		if inner := outer["tcbInfo"]; inner != nil {
			if ti, err := parseTCBInfo(inner); err == nil {
				var j tcbInfoJSON
				if err := json.Unmarshal(inner, &j); err != nil {
					t.Fatalf("parsed but does not unmarshal: %v", err)
				}
				again := mustMarshal(t, j)
				ti2, err := parseTCBInfo(again)
				if err != nil {
					t.Fatalf("re-encoded TCB info %s does not parse: %v", again, err)
				}
				if diff := cmp.Diff(ti, ti2, eq); diff != "" {
					t.Fatalf("TCB info changed in a round trip (-first +second):\n%s", diff)
				}
			}
		}
		if inner := outer["enclaveIdentity"]; inner != nil {
			if qi, err := parseQEIdentity(inner); err == nil {
				var j qeIdentityJSON
				if err := json.Unmarshal(inner, &j); err != nil {
					t.Fatalf("parsed but does not unmarshal: %v", err)
				}
				again := mustMarshal(t, j)
				qi2, err := parseQEIdentity(again)
				if err != nil {
					t.Fatalf("re-encoded QE identity %s does not parse: %v", again, err)
				}
				if diff := cmp.Diff(qi, qi2, eq); diff != "" {
					t.Fatalf("QE identity changed in a round trip (-first +second):\n%s", diff)
				}
			}
		}
	})
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

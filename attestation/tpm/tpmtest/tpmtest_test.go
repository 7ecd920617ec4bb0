package tpmtest_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-tpm/tpm2"

	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/attestation/tpm"
	"github.com/greatjail/cvm/attestation/tpm/tpmtest"
)

func zeroPCRs(size int, indices ...int) map[int][]byte {
	m := map[int][]byte{}
	for _, i := range indices {
		m[i] = make([]byte, size)
	}
	return m
}

// TestQuoteVerifies: what Quote builds is what the tpm verifier accepts,
// and its TPMS_ATTEST carries what was asked for.
func TestQuoteVerifies(t *testing.T) {
	p256, err := tpmtest.ECDSAKey(elliptic.P256(), "tpmtest")
	if err != nil {
		t.Fatal(err)
	}
	p384, err := tpmtest.ECDSAKey(elliptic.P384(), "tpmtest")
	if err != nil {
		t.Fatal(err)
	}
	rsaK, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		key     crypto.Signer
		alg     tpm2.TPMAlgID
		size    int
		indices []int
	}{
		{"p256 sha256", p256, tpm2.TPMAlgSHA256, 32, []int{7, 0, 4}},
		{"p384 sha384", p384, tpm2.TPMAlgSHA384, 48, []int{23}},
		{"rsa sha512", rsaK, tpm2.TPMAlgSHA512, 64, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pcrs := zeroPCRs(tc.size, tc.indices...)
			pcrs[99] = []byte("ignored: not quoted")
			ev, err := tpmtest.Quote(tc.key, tc.alg, pcrs, tc.indices, []byte("nonce"))
			if err != nil {
				t.Fatal(err)
			}
			a, err := tpm2.Unmarshal[tpm2.TPMSAttest](ev.Report)
			if err != nil {
				t.Fatal(err)
			}
			q, err := a.Attested.Quote()
			if err != nil {
				t.Fatal(err)
			}
			if got := string(a.ExtraData.Buffer); got != "nonce" || a.ClockInfo.Clock != tpmtest.Clock || a.FirmwareVersion != tpmtest.FirmwareVersion {
				t.Errorf("TPMS_ATTEST = %+v", a)
			}
			if len(q.PCRSelect.PCRSelections) != 1 || q.PCRSelect.PCRSelections[0].Hash != tc.alg {
				t.Errorf("selection = %+v, want one %v bank", q.PCRSelect, tc.alg)
			}
			if diff := cmp.Diff(zeroPCRs(tc.size, tc.indices...), ev.PCRs); diff != "" {
				t.Errorf("PCRs (-want +got):\n%s", diff)
			}
			v, err := tpm.New(tpm.Options{Now: func() time.Time { return time.Unix(0, 0) }, TrustedAKs: []crypto.PublicKey{tc.key.Public()}})
			if err != nil {
				t.Fatal(err)
			}
			claims, err := v.Verify(context.Background(), ev)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			var got []int
			for i := range claims.PCRs.Values {
				got = append(got, i)
			}
			slices.Sort(got)
			want := slices.Sorted(slices.Values(tc.indices))
			if !slices.Equal(got, want) {
				t.Errorf("claimed PCRs %v, want %v", got, want)
			}
		})
	}
}

func TestQuoteErrors(t *testing.T) {
	key, err := tpmtest.ECDSAKey(elliptic.P256(), "tpmtest")
	if err != nil {
		t.Fatal(err)
	}
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		key     crypto.Signer
		alg     tpm2.TPMAlgID
		pcrs    map[int][]byte
		indices []int
	}{
		{"missing value", key, tpm2.TPMAlgSHA256, zeroPCRs(32, 0), []int{0, 1}},
		{"wrong size", key, tpm2.TPMAlgSHA256, zeroPCRs(20, 0), []int{0}},
		{"duplicate index", key, tpm2.TPMAlgSHA256, zeroPCRs(32, 0), []int{0, 0}},
		{"index 24", key, tpm2.TPMAlgSHA256, zeroPCRs(32, 24), []int{24}},
		{"no indices", key, tpm2.TPMAlgSHA256, zeroPCRs(32, 0), nil},
		{"sm3 bank", key, tpm2.TPMAlgSM3256, zeroPCRs(32, 0), []int{0}},
		{"p224 key", p224, tpm2.TPMAlgSHA256, zeroPCRs(32, 0), []int{0}},
		{"ed25519 key", edKey, tpm2.TPMAlgSHA256, zeroPCRs(32, 0), []int{0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if ev, err := tpmtest.Quote(tc.key, tc.alg, tc.pcrs, tc.indices, nil); err == nil {
				t.Errorf("Quote() = %v, want an error", ev)
			}
		})
	}
}

func TestECDSAKeyDeterministic(t *testing.T) {
	a, err := tpmtest.ECDSAKey(elliptic.P256(), "same")
	if err != nil {
		t.Fatal(err)
	}
	b, err := tpmtest.ECDSAKey(elliptic.P256(), "same")
	if err != nil {
		t.Fatal(err)
	}
	c, err := tpmtest.ECDSAKey(elliptic.P256(), "other")
	if err != nil {
		t.Fatal(err)
	}
	if !a.Equal(b) || a.Equal(c) {
		t.Errorf("ECDSAKey: same label equal = %t, other label equal = %t; want true, false", a.Equal(b), a.Equal(c))
	}
	if _, err := tpmtest.ECDSAKey(elliptic.P224(), "x"); err == nil {
		t.Errorf("ECDSAKey(P-224) succeeded, want an error")
	}
}

// TestEvidenceFields: Quote fills exactly the TPM fields of the evidence.
func TestEvidenceFields(t *testing.T) {
	key, err := tpmtest.ECDSAKey(elliptic.P256(), "tpmtest")
	if err != nil {
		t.Fatal(err)
	}
	ev, err := tpmtest.Quote(key, tpm2.TPMAlgSHA256, zeroPCRs(32, 0), []int{0}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ak, err := tpmtest.AKPublic(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	if ev.TEE != attestation.TEETPM || !slices.Equal(ev.AKPublic, ak) || ev.EventLog != nil || ev.Certificates != nil || ev.CertTable != nil {
		t.Errorf("evidence = %+v", ev)
	}
}

package tpm

import (
	"bytes"
	"crypto/elliptic"
	"errors"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/attestation/tpm/tpmtest"
)

// FuzzParseAttest parses TPMS_ATTEST bytes: what parses is a quote with
// the TPM_GENERATED magic that re-encodes to exactly the input.
func FuzzParseAttest(f *testing.F) {
	key, err := tpmtest.ECDSAKey(elliptic.P256(), "fuzz attest")
	if err != nil {
		f.Fatal(err)
	}
	for _, tc := range []struct {
		alg     tpm2.TPMAlgID
		indices []int
		nonce   []byte
	}{
		{tpm2.TPMAlgSHA256, []int{0, 1, 2, 3, 4, 5, 6, 7}, []byte("nonce")},
		{tpm2.TPMAlgSHA384, []int{0, 23}, make([]byte, 64)},
		{tpm2.TPMAlgSHA1, []int{7}, nil},
	} {
		pcrs := map[int][]byte{}
		for _, i := range tc.indices {
			pcrs[i] = make([]byte, hashes[tc.alg].Size())
		}
		ev, err := tpmtest.Quote(key, tc.alg, pcrs, tc.indices, tc.nonce)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(ev.Report)
		f.Add(ev.Report[:len(ev.Report)-1])
		f.Add(append(bytes.Clone(ev.Report), 0))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		a, q, err := parseAttest(b)
		if err != nil {
			var ae *attestation.Error
			if a != nil || q != nil || !errors.As(err, &ae) || ae.Check != "quote" || !errors.Is(err, attestation.ErrMalformed) {
				t.Fatalf("parseAttest error %v (results %v, %v), want a quote ErrMalformed alone", err, a, q)
			}
			return
		}
		if a.Magic != tpm2.TPMGeneratedValue || a.Type != tpm2.TPMSTAttestQuote || q == nil {
			t.Fatalf("parseAttest accepted magic %#x type %#x quote %v", a.Magic, a.Type, q)
		}
		if got := tpm2.Marshal(a); !bytes.Equal(got, b) {
			t.Fatalf("re-encoding differs from the input:\n got %x\nwant %x", got, b)
		}
	})
}

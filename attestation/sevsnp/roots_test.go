package sevsnp

import (
	"encoding/pem"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-sev-guest/kds"
	"github.com/google/go-sev-guest/verify/trust"
	"github.com/greatjail/cvm/testdata"
)

func TestPinnedRoots(t *testing.T) {
	r := PinnedRoots()
	if diff := cmp.Diff([]string{"Milan", "Genoa", "Turin"}, r.Products()); diff != "" {
		t.Errorf("Products (-want +got):\n%s", diff)
	}
	for _, line := range productLines {
		chains := r.chains[line]
		if len(chains) != 1 {
			t.Fatalf("%s: %d chains, want 1 (VCEK and VLEK bundles share the ARK)", line, len(chains))
		}
		c := chains[0]
		for _, x := range []struct{ got, want string }{
			{c.ark.Subject.CommonName, "ARK-" + line},
			{c.ask.Subject.CommonName, "SEV-" + line},
			{c.asvk.Subject.CommonName, "SEV-VLEK-" + line},
		} {
			if x.got != x.want {
				t.Errorf("%s: got %q, want %q", line, x.got, x.want)
			}
		}
	}
	// The testdata copy of the Milan bundle is the pinned one.
	ask, _, err := kds.ParseProductCertChain(testdata.SNPMilanASKARK)
	if err != nil {
		t.Fatal(err)
	}
	if string(r.chains["Milan"][0].ask.Raw) != string(ask) {
		t.Error("pinned Milan ASK differs from testdata/snp/milan-ask-ark.pem")
	}
	if PinnedRoots() != r {
		t.Error("PinnedRoots is parsed more than once")
	}
}

func TestParseRoots(t *testing.T) {
	f := newFake(t, fakeOpts{hwid: testHWID, tcb: milanTCB})
	milanASK, milanARK, err := kds.ParseProductCertChain(trust.AskArkMilanVcekBytes)
	if err != nil {
		t.Fatal(err)
	}
	pemOf := func(ders ...[]byte) []byte {
		var b []byte
		for _, d := range ders {
			b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: d})...)
		}
		return b
	}
	for _, tc := range []struct {
		name      string
		in        [][]byte
		products  []string
		errSubstr string // empty: success
	}{
		{name: "kds bundle", in: [][]byte{trust.AskArkMilanVcekBytes}, products: []string{"Milan"}},
		{name: "der certificates in any order", in: [][]byte{milanARK, milanASK}, products: []string{"Milan"}},
		{name: "vcek and vlek bundles", in: [][]byte{trust.AskArkGenoaVlekBytes, trust.AskArkGenoaVcekBytes}, products: []string{"Genoa"}},
		{name: "two product lines", in: [][]byte{trust.AskArkTurinVcekBytes, pemOf(milanASK, milanARK)}, products: []string{"Milan", "Turin"}},
		{name: "fake chain with asvk", in: [][]byte{f.signer.Ark.Raw, f.signer.Ask.Raw, f.signer.Asvk.Raw}, products: []string{"Milan"}},
		{name: "nothing", in: nil, errSubstr: "no root certificates"},
		{name: "ask without ark", in: [][]byte{milanASK}, errSubstr: "has no ARK-Milan"},
		{name: "ark without ask", in: [][]byte{milanARK}, errSubstr: "without an ASK or ASVK"},
		{name: "ask of another ark", in: [][]byte{milanARK, f.signer.Ask.Raw}, errSubstr: "has no ARK-Milan"},
		{name: "vcek is no root", in: [][]byte{trust.AskArkMilanVcekBytes, testdata.SNPMilanVCEK}, errSubstr: "not an AMD ARK, ASK or ASVK"},
		{name: "garbage", in: [][]byte{[]byte("garbage")}, errSubstr: "not PEM"},
		{name: "pem of a key", in: [][]byte{pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}})}, errSubstr: "want CERTIFICATE"},
		{name: "pem with trailing junk", in: [][]byte{append(pemOf(milanASK, milanARK), "junk"...)}, errSubstr: "trailing data"},
		{name: "foreign root", in: [][]byte{selfSigned(t, "ARK-Milan")}, errSubstr: "want RSA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseRoots(tc.in...)
			if tc.errSubstr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errSubstr) {
					t.Fatalf("ParseRoots = %v, %v; want error containing %q", r, err, tc.errSubstr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseRoots: %v", err)
			}
			if diff := cmp.Diff(tc.products, r.Products()); diff != "" {
				t.Errorf("Products (-want +got):\n%s", diff)
			}
		})
	}
}

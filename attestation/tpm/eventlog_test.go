package tpm_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-tpm/tpm2"

	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/attestation/tpm"
	"github.com/greatjail/cvm/testdata"
)

func hexPCRs(m map[int]string) map[int][]byte {
	out := make(map[int][]byte, len(m))
	for i, s := range m {
		b, err := hex.DecodeString(s)
		if err != nil {
			panic(err)
		}
		out[i] = b
	}
	return out
}

// recordedPCRs are the PCR values the TPMs reported alongside these logs,
// as go-eventlog v0.0.2 records them in tpmeventlog/replay_test.go (Rhel8GCE,
// Ubuntu2404AmdSevSnp). They check the replay independently of the golden
// files, which this package writes itself.
var recordedPCRs = map[string]map[tpm2.TPMAlgID]map[int][]byte{
	"rhel8": {
		tpm2.TPMAlgSHA1: hexPCRs(map[int]string{
			0:  "0f2d3a2a1adaa479aeeca8f5df76aadc41b862ea",
			1:  "5cc549378bafaa92e965c7e9c287925cfff33abd",
			2:  "b2a83b0ebf2f8374299a5b2bdfc31ea955ad7236",
			3:  "b2a83b0ebf2f8374299a5b2bdfc31ea955ad7236",
			4:  "7fbe2df30156ca4934109f48d850ab327110f8fa",
			5:  "3258daa13f4cccf245c170481c76e2a4602e5a7b",
			6:  "b2a83b0ebf2f8374299a5b2bdfc31ea955ad7236",
			7:  "d7a632f8990b2171e987041b0a3c69fc1b2a4f27",
			8:  "15aab2077008f8325e7c61ee39fedd7118aad5d7",
			9:  "25de9455ef4e8180b76bbb9bb54a82f9a73abb0a",
			14: "1f5149668c40524e01be9cbc3ad527645943f148",
		}),
		tpm2.TPMAlgSHA256: hexPCRs(map[int]string{
			0:  "24af52a4f429b71a3184a6d64cddad17e54ea030e2aa6576bf3a5a3d8bd3328f",
			1:  "454220afaa80c83c3839f6cccd8b3c88bf4f562316a9dda1121c578c9e005a53",
			2:  "3d458cfe55cc03ea1f443f1562beec8df51c75e14a9fcf9a7234a13f198e7969",
			3:  "3d458cfe55cc03ea1f443f1562beec8df51c75e14a9fcf9a7234a13f198e7969",
			4:  "758a3d35f1b0ff5b135dacd07db0c8132c0ac665d944090d4bf96e66447a245c",
			5:  "53d0ee36163219201e686167bbb71ec505b3ba2917b9d9183ed84aad26cfeb89",
			6:  "3d458cfe55cc03ea1f443f1562beec8df51c75e14a9fcf9a7234a13f198e7969",
			7:  "5fd54361d580eb7592adb8deb236ff35444ceeac7148f24b3de63c041f12b3da",
			8:  "25c3874041ebd4e9a21b6ed71b624a7bfa99907a8dcea7f129a4c64cbaf5829a",
			9:  "d43b2f61eb18b4791812ff5f20ab20e4ef621ba683370bedf5dbdf518b3a8078",
			14: "d8f57ebcc1a23cc46832696e1a657f720e1be8f5b405bb7204682114e363b455",
		}),
	},
	"ubuntu2404": {
		tpm2.TPMAlgSHA1: hexPCRs(map[int]string{
			0:  "8124f09f069c7d2d9acf5ce4eab928a7103a0bb2",
			1:  "f00d6bbdea9ba55996f237a7f95f2b328a44e3f2",
			2:  "b2a83b0ebf2f8374299a5b2bdfc31ea955ad7236",
			3:  "b2a83b0ebf2f8374299a5b2bdfc31ea955ad7236",
			4:  "175f4319fd7ac683bf49f2e7b837630e4fa8603f",
			5:  "f65b39c7aec83294f796c1ea4acc987f80914efe",
			6:  "b2a83b0ebf2f8374299a5b2bdfc31ea955ad7236",
			7:  "7067b17aa6b3de0d22d17a59dce1e17e649cb56a",
			8:  "5f4a1177c33521b0e48d855cf770520f8ab744de",
			9:  "c6ee69063ab752df6c4ab99a80b12f3e5c432535",
			14: "a482a15e112717d6a915b989a0ea6140a507e3e6",
		}),
		tpm2.TPMAlgSHA256: hexPCRs(map[int]string{
			0:  "50597a27846e91d025eef597abbc89f72bff9af849094db97b0684d8bc4c515e",
			1:  "57344e1cc8c6619413df33013a7cd67915459f967395af41db21c1fa7ca9c307",
			2:  "3d458cfe55cc03ea1f443f1562beec8df51c75e14a9fcf9a7234a13f198e7969",
			3:  "3d458cfe55cc03ea1f443f1562beec8df51c75e14a9fcf9a7234a13f198e7969",
			4:  "abe8b3fa6aecb36c2fd93c6f6edde661c21b353d007410a2739d69bfa7e1b9be",
			5:  "0b0e1903aeb1bff649b82dba2cdcf5c4ffb75027e54f151ab00b3b989f16a300",
			6:  "3d458cfe55cc03ea1f443f1562beec8df51c75e14a9fcf9a7234a13f198e7969",
			7:  "33ad69850fb2c7f30b4f8b4bc10ed93fc954dc07fa726e84f50f3d192dc1c140",
			8:  "6932a3f71dc55ad3c1a6ac2196eeac26a1b7164b6bbfa106625d94088ec3ecc3",
			9:  "ce08798b283c7a0ddc5e9ad1d602304b945b741fc60c20e254eafa0f4782512b",
			14: "306f9d8b94f17d93dc6e7cf8f5c79d652eb4c6c4d13de2dddc24af416e13ecaf",
		}),
	},
}

// realLogs are the recorded event logs with their event counts (counted
// independently with a throwaway script that walks the TCG_PCR_EVENT2
// headers) and algorithms.
var realLogs = []struct {
	name   string
	log    []byte
	events int
}{
	{"rhel8", testdata.TPMEventLogRHEL8, 83},
	{"ubuntu2404", testdata.TPMEventLogUbuntu2404, 117},
}

func TestParseEventLogReal(t *testing.T) {
	for _, tc := range realLogs {
		t.Run(tc.name, func(t *testing.T) {
			events, err := tpm.ParseEventLog(tc.log)
			if err != nil {
				t.Fatalf("ParseEventLog: %v", err)
			}
			if len(events) != tc.events {
				t.Errorf("ParseEventLog: %d events, want %d", len(events), tc.events)
			}
			// Every event after the Spec ID event carries the three banks
			// the Spec ID event declares, in the right sizes.
			for n, e := range events[1:] {
				var got []string
				for _, d := range e.Digests {
					got = append(got, fmt.Sprintf("%#x/%d", uint16(d.Alg), len(d.Value)))
				}
				want := []string{"0x4/20", "0xb/32", "0xc/48"} // SHA-1, SHA-256, SHA-384
				if !slices.Equal(got, want) {
					t.Fatalf("event %d digests = %v, want %v", n+1, got, want)
				}
			}
			if got := encodeLog(events); !bytes.Equal(got, tc.log) {
				t.Errorf("re-encoding the parsed log does not give the log back")
			}

			// The replay matches what the TPM reported with this log.
			for alg, want := range recordedPCRs[tc.name] {
				got, err := tpm.Replay(events, alg)
				if err != nil {
					t.Fatalf("Replay(%v): %v", alg, err)
				}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("Replay(%v) differs from the recorded PCRs (-want +got):\n%s", alg, diff)
				}
			}

			got, err := tpm.Replay(events, tpm2.TPMAlgSHA256)
			if err != nil {
				t.Fatalf("Replay: %v", err)
			}
			hexed := make(map[int]attestation.Hex, len(got))
			for i, v := range got {
				hexed[i] = v
			}
			js, err := json.MarshalIndent(hexed, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			golden(t, tc.name+"-sha256-pcrs.json", append(js, '\n'))
		})
	}
}

func TestParseEventLogErrors(t *testing.T) {
	rhel8 := testdata.TPMEventLogRHEL8
	events, err := tpm.ParseEventLog(rhel8)
	if err != nil {
		t.Fatal(err)
	}
	spec := encodeLog(events[:1])
	with := func(mutate func(e *tpm.Event)) []byte {
		e := events[1]
		e.Digests = slices.Clone(e.Digests)
		mutate(&e)
		return append(slices.Clone(spec), encodeLog([]tpm.Event{events[0], e})[len(spec):]...)
	}
	flip := func(b []byte, off int) []byte {
		b = slices.Clone(b)
		b[off] ^= 0xff
		return b
	}
	tests := []struct {
		name     string
		log      []byte
		sentinel error
	}{
		{"empty", nil, attestation.ErrMalformed},
		{"truncated header", rhel8[:10], attestation.ErrMalformed},
		{"truncated spec id", rhel8[:40], attestation.ErrMalformed},
		{"truncated mid event", rhel8[:len(rhel8)-1], attestation.ErrMalformed},
		{"truncated event header", rhel8[:len(spec)+6], attestation.ErrMalformed},
		{"trailing byte", append(slices.Clone(rhel8), 0), attestation.ErrMalformed},
		{"trailing zero event", append(slices.Clone(rhel8), make([]byte, 16)...), attestation.ErrMalformed},
		{"first event not no-action", flip(rhel8, 4), attestation.ErrMalformed},
		{"first event in pcr 1", flip(rhel8, 0), attestation.ErrMalformed},
		{"spec id digest not zero", flip(rhel8, 8), attestation.ErrMalformed},
		{"bad spec id signature", flip(rhel8, 32), attestation.ErrMalformed},
		{"spec version 1", flip(rhel8, 32+16+5), attestation.ErrMalformed},
		{"zero algorithms", func() []byte {
			b := slices.Clone(rhel8)
			b[32+24], b[32+25], b[32+26], b[32+27] = 0, 0, 0, 0
			return b
		}(), attestation.ErrMalformed},
		{"wrong sha256 size", flip(rhel8, 32+28+6), attestation.ErrMalformed},
		{"pcr index 24", with(func(e *tpm.Event) { e.Index = 24 }), attestation.ErrMalformed},
		{"two digests", with(func(e *tpm.Event) { e.Digests = e.Digests[:2] }), attestation.ErrMalformed},
		{"duplicate algorithm", with(func(e *tpm.Event) { e.Digests[1] = e.Digests[0] }), attestation.ErrMalformed},
		{"undeclared algorithm", with(func(e *tpm.Event) { e.Digests[0].Alg = tpm2.TPMAlgSHA512 }), attestation.ErrMalformed},
		{"event data too large", with(func(e *tpm.Event) { e.Data = make([]byte, 128<<10+1) }), attestation.ErrTooLarge},
		{"log too large", make([]byte, attestation.MaxEvidenceSize+1), attestation.ErrTooLarge},
		{"too many events", func() []byte {
			noAction := tpm.Event{Type: tpm.EventNoAction, Digests: events[1].Digests}
			many := []tpm.Event{events[0]}
			for range 10000 {
				many = append(many, noAction)
			}
			return encodeLog(many)
		}(), attestation.ErrTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			events, err := tpm.ParseEventLog(tc.log)
			if events != nil {
				t.Errorf("ParseEventLog returned %d events with an error", len(events))
			}
			checkErr(t, err, tc.sentinel, "event log")
		})
	}
}

func TestParseEventLogDoesNotAlias(t *testing.T) {
	log := slices.Clone(testdata.TPMEventLogRHEL8)
	events, err := tpm.ParseEventLog(log)
	if err != nil {
		t.Fatal(err)
	}
	before := slices.Clone(events[5].Data)
	clear(log)
	if !bytes.Equal(events[5].Data, before) {
		t.Errorf("event data changed when the input was cleared")
	}
}

func TestReplayStartupLocality(t *testing.T) {
	base, err := tpm.ParseEventLog(testdata.TPMEventLogRHEL8)
	if err != nil {
		t.Fatal(err)
	}
	zeroDigests := func() []tpm.Digest {
		var ds []tpm.Digest
		for _, d := range base[1].Digests {
			ds = append(ds, tpm.Digest{Alg: d.Alg, Value: make([]byte, len(d.Value))})
		}
		return ds
	}
	locality := func(pcr int, loc byte) tpm.Event {
		return tpm.Event{Index: pcr, Type: tpm.EventNoAction, Digests: zeroDigests(), Data: append([]byte("StartupLocality\x00"), loc)}
	}
	measure := base[1] // the first real event, into PCR 0
	if measure.Index != 0 {
		t.Fatalf("event 1 is in PCR %d, want 0", measure.Index)
	}
	extend := func(start []byte, d []byte) []byte {
		s := sha256.Sum256(append(slices.Clone(start), d...))
		return s[:]
	}
	startAt := func(loc byte) []byte { v := make([]byte, 32); v[31] = loc; return v }

	tests := []struct {
		name     string
		events   []tpm.Event
		wantPCR0 []byte
		sentinel error // nil: success
	}{
		{"no locality event", []tpm.Event{base[0], measure}, extend(startAt(0), measure.Digest(tpm2.TPMAlgSHA256)), nil},
		{"locality 3", []tpm.Event{base[0], locality(0, 3), measure}, extend(startAt(3), measure.Digest(tpm2.TPMAlgSHA256)), nil},
		{"locality 4 (h-crtm)", []tpm.Event{base[0], locality(0, 4), measure}, extend(startAt(4), measure.Digest(tpm2.TPMAlgSHA256)), nil},
		{"locality only", []tpm.Event{base[0], locality(0, 3)}, startAt(3), nil},
		{"locality after measurement", []tpm.Event{base[0], measure, locality(0, 3)}, nil, attestation.ErrMalformed},
		{"locality twice", []tpm.Event{base[0], locality(0, 3), locality(0, 3)}, nil, attestation.ErrMalformed},
		{"locality 2", []tpm.Event{base[0], locality(0, 2), measure}, nil, attestation.ErrMalformed},
		{"locality in pcr 1", []tpm.Event{base[0], locality(1, 3), measure}, nil, attestation.ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Through the encoder and parser, as a log would arrive.
			events, err := tpm.ParseEventLog(encodeLog(tc.events))
			if err != nil {
				t.Fatalf("ParseEventLog: %v", err)
			}
			got, err := tpm.Replay(events, tpm2.TPMAlgSHA256)
			if tc.sentinel != nil {
				checkErr(t, err, tc.sentinel, "event log")
				return
			}
			if err != nil {
				t.Fatalf("Replay: %v", err)
			}
			if diff := cmp.Diff(map[int][]byte{0: tc.wantPCR0}, got); diff != "" {
				t.Errorf("Replay (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReplayErrors(t *testing.T) {
	events, err := tpm.ParseEventLog(testdata.TPMEventLogRHEL8)
	if err != nil {
		t.Fatal(err)
	}
	noSHA256 := slices.Clone(events)
	e := noSHA256[3]
	e.Digests = slices.DeleteFunc(slices.Clone(e.Digests), func(d tpm.Digest) bool { return d.Alg == tpm2.TPMAlgSHA256 })
	noSHA256[3] = e
	shortDigest := slices.Clone(events)
	e = shortDigest[2]
	e.Digests = []tpm.Digest{{Alg: tpm2.TPMAlgSHA256, Value: make([]byte, 31)}}
	shortDigest[2] = e
	badIndex := slices.Clone(events)
	e = badIndex[2]
	e.Index = -1
	badIndex[2] = e

	tests := []struct {
		name     string
		events   []tpm.Event
		alg      tpm2.TPMAlgID
		sentinel error
		check    string
	}{
		{"sha512 not in log", events, tpm2.TPMAlgSHA512, attestation.ErrMismatch, "event log replay"},
		{"sm3 bank", events, tpm2.TPMAlgSM3256, attestation.ErrUnsupported, "event log replay"},
		{"event without the bank", noSHA256, tpm2.TPMAlgSHA256, attestation.ErrMismatch, "event log replay"},
		{"short digest", shortDigest, tpm2.TPMAlgSHA256, attestation.ErrMalformed, "event log"},
		{"negative pcr index", badIndex, tpm2.TPMAlgSHA256, attestation.ErrMalformed, "event log"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tpm.Replay(tc.events, tc.alg)
			if got != nil {
				t.Errorf("Replay returned %d PCRs with an error", len(got))
			}
			checkErr(t, err, tc.sentinel, tc.check)
		})
	}
}

func TestEventTypeName(t *testing.T) {
	tests := []struct {
		typ  uint32
		want string
	}{
		{tpm.EventNoAction, "EV_NO_ACTION"},
		{0x80000003, "EV_EFI_BOOT_SERVICES_APPLICATION"},
		{0x12345678, "0x12345678"},
	}
	for _, tc := range tests {
		if got := tpm.EventTypeName(tc.typ); got != tc.want {
			t.Errorf("EventTypeName(%#x) = %q, want %q", tc.typ, got, tc.want)
		}
	}
}

package tdxmeasure_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/greatjail/cvm/attestation/tdxmeasure"
)

const (
	vectorDir = "../../testdata/measure"
	inputDir  = "../../.cache/inputs"
)

// vector is the part of a testdata/measure/tdx-*.json file the tests use.
type vector struct {
	ID     string `json:"id"`
	Inputs struct {
		Firmware struct {
			Name   string `json:"name"`
			Size   int    `json:"size"`
			SHA256 string `json:"sha256"`
		} `json:"firmware"`
	} `json:"inputs"`
	Intermediate *struct {
		OffsetFromEnd string `json:"tdx_metadata_offset_from_end"`
		Sections      []struct {
			Type       string `json:"type"`
			DataOffset string `json:"data_offset"`
			RawSize    string `json:"raw_size"`
			GPA        string `json:"gpa"`
			MemSize    string `json:"mem_size"`
			Attributes string `json:"attributes"`
		} `json:"tdvf_sections_in_order"`
		PageAdds int `json:"mem_page_add_count"`
		Extends  int `json:"mr_extend_count"`
	} `json:"intermediate"`
	Expected struct {
		MRTD  string `json:"mrtd_sha384"`
		Error string `json:"error"`
	} `json:"expected"`
}

// vectorInputs maps each TDX vector to its file in .cache/inputs, or to the
// reason its input is not available.
var vectorInputs = map[string]struct{ file, unavailable string }{
	"tdx-deb12-ovmf-mrtd":           {file: "OVMF.fd"},
	"tdx-deb12-ovmf-code-rejected":  {file: "OVMF_CODE.fd"},
	"tdx-published-ubuntu2504-ovmf": {unavailable: "its input, Ubuntu 25.04 OVMF.fd (ovmf 2025.02-3ubuntu2), is not stored and cannot be fetched here (the Ubuntu archive is unreachable); only the published MRTD is recorded"},
}

func loadVectors(t *testing.T) []vector {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(vectorDir, "tdx-*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no tdx-*.json vectors in %s", vectorDir)
	}
	var vs []vector
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var v vector
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if _, ok := vectorInputs[v.ID]; !ok {
			t.Errorf("%s: vector %q is not in vectorInputs; add it so that it is tested", f, v.ID)
		}
		vs = append(vs, v)
	}
	return vs
}

// readInput returns the vector's firmware from .cache/inputs, checked
// against the vector's size and SHA-256, or skips naming what is missing.
func readInput(t *testing.T, v vector) []byte {
	t.Helper()
	in := vectorInputs[v.ID]
	if in.unavailable != "" {
		t.Skip(in.unavailable)
	}
	path := filepath.Join(inputDir, in.file)
	fw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		t.Skipf("%s missing: run scripts/fetch-test-inputs.sh (make test does)", path)
	}
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprintf("%x", sha256.Sum256(fw)); got != v.Inputs.Firmware.SHA256 {
		t.Fatalf("%s: SHA-256 %s, want %s (rerun scripts/fetch-test-inputs.sh)", path, got, v.Inputs.Firmware.SHA256)
	}
	if v.Inputs.Firmware.Size != 0 && len(fw) != v.Inputs.Firmware.Size {
		t.Fatalf("%s: %d bytes, want %d", path, len(fw), v.Inputs.Firmware.Size)
	}
	return fw
}

func hexU64(t *testing.T, s string) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(strings.TrimPrefix(s, "0x"), 16, 64)
	if err != nil {
		t.Fatalf("vector value %q: %v", s, err)
	}
	return n
}

var typeByName = map[string]uint32{"BFV": 0, "CFV": 1, "TD_HOB": 2, "TempMem": 3, "PermMem": 4, "Payload": 5, "PayloadParam": 6, "TD_INFO": 7}

func TestVectors(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.ID, func(t *testing.T) {
			fw := readInput(t, v)

			if im := v.Intermediate; im != nil {
				off, err := tdxmeasure.Locate(fw)
				if err != nil {
					t.Fatalf("Locate() = %v", err)
				}
				if got, want := uint64(len(fw)-off), hexU64(t, im.OffsetFromEnd); got != want {
					t.Errorf("metadata offset from end = %#x, want %#x", got, want)
				}
				var want []tdxmeasure.Section
				for _, s := range im.Sections {
					typ, ok := typeByName[s.Type]
					if !ok {
						t.Fatalf("vector section type %q unknown", s.Type)
					}
					want = append(want, tdxmeasure.Section{
						DataOffset:     uint32(hexU64(t, s.DataOffset)),
						RawDataSize:    uint32(hexU64(t, s.RawSize)),
						MemoryAddress:  hexU64(t, s.GPA),
						MemoryDataSize: hexU64(t, s.MemSize),
						Type:           typ,
						Attributes:     uint32(hexU64(t, s.Attributes)),
					})
				}
				// Read without the checks against the image, so that the
				// rejected image's sections are compared too.
				got, err := tdxmeasure.ReadSections(fw, off)
				if err != nil {
					t.Fatalf("ReadSections() = %v", err)
				}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("sections (-want +got):\n%s", diff)
				}
				// Record counts follow from the sections alone.
				adds, exts := 0, 0
				for _, s := range got {
					if s.Attributes&tdxmeasure.AttrPageAug == 0 {
						adds += int(s.MemoryDataSize / 4096)
						if s.Attributes&tdxmeasure.AttrMRExtend != 0 {
							exts += int(s.MemoryDataSize / 256)
						}
					}
				}
				if adds != im.PageAdds || exts != im.Extends {
					t.Errorf("records from sections = %d PAGE.ADD, %d MR.EXTEND; want %d, %d", adds, exts, im.PageAdds, im.Extends)
				}
			}

			got, err := tdxmeasure.MRTD(fw)
			if v.Expected.Error != "" {
				if !errors.Is(err, tdxmeasure.ErrInvalidMetadata) {
					t.Fatalf("MRTD() = %x, %v; want an error wrapping ErrInvalidMetadata (vector: %q)", got, err, v.Expected.Error)
				}
				// The reference tool's message names offset, size and file
				// size; ours must too, and say which file to use instead.
				for _, s := range []string{"section 0 (BFV)", "0x20000", "0x1e0000", "past the end", "unified OVMF.fd"} {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("MRTD() error %q does not mention %q", err, s)
					}
				}
				if _, perr := tdxmeasure.ParseMetadata(fw); perr == nil || perr.Error() != err.Error() {
					t.Errorf("ParseMetadata() = %v, want the same error as MRTD()", perr)
				}
				return
			}
			if err != nil {
				t.Fatalf("MRTD() = %v", err)
			}
			if h := hex.EncodeToString(got[:]); h != v.Expected.MRTD {
				t.Errorf("MRTD() = %s, want %s", h, v.Expected.MRTD)
			}
			if im := v.Intermediate; im != nil {
				secs, err := tdxmeasure.ParseMetadata(fw)
				if err != nil {
					t.Fatal(err)
				}
				sum, adds, exts := tdxmeasure.MeasureCounts(fw, secs)
				if adds != im.PageAdds || exts != im.Extends || !bytes.Equal(sum[:], got[:]) {
					t.Errorf("measured %d PAGE.ADD, %d MR.EXTEND records (sum %x); want %d, %d", adds, exts, sum, im.PageAdds, im.Extends)
				}
			}
		})
	}
}

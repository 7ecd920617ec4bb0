package snpmeasure

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// vector is the subset of a testdata/measure/snp-*.json file the tests use.
type vector struct {
	ID     string `json:"id"`
	Inputs struct {
		Firmware       vectorFile  `json:"firmware"`
		FirmwareGPAEnd string      `json:"firmware_gpa_end"`
		VCPUs          int         `json:"vcpus"`
		VCPUType       string      `json:"vcpu_type"`
		VCPUSig        string      `json:"vcpu_sig"`
		GuestFeatures  string      `json:"guest_features"`
		VMMType        string      `json:"vmm_type"`
		Kernel         *vectorFile `json:"kernel"`
		Initrd         *vectorFile `json:"initrd"`
		Cmdline        *string     `json:"cmdline"`
	} `json:"inputs"`
	Expected struct {
		LaunchDigest string `json:"launch_digest_sha384"`
		Error        string `json:"error"`
	} `json:"expected"`
	Intermediate map[string]string `json:"intermediate"`
}

type vectorFile struct {
	Name   string `json:"name"`
	Size   int    `json:"size"`
	SHA256 string `json:"sha256"`
}

const vectorDir = "../../testdata/measure"

// loadVectors reads every snp-*.json vector.
func loadVectors(t testing.TB) []vector {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(vectorDir, "snp-*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) == 0 {
		t.Fatalf("no snp-*.json vectors in %s", vectorDir)
	}
	var vs []vector
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var v vector
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		vs = append(vs, v)
	}
	return vs
}

// readInput returns an input file named by a vector, from the committed
// inputs/ or the fetched .cache/inputs/, checked against its SHA-256. It
// skips the test when a large input has not been fetched.
func readInput(t testing.TB, f vectorFile) []byte {
	t.Helper()
	for _, dir := range []string{filepath.Join(vectorDir, "inputs"), "../../.cache/inputs"} {
		b, err := os.ReadFile(filepath.Join(dir, f.Name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != f.SHA256 {
			t.Fatalf("%s/%s: SHA-256 %x, want %s", dir, f.Name, sum, f.SHA256)
		}
		return b
	}
	t.Skipf("input %s missing: run scripts/fetch-test-inputs.sh (make test does)", f.Name)
	return nil
}

func parseHex(t testing.TB, s string) uint64 {
	t.Helper()
	v, err := strconv.ParseUint(strings.TrimPrefix(s, "0x"), 16, 64)
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return v
}

// options builds the LaunchDigest options of a vector.
func (v vector) options(t testing.TB) Options {
	t.Helper()
	in := v.Inputs
	vmm, err := ParseVMMType(in.VMMType)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := VCPUSig(in.VCPUType)
	if err != nil {
		t.Fatal(err)
	}
	if want := uint32(parseHex(t, in.VCPUSig)); sig != want {
		t.Fatalf("VCPUSig(%q) = %#x, want %#x", in.VCPUType, sig, want)
	}
	o := Options{
		Firmware:      readInput(t, in.Firmware),
		FirmwareEnd:   parseHex(t, in.FirmwareGPAEnd),
		VCPUs:         in.VCPUs,
		VCPUSig:       sig,
		GuestFeatures: parseHex(t, in.GuestFeatures),
		VMM:           vmm,
	}
	if in.Kernel != nil {
		o.HasKernel = true
		o.Kernel = readInput(t, *in.Kernel)
		if in.Initrd != nil {
			o.Initrd = readInput(t, *in.Initrd)
		}
		if in.Cmdline != nil {
			o.Cmdline = *in.Cmdline
		}
	}
	return o
}

func hexOf(b []byte) string { return hex.EncodeToString(b) }

func TestVectors(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.ID, func(t *testing.T) {
			o := v.options(t)
			got, err := LaunchDigest(o)
			if v.Expected.Error != "" {
				if !errors.Is(err, ErrNoHashesTable) {
					t.Fatalf("LaunchDigest = %x, %v; want ErrNoHashesTable (tool said %q)", got, err, v.Expected.Error)
				}
				for _, word := range []string{"kernel", "SNP_KERNEL_HASHES", "AmdSevX64"} {
					if !strings.Contains(err.Error(), word) {
						t.Errorf("error %q does not mention %q", err, word)
					}
				}
			} else {
				if err != nil {
					t.Fatalf("LaunchDigest: %v", err)
				}
				if hexOf(got[:]) != v.Expected.LaunchDigest {
					t.Errorf("LaunchDigest = %x, want %s", got, v.Expected.LaunchDigest)
				}
			}
			checkIntermediates(t, v, o)
		})
	}
}

// checkIntermediates compares the intermediate values a vector records.
func checkIntermediates(t *testing.T, v vector, o Options) {
	t.Helper()
	im := v.Intermediate
	if want, ok := im["ovmf_hash_(snp:ovmf-hash)"]; ok {
		d := NewDigest()
		d.updatePages(PageNormal, o.FirmwareEnd-uint64(len(o.Firmware)), o.Firmware)
		if got := d.Sum(); hexOf(got[:]) != want {
			t.Errorf("firmware-only digest = %x, want %s", got, want)
		}
	}
	for i := range o.VCPUs {
		want, ok := im["vmsa"+strconv.Itoa(i)+".bin_sha384"]
		if !ok {
			continue
		}
		var apEIP uint32
		if i > 0 {
			entries, err := ParseFooterTable(o.Firmware)
			if err != nil {
				t.Fatal(err)
			}
			apEIP = binary.LittleEndian.Uint32(entries[GUIDSEVESResetBlock])
		}
		page, err := VMSA(o.VMM, o.VCPUSig, o.GuestFeatures, i == 0, apEIP)
		if err != nil {
			t.Fatal(err)
		}
		if got := sha512.Sum384(page[:]); hexOf(got[:]) != want {
			t.Errorf("vmsa%d SHA-384 = %x, want %s", i, got, want)
		}
	}
	if want, ok := im["sev_hash_table_padded_hex"]; ok {
		if got := HashesTable(o.Kernel, o.Initrd, o.Cmdline); hexOf(got) != want {
			t.Errorf("HashesTable = %x, want %s", got, want)
		}
	}
	if want, ok := im["sha256_cmdline_with_nul"]; ok {
		if got := sha256.Sum256(append([]byte(o.Cmdline), 0)); hexOf(got[:]) != want {
			t.Errorf("cmdline SHA-256 = %x, want %s", got, want)
		}
	}
	if want, ok := im["sev_hashes_page_sha384"]; ok {
		gpa := parseHex(t, im["sev_hash_table_gpa"])
		page := make([]byte, PageSize)
		copy(page[gpa%PageSize:], HashesTable(o.Kernel, o.Initrd, o.Cmdline))
		if got := sha512.Sum384(page); hexOf(got[:]) != want {
			t.Errorf("hashes page SHA-384 = %x, want %s", got, want)
		}
		entries, err := ParseFooterTable(o.Firmware)
		if err != nil {
			t.Fatal(err)
		}
		if rv := entries[GUIDSEVHashTable]; len(rv) < 4 || uint64(binary.LittleEndian.Uint32(rv)) != gpa {
			t.Errorf("hash table RV entry = %x, want base %#x", rv, gpa)
		}
	}
}

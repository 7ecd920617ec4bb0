package launchconfig

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/greatjail/cvm/attestation"
)

// testCA is a synthetic self-signed certificate made for these tests.
func testCA(t testing.TB) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "synthetic test CA"},
		NotBefore:             time.Unix(0, 0),
		NotAfter:              time.Unix(1<<32, 0),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func valid(ca string) *Config {
	return &Config{
		Version: 1, TEE: "sim", KBSCAPEM: ca, Resource: "disk-key",
		Entrypoint: "/bin/hello", Args: []string{"a"}, Env: []string{"PATH=/bin"},
		Disk: Disk{Device: "/dev/vda", FS: "ext4"},
	}
}

func TestMarshalCanonical(t *testing.T) {
	ca := testCA(t)
	c := valid(ca)
	b, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	caJSON := strings.ReplaceAll(ca, "\n", `\n`)
	want := `{"version":1,"tee":"sim","kbs_ca_pem":"` + caJSON + `","resource":"disk-key","entrypoint":"/bin/hello","args":["a"],"env":["PATH=/bin"],"disk":{"device":"/dev/vda","fs":"ext4"}}`
	if diff := cmp.Diff(want, string(b)); diff != "" {
		t.Errorf("Marshal (-want +got):\n%s", diff)
	}
	got, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(c, got); diff != "" {
		t.Errorf("Parse(Marshal(c)) (-want +got):\n%s", diff)
	}
	// nil lists are written as [].
	c.Args, c.Env = nil, nil
	b, err = c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"args":[],"env":[]`) {
		t.Errorf("Marshal with nil lists = %s, want args and env as []", b)
	}
	if _, err := Parse(b); err != nil {
		t.Errorf("Parse of empty lists: %v", err)
	}
}

func TestParseRejects(t *testing.T) {
	ca := testCA(t)
	good, err := valid(ca).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	g := string(good)
	tests := []struct{ name, in string }{
		{"empty", ""},
		{"not-object", `[]`},
		{"unknown-field", strings.Replace(g, `{"version":1,`, `{"version":1,"extra":1,`, 1)},
		{"unknown-disk-field", strings.Replace(g, `"fs":"ext4"`, `"fs":"ext4","opts":"x"`, 1)},
		{"missing-field", strings.Replace(g, `"resource":"disk-key",`, ``, 1)},
		{"missing-disk-field", strings.Replace(g, `"device":"/dev/vda",`, ``, 1)},
		{"duplicate-field", strings.Replace(g, `{"version":1,`, `{"version":1,"version":1,`, 1)},
		{"null-args", strings.Replace(g, `"args":["a"]`, `"args":null`, 1)},
		{"trailing", g + `{}`},
		{"version-2", strings.Replace(g, `"version":1`, `"version":2`, 1)},
		{"tee-tpm", strings.Replace(g, `"tee":"sim"`, `"tee":"tpm"`, 1)},
		{"tee-empty", strings.Replace(g, `"tee":"sim"`, `"tee":""`, 1)},
		{"relative-entrypoint", strings.Replace(g, `"/bin/hello"`, `"bin/hello"`, 1)},
		{"empty-resource", strings.Replace(g, `"disk-key"`, `""`, 1)},
		{"relative-device", strings.Replace(g, `"/dev/vda"`, `"vda"`, 1)},
		{"empty-fs", strings.Replace(g, `"ext4"`, `""`, 1)},
		{"ca-not-pem", strings.Replace(g, `"kbs_ca_pem":"-----BEGIN`, `"kbs_ca_pem":"junk-----BEGIN`, 1)},
		{"ca-empty", `{"version":1,"tee":"sim","kbs_ca_pem":"","resource":"r","entrypoint":"/e","args":[],"env":[],"disk":{"device":"/d","fs":"ext4"}}`},
		{"ca-key-block", `{"version":1,"tee":"sim","kbs_ca_pem":"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n","resource":"r","entrypoint":"/e","args":[],"env":[],"disk":{"device":"/d","fs":"ext4"}}`},
		{"ca-bad-der", `{"version":1,"tee":"sim","kbs_ca_pem":"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n","resource":"r","entrypoint":"/e","args":[],"env":[],"disk":{"device":"/d","fs":"ext4"}}`},
	}
	for _, tt := range tests {
		if _, err := Parse([]byte(tt.in)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Parse = %v, want ErrInvalid", tt.name, err)
		}
	}
	// Whitespace is not canonical but is accepted.
	if _, err := Parse([]byte(" \n" + strings.ReplaceAll(g, `,"`, `, "`) + "\n")); err != nil {
		t.Errorf("Parse with whitespace: %v", err)
	}
}

func TestValidateTEEs(t *testing.T) {
	ca := testCA(t)
	for _, tee := range []string{"sim", "snp", "tdx"} {
		c := valid(ca)
		c.TEE = teeOf(tee)
		if err := c.Validate(); err != nil {
			t.Errorf("tee %s: %v", tee, err)
		}
	}
}

func TestModules(t *testing.T) {
	base := []string{"virtio_blk", "dm_mod", "dm_crypt", "xts", "ecb", "virtio_mmio", "vsock",
		"vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport", "virtio_rng", "virtio_console"}
	optional := []string{"aesni_intel", "configfs", "tsm"}
	tests := []struct {
		tee  string
		want []string
	}{
		{"sim", base},
		{"snp", append(append([]string{}, base...), "sev-guest")},
		{"tdx", append(append([]string{}, base...), "tdx-guest")},
	}
	for _, tt := range tests {
		req, opt := Modules(teeOf(tt.tee))
		if diff := cmp.Diff(tt.want, req); diff != "" {
			t.Errorf("Modules(%s) required (-want +got):\n%s", tt.tee, diff)
		}
		if diff := cmp.Diff(optional, opt); diff != "" {
			t.Errorf("Modules(%s) optional (-want +got):\n%s", tt.tee, diff)
		}
		if _, err := FormatModules(append(req, opt...)); err != nil {
			t.Errorf("Modules(%s) are not valid names: %v", tt.tee, err)
		}
	}
}

func TestParseModules(t *testing.T) {
	tests := []struct {
		in   string
		want []string
		ok   bool
	}{
		{"dm_mod\ndm_crypt\n", []string{"dm_mod", "dm_crypt"}, true},
		{"\n  virtio_blk \r\n\nsev-guest", []string{"virtio_blk", "sev-guest"}, true},
		{"", nil, true},
		{"../etc/passwd\n", nil, false},
		{"dm mod\n", nil, false},
		{"a.ko\n", nil, false},
		{strings.Repeat("x", 57), nil, false},
		{strings.Repeat("m\n", MaxModules+1), nil, false},
	}
	for _, tt := range tests {
		got, err := ParseModules([]byte(tt.in))
		if (err == nil) != tt.ok {
			t.Errorf("ParseModules(%q) error = %v, want ok=%v", tt.in, err, tt.ok)
			continue
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseModules(%q) = %v, want ErrInvalid", tt.in, err)
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("ParseModules(%q) (-want +got):\n%s", tt.in, diff)
		}
	}
	b, err := FormatModules([]string{"dm_mod", "dm_crypt"})
	if err != nil || string(b) != "dm_mod\ndm_crypt\n" {
		t.Errorf("FormatModules = %q, %v", b, err)
	}
	if _, err := FormatModules([]string{"bad/name"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("FormatModules(bad/name) = %v, want ErrInvalid", err)
	}
}

func teeOf(s string) attestation.TEE { return attestation.TEE(s) }

package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/greatjail/cvm/kbs/pki"
)

// doc renders a kbs.yaml from the minimal valid set of top-level fields
// (pointing at an Init'd directory's files), with overrides: a key set to
// "" is removed, any other value is the raw YAML after "key: ".
func doc(overrides map[string]string) string {
	fields := map[string]string{
		"tls":           "{cert: server.pem, key: server-key.pem, client_ca: ca.pem}",
		"kek_files":     "[kek.key]",
		"token_key":     "token-key.pem",
		"challenge_key": "challenge.key",
	}
	for k, v := range overrides {
		fields[k] = v
	}
	var keys []string
	for k := range fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		if fields[k] != "" {
			b.WriteString(k + ": " + fields[k] + "\n")
		}
	}
	return b.String()
}

// fixtures adds files the error cases refer to into an Init'd directory.
func fixtures(t *testing.T, dir string) {
	t.Helper()
	p384, err := ecdsa.GenerateKey(elliptic.P384(), testRand(3))
	if err != nil {
		t.Fatal(err)
	}
	p384PEM, err := pki.EncodeKey(p384)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(p384.Public())
	if err != nil {
		t.Fatal(err)
	}
	kek, err := os.ReadFile(filepath.Join(dir, FileKEK))
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"p384-key.pem":  p384PEM,
		"ak.pem":        pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}),
		"kek-copy.key":  kek,
		"short.key":     []byte("abcd\n"),
		"kek2.key":      []byte(strings.Repeat("ab", 32)),
		"empty.pem":     nil,
		"collateral/.d": nil,
	} {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func TestLoadServerProblems(t *testing.T) {
	dir := initDir(t, testOptions())
	fixtures(t, dir)
	type ov = map[string]string
	for _, tc := range []struct {
		name string
		doc  string
		// want are the problems: field and a substring of the message.
		want []Problem
	}{
		{"minimal", doc(nil), nil},
		{"plaintext on loopback without tls", doc(ov{"listen": "127.0.0.1:8080", "insecure_plaintext": "true", "tls": ""}), nil},
		{"plaintext on IPv6 loopback", doc(ov{"listen": `"[::1]:8080"`, "insecure_plaintext": "true", "tls": ""}), nil},
		{"every optional section", doc(ov{
			"tpm": "{trusted_aks: [ak.pem]}", "tdx": "{collateral_dir: collateral, pcs_url: 'https://pccs.example:8081/'}",
			"snp": "{cert_cache: cache, offline: true}", "kek_files": "[kek2.key, kek.key]",
			"metrics_listen": `"off"`, "limits": "{challenges_per_second: 0.5}",
		}), nil},

		// The plaintext rule, from the attacker's side: plaintext
		// anywhere a remote peer can reach is refused.
		{"plaintext on all interfaces", doc(ov{"listen": "0.0.0.0:8443", "insecure_plaintext": "true", "tls": ""}),
			[]Problem{{"insecure_plaintext", `allowed only when listen is a loopback IP address`}}},
		{"plaintext with empty host", doc(ov{"listen": `":8443"`, "insecure_plaintext": "true", "tls": ""}),
			[]Problem{{"insecure_plaintext", `listen is ":8443"`}}},
		{"plaintext on a public address", doc(ov{"listen": "192.0.2.1:8443", "insecure_plaintext": "true", "tls": ""}),
			[]Problem{{"insecure_plaintext", "loopback"}}},
		{"plaintext on the name localhost", doc(ov{"listen": "localhost:8443", "insecure_plaintext": "true", "tls": ""}),
			[]Problem{{"insecure_plaintext", "loopback IP address"}}},
		{"plaintext on a zoned link-local address", doc(ov{"listen": `"[fe80::1%lo]:8443"`, "insecure_plaintext": "true", "tls": ""}),
			[]Problem{{"insecure_plaintext", "loopback"}}},
		{"plaintext with tls still configured", doc(ov{"listen": "127.0.0.1:8443", "insecure_plaintext": "true"}),
			[]Problem{{"tls", "must be empty when insecure_plaintext is set"}}},
		{"no tls and no plaintext", doc(ov{"tls": ""}), []Problem{
			{"tls.cert", "required (or set insecure_plaintext"}, {"tls.key", "required"}, {"tls.client_ca", "required"},
		}},

		// Missing and wrong files.
		{"missing files", doc(ov{"tls": "{cert: nope.pem, key: server-key.pem, client_ca: ca.pem}", "token_key": "gone.pem", "kek_files": "[kek.key, lost.key]"}), []Problem{
			{"tls.cert", "nope.pem: no such file"}, {"kek_files[1]", "lost.key: no such file"}, {"token_key", "gone.pem: no such file"},
		}},
		{"no key-encryption key", doc(ov{"kek_files": "[]"}), []Problem{{"kek_files", "at least one"}}},
		{"key-encryption key too short", doc(ov{"kek_files": "[short.key]"}), []Problem{{"kek_files[0]", "want 32 bytes in hex"}}},
		{"same key-encryption key twice", doc(ov{"kek_files": "[kek.key, kek-copy.key]"}), []Problem{{"kek_files[1]", "same key as kek_files[0]"}}},
		{"challenge key is a key-encryption key", doc(ov{"challenge_key": "kek.key"}), []Problem{{"challenge_key", "same key as kek_files[0]"}}},
		{"token key on the wrong curve", doc(ov{"token_key": "p384-key.pem"}), []Problem{{"token_key", "want an ECDSA P-256 key"}}},
		{"token key is a certificate", doc(ov{"token_key": "ca.pem"}), []Problem{{"token_key", `"CERTIFICATE", want PRIVATE KEY`}}},
		{"server key of another certificate", doc(ov{"tls": "{cert: server.pem, key: admin-key.pem, client_ca: ca.pem}"}), []Problem{{"tls.key", "does not match tls.cert"}}},
		{"client CA file empty", doc(ov{"tls": "{cert: server.pem, key: server-key.pem, client_ca: empty.pem}"}), []Problem{{"tls.client_ca", "no PEM certificate"}}},
		{"sim root is not a sim root", doc(ov{"sim_root": "ca.pem"}), []Problem{{"sim_root", "not a simulated-TEE certificate"}}},
		{"trusted AK is a certificate", doc(ov{"tpm": "{trusted_aks: [ak.pem, ca.pem]}"}), []Problem{{"tpm.trusted_aks[1]", "want exactly one PEM PUBLIC KEY"}}},
		{"collateral dir missing", doc(ov{"tdx": "{collateral_dir: nowhere}"}), []Problem{{"tdx.collateral_dir", "no such file"}}},
		{"collateral dir is a file", doc(ov{"tdx": "{collateral_dir: ca.pem}"}), []Problem{{"tdx.collateral_dir", "not a directory"}}},
		{"cert cache is a file", doc(ov{"snp": "{cert_cache: ca.pem}"}), []Problem{{"snp.cert_cache", "not a directory"}}},
		{"PCS URL not http", doc(ov{"tdx": "{pcs_url: 'ftp://pcs.example'}"}), []Problem{{"tdx.pcs_url", "not an http or https URL"}}},
		{"store in a missing directory", doc(ov{"store": "no/such/dir/kbs.db"}), []Problem{{"store", "does not exist"}}},
		{"store is a directory", doc(ov{"store": "collateral"}), []Problem{{"store", "is a directory"}}},

		// Addresses.
		{"listen without port", doc(ov{"listen": "127.0.0.1"}), []Problem{{"listen", "not host:port"}}},
		{"listen with a named port", doc(ov{"listen": "127.0.0.1:https"}), []Problem{{"listen", `port "https" is not a number`}}},
		{"metrics on the listen address", doc(ov{"listen": "127.0.0.1:8443", "metrics_listen": "127.0.0.1:8443"}), []Problem{{"metrics_listen", "same address as listen"}}},

		// Durations and bounds.
		{"duration without unit", doc(ov{"challenge_lifetime": `"5"`}), []Problem{{"challenge_lifetime", `"5" is not a duration`}}},
		{"duration as a number", doc(ov{"token_lifetime": "300"}), []Problem{{"token_lifetime", "units are required"}}},
		{"duration garbage", doc(ov{"limits": "{request_timeout: soon}"}), []Problem{{"limits.request_timeout", `"soon" is not a duration`}}},
		{"negative duration", doc(ov{"limits": "{request_timeout: -1s}"}), []Problem{{"limits.request_timeout", "-1s is outside 1s to 10m"}}},
		{"challenge lifetime too long", doc(ov{"challenge_lifetime": "2h"}), []Problem{{"challenge_lifetime", "2h is outside 1s to 1h"}}},
		{"token lifetime too long", doc(ov{"token_lifetime": "48h"}), []Problem{{"token_lifetime", "48h is outside 1s to 24h"}}},
		{"limits out of range", doc(ov{"limits": "{max_message_bytes: 100, challenges_per_second: -1, challenge_burst: -5}"}), []Problem{
			{"limits.max_message_bytes", "100 is outside"}, {"limits.challenges_per_second", "-1 is outside"}, {"limits.challenge_burst", "-5 is outside"},
		}},

		// Strict parsing.
		{"unknown field", doc(ov{"listne": "127.0.0.1:8443"}), []Problem{{"listne", "unknown field"}}},
		{"unknown nested field", doc(ov{"tls": "{cert: server.pem, key: server-key.pem, client_ca: ca.pem, certt: x}"}), []Problem{{"tls.certt", "unknown field"}}},
		{"field in another case", doc(ov{"Listen": "127.0.0.1:8443"}), []Problem{{"Listen", `unknown field (did you mean "listen"?)`}}},
		{"Go field name", doc(ov{"limits": "{MaxMessageBytes: 1}"}), []Problem{{"limits.MaxMessageBytes", "unknown field"}}},
		{"bare off is a boolean", doc(ov{"metrics_listen": "off"}), []Problem{{"metrics_listen", "got the boolean false (YAML reads a bare yes, no, on, off"}}},
		{"integer as a string", doc(ov{"limits": "{max_message_bytes: 4MiB}"}), []Problem{{"limits.max_message_bytes", `want an integer, got the string "4MiB"`}}},
		{"fractional integer", doc(ov{"limits": "{challenge_burst: 2.5}"}), []Problem{{"limits.challenge_burst", "want an integer, got 2.5"}}},
		{"list as a scalar", doc(ov{"kek_files": "kek.key"}), []Problem{{"kek_files", `want a list, got the string "kek.key"`}}},
		{"section as a scalar", doc(ov{"tls": "yes"}), []Problem{{"tls", "want a mapping of fields, got the boolean true"}}},
		{"bool as a string", doc(ov{"snp": "{offline: 'true'}"}), []Problem{{"snp.offline", `want true or false, got the string "true"`}}},
		{"duplicate key", doc(nil) + "token_key: other.pem\n", []Problem{{"", `key "token_key" already set`}}},
		{"not YAML", "listen: [\n", []Problem{{"", "not valid YAML"}}},
		{"empty document", "# nothing\n", []Problem{{"", "empty document"}}},
		{"a list, not a mapping", "- listen\n", []Problem{{"", "want a mapping of fields, got a list"}}},

		// Every problem at once.
		{"several problems", doc(ov{"listen": "0.0.0.0:1", "insecure_plaintext": "true", "token_lifetime": "0.5s", "kek_files": "[]"}), []Problem{
			{"insecure_plaintext", "loopback"}, {"tls", "must be empty"}, {"kek_files", "at least one"}, {"token_lifetime", "500ms is outside"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, "case.yaml")
			if err := os.WriteFile(p, []byte(tc.doc), 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := LoadServer(p)
			got := problemsOf(t, err)
			if diff := cmp.Diff(tc.want, matched(tc.want, got)); diff != "" {
				t.Errorf("LoadServer problems (-want +got):\n%s\nerror: %v", diff, err)
			}
			if err == nil && s == nil {
				t.Error("LoadServer returned nil, nil")
			}
			if err != nil {
				if s != nil {
					t.Error("LoadServer returned a Server with an error")
				}
				if !errors.Is(err, ErrInvalid) || !strings.HasPrefix(err.Error(), "config: "+p+": ") {
					t.Errorf("error %q: want ErrInvalid, prefixed with the file name", err)
				}
			}
		})
	}
}

// matched returns got with each message that contains the wanted
// substring at the same index replaced by that substring, so that cmp.Diff
// against want shows only real differences.
func matched(want, got []Problem) []Problem {
	out := slices.Clone(got)
	for i := range out {
		if i < len(want) && out[i].Field == want[i].Field && strings.Contains(out[i].Message, want[i].Message) {
			out[i].Message = want[i].Message
		}
	}
	return out
}

// problemsOf returns the problems of a *Error, nil for nil, and fails for
// any other error.
func problemsOf(t *testing.T, err error) []Problem {
	t.Helper()
	if err == nil {
		return nil
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not an *Error", err, err)
	}
	return e.Problems
}

func TestLoadServerUnreadable(t *testing.T) {
	_, err := LoadServer(filepath.Join(t.TempDir(), "missing.yaml"))
	if !errors.Is(err, os.ErrNotExist) || errors.Is(err, ErrInvalid) {
		t.Errorf("LoadServer(missing file) = %v, want fs.ErrNotExist and not ErrInvalid", err)
	}
	big := filepath.Join(t.TempDir(), "big.yaml")
	if err := os.WriteFile(big, make([]byte, MaxFileSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadServer(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("LoadServer(oversized file) = %v, want \"larger than\"", err)
	}
}

// TestLoadServerPaths checks that relative paths are resolved against the
// file's directory, not the working directory, and absolute ones kept.
func TestLoadServerPaths(t *testing.T) {
	dir := initDir(t, testOptions())
	sub := filepath.Join(dir, "conf")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	y := doc(map[string]string{
		"tls":       "{cert: ../server.pem, key: " + filepath.Join(dir, "server-key.pem") + ", client_ca: ../ca.pem}",
		"kek_files": "[../kek.key]", "token_key": "../token-key.pem", "challenge_key": "../challenge.key", "store": "../data.db",
	})
	p := filepath.Join(sub, "kbs.yaml")
	if err := os.WriteFile(p, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := LoadServer(p)
	if err != nil {
		t.Fatal(err)
	}
	got := []string{s.TLS.Cert, s.TLS.Key, s.TLS.ClientCA, s.KEKFiles[0], s.TokenKey, s.ChallengeKey, s.Store}
	want := []string{
		filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem"), filepath.Join(dir, "ca.pem"),
		filepath.Join(dir, "kek.key"), filepath.Join(dir, "token-key.pem"), filepath.Join(dir, "challenge.key"), filepath.Join(dir, "data.db"),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("resolved paths (-want +got):\n%s", diff)
	}
}

// TestValidateInCode checks Validate on a Server built in code: with no
// defaults applied, every required field is reported.
func TestValidateInCode(t *testing.T) {
	var s Server
	var fields []string
	for _, p := range problemsOf(t, s.Validate()) {
		fields = append(fields, p.Field)
	}
	want := []string{
		"listen", "metrics_listen", "tls.cert", "tls.key", "tls.client_ca", "store", "kek_files", "token_key", "challenge_key",
		"challenge_lifetime", "token_lifetime", "limits.max_message_bytes", "limits.challenges_per_second", "limits.challenge_burst", "limits.request_timeout",
	}
	if diff := cmp.Diff(want, fields); diff != "" {
		t.Errorf("Validate(Server{}) problem fields (-want +got):\n%s", diff)
	}
	if _, err := s.LoadMaterial(); !errors.Is(err, ErrInvalid) {
		t.Errorf("LoadMaterial(Server{}) = %v, want ErrInvalid", err)
	}
}

func TestPlaintextMaterial(t *testing.T) {
	dir := initDir(t, testOptions())
	p := filepath.Join(dir, "plain.yaml")
	if err := os.WriteFile(p, []byte(doc(map[string]string{"tls": "", "insecure_plaintext": "true"})), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := LoadServer(p)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.LoadMaterial()
	if err != nil {
		t.Fatal(err)
	}
	if m.TLS != nil {
		t.Error("plaintext server got a TLS configuration")
	}
}

func TestLoadAdminProblems(t *testing.T) {
	dir := initDir(t, testOptions())
	for _, tc := range []struct {
		name, doc string
		want      []Problem
	}{
		{"good", "address: 127.0.0.1:8443\nca: ca.pem\ncert: admin.pem\nkey: admin-key.pem\n", nil},
		{"unknown field", "address: 127.0.0.1:8443\nca: ca.pem\ncert: admin.pem\nkey: admin-key.pem\nrole: admin\n", []Problem{{"role", "unknown field"}}},
		{"no host", "address: ':8443'\nca: ca.pem\ncert: admin.pem\nkey: admin-key.pem\n", []Problem{{"address", "names no host"}}},
		{"missing everything", "address: ''\n", []Problem{{"address", "required"}, {"ca", "required"}, {"cert", "required"}, {"key", "required"}}},
		{"key of another certificate", "address: 127.0.0.1:8443\nca: ca.pem\ncert: admin.pem\nkey: auditor-key.pem\n", []Problem{{"key", "does not match cert"}}},
		{"CA missing", "address: 127.0.0.1:8443\nca: other-ca.pem\ncert: admin.pem\nkey: admin-key.pem\n", []Problem{{"ca", "no such file"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, "case.yaml")
			if err := os.WriteFile(p, []byte(tc.doc), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadAdmin(p)
			if diff := cmp.Diff(tc.want, matched(tc.want, problemsOf(t, err))); diff != "" {
				t.Errorf("LoadAdmin problems (-want +got):\n%s\nerror: %v", diff, err)
			}
		})
	}
}

func TestDuration(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{5 * time.Minute, "5m"}, {30 * time.Second, "30s"}, {time.Hour, "1h"}, {90 * time.Minute, "1h30m"},
		{time.Hour + time.Second, "1h0m1s"}, {500 * time.Millisecond, "500ms"}, {0, "0s"},
	} {
		b, err := json.Marshal(Duration(tc.d))
		if err != nil {
			t.Fatal(err)
		}
		var back Duration
		if err := json.Unmarshal(b, &back); err != nil || time.Duration(back) != tc.d {
			t.Errorf("Unmarshal(Marshal(%v)) = %v, %v", tc.d, back, err)
		}
		if got := Duration(tc.d).String(); got != tc.want {
			t.Errorf("Duration(%v).String() = %q, want %q", tc.d, got, tc.want)
		}
	}
	var d Duration
	for _, bad := range []string{`300`, `"5"`, `"five minutes"`, `null`} {
		if err := json.Unmarshal([]byte(bad), &d); err == nil && bad != `null` {
			t.Errorf("Unmarshal(%s) succeeded", bad)
		}
	}
}

// FuzzDecode runs the strict decoder on arbitrary documents for both
// configuration types: no panic, and whatever decodes re-encodes and
// decodes to the same value.
func FuzzDecode(f *testing.F) {
	dir := initDir(f, testOptions())
	for _, name := range []string{FileServer, FileAdmin} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(doc(map[string]string{"limits": "{max_message_bytes: 1e3, challenges_per_second: .inf}"})))
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte("tls: {cert: [1, {x: y}]}\nlisten: !!binary aGVsbG8=\n"))
	f.Add([]byte("challenge_lifetime: 9223372036854775807h\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		check := func(dst any, fresh func() any) {
			if err := decode(data, dst); err != nil {
				if len(err.Problems) == 0 {
					t.Fatal("decode failed with no problems listed")
				}
				return
			}
			j, err := json.Marshal(dst)
			if err != nil {
				t.Fatalf("Marshal after decode: %v", err)
			}
			back := fresh()
			if err := decode(j, back); err != nil {
				t.Fatalf("decode(%s) of a re-encoded value: %v", j, err)
			}
			if diff := cmp.Diff(dst, back, cmpopts.EquateEmpty()); diff != "" {
				t.Fatalf("re-decoded value differs (-first +second):\n%s", diff)
			}
		}
		check(&Server{}, func() any { return &Server{} })
		check(&Admin{}, func() any { return &Admin{} })
	})
}

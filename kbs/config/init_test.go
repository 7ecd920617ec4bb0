package config

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/greatjail/cvm/attestation/sim"
	"github.com/greatjail/cvm/kbs/pki"
)

var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func testRand(seed byte) io.Reader { return rand.NewChaCha8([32]byte{seed}) }

func testOptions() InitOptions { return InitOptions{Now: testNow, Rand: testRand(1)} }

// initDir runs Init into a fresh directory and returns it.
func initDir(t testing.TB, opts InitOptions) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "kbs")
	if _, err := Init(dir, opts); err != nil {
		t.Fatal(err)
	}
	return dir
}

// simRoot is one sim authority's root PEM, made once (RSA-4096 key
// generation takes about a second).
var simRoot = sync.OnceValues(func() ([]byte, error) {
	a, err := sim.New(testRand(7), testNow)
	if err != nil {
		return nil, err
	}
	return a.RootPEM(), nil
})

func writeSimRoot(t *testing.T) string {
	t.Helper()
	b, err := simRoot()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "root.pem")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestInitRoundTrip(t *testing.T) {
	root := writeSimRoot(t)
	opts := testOptions()
	opts.SimRoot = root
	dir := filepath.Join(t.TempDir(), "a", "kbs")
	created, err := Init(dir, opts)
	if err != nil {
		t.Fatal(err)
	}

	var names []string
	for _, p := range created {
		if filepath.Dir(p) != dir {
			t.Errorf("created %s outside %s", p, dir)
		}
		names = append(names, filepath.Base(p))
	}
	wantNames := []string{
		"ca.pem", "ca-key.pem", "server.pem", "server-key.pem", "admin.pem", "admin-key.pem",
		"auditor.pem", "auditor-key.pem", "kek.key", "token-key.pem", "challenge.key", "sim-root.pem",
		"kbs.yaml", "admin.yaml", "auditor.yaml",
	}
	if diff := cmp.Diff(wantNames, names); diff != "" {
		t.Errorf("Init created (-want +got):\n%s", diff)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != len(wantNames) {
		t.Errorf("directory holds %d entries, want %d", len(ents), len(wantNames))
	}

	// Modes: keys 0600, directory 0700 (also the parent Init created).
	modes := map[string]fs.FileMode{}
	for _, p := range append([]string{dir, filepath.Dir(dir)}, created...) {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		modes[p] = st.Mode().Perm()
	}
	for p, m := range modes {
		want := fs.FileMode(0o644)
		switch {
		case p == dir || p == filepath.Dir(dir):
			want = 0o700
		case strings.HasSuffix(p, "-key.pem") || strings.HasSuffix(p, ".key"):
			want = 0o600
		}
		if m != want {
			t.Errorf("mode of %s = %v, want %v", p, m, want)
		}
	}

	s, err := LoadServer(filepath.Join(dir, FileServer))
	if err != nil {
		t.Fatalf("LoadServer(the written kbs.yaml) = %v", err)
	}
	in := func(name string) string { return filepath.Join(dir, name) }
	want := &Server{
		Listen:            "127.0.0.1:8443",
		MetricsListen:     "127.0.0.1:9464",
		TLS:               TLS{Cert: in("server.pem"), Key: in("server-key.pem"), ClientCA: in("ca.pem")},
		Store:             in("kbs.db"),
		KEKFiles:          []string{in("kek.key")},
		TokenKey:          in("token-key.pem"),
		ChallengeKey:      in("challenge.key"),
		ChallengeLifetime: Duration(5 * time.Minute),
		TokenLifetime:     Duration(5 * time.Minute),
		SimRoot:           in("sim-root.pem"),
		TPM:               TPM{TrustedAKs: []string{}},
		Limits:            Limits{MaxMessageBytes: 4 << 20, ChallengesPerSecond: 10, ChallengeBurst: 20, RequestTimeout: Duration(30 * time.Second)},
	}
	if diff := cmp.Diff(want, s); diff != "" {
		t.Errorf("LoadServer (-want +got):\n%s", diff)
	}

	m, err := s.LoadMaterial()
	if err != nil {
		t.Fatal(err)
	}
	rootPEM, _ := simRoot()
	got := struct {
		TLS                 bool
		KEKs, ChallengeKey  int
		TokenKey            bool
		SimRoot, TrustedAKs int
		ChallengeEqualsKEK  bool
	}{m.TLS != nil, len(m.KEKs), len(m.ChallengeKey), m.TokenKey != nil, len(m.SimRoot), len(m.TrustedAKs), string(m.ChallengeKey) == string(m.KEKs[0])}
	wantM := got
	wantM.TLS, wantM.KEKs, wantM.ChallengeKey, wantM.TokenKey, wantM.SimRoot, wantM.TrustedAKs, wantM.ChallengeEqualsKEK = true, 1, 32, true, len(rootPEM), 0, false
	if diff := cmp.Diff(wantM, got); diff != "" {
		t.Errorf("LoadMaterial (-want +got):\n%s", diff)
	}

	for _, role := range []pki.Role{pki.RoleAdmin, pki.RoleAuditor} {
		a, err := LoadAdmin(filepath.Join(dir, string(role)+".yaml"))
		if err != nil {
			t.Fatalf("LoadAdmin(%s.yaml) = %v", role, err)
		}
		want := &Admin{Address: "127.0.0.1:8443", CA: in("ca.pem"), Cert: in(string(role) + ".pem"), Key: in(string(role) + "-key.pem")}
		if diff := cmp.Diff(want, a); diff != "" {
			t.Errorf("LoadAdmin(%s.yaml) (-want +got):\n%s", role, diff)
		}
	}
}

func TestInitWithoutSimRoot(t *testing.T) {
	dir := initDir(t, testOptions())
	s, err := LoadServer(filepath.Join(dir, FileServer))
	if err != nil {
		t.Fatal(err)
	}
	if s.SimRoot != "" {
		t.Errorf("SimRoot = %q, want empty: without --sim-root simulated evidence is denied", s.SimRoot)
	}
	if _, err := os.Stat(filepath.Join(dir, FileSimRoot)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("sim-root.pem: %v, want it absent", err)
	}
}

// TestInitHandshake connects the generated admin, auditor and guest
// configurations to the generated server configuration over loopback TCP.
func TestInitHandshake(t *testing.T) {
	dir := initDir(t, testOptions())
	s, err := LoadServer(filepath.Join(dir, FileServer))
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.LoadMaterial()
	if err != nil {
		t.Fatal(err)
	}
	serverCfg := m.TLS
	serverCfg.Time = func() time.Time { return testNow }

	clients := map[string]*tls.Config{}
	for _, role := range []string{"admin", "auditor"} {
		a, err := LoadAdmin(filepath.Join(dir, role+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if clients[role], err = a.ClientTLS(); err != nil {
			t.Fatal(err)
		}
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, FileCA))
	if err != nil {
		t.Fatal(err)
	}
	if clients["guest"], err = pki.ClientTLS(caPEM, nil, nil, "localhost"); err != nil {
		t.Fatal(err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, who := range []string{"admin", "auditor", "guest"} {
		cfg := clients[who]
		cfg.Time = func() time.Time { return testNow }
		roleCh := make(chan string, 1)
		go func() { // exits after one handshake
			role := "accept failed"
			defer func() { roleCh <- role }()
			raw, err := ln.Accept()
			if err != nil {
				return
			}
			defer raw.Close()
			conn := tls.Server(raw, serverCfg)
			if err := conn.HandshakeContext(ctx); err != nil {
				role = "handshake: " + err.Error()
				return
			}
			chains := conn.ConnectionState().VerifiedChains
			if len(chains) == 0 {
				role = "none"
				return
			}
			r, err := pki.RoleOf(chains[0][0])
			if err != nil {
				role = err.Error()
				return
			}
			role = string(r)
		}()
		var d net.Dialer
		raw, err := d.DialContext(ctx, "tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conn := tls.Client(raw, cfg)
		if err := conn.HandshakeContext(ctx); err != nil {
			t.Errorf("%s: client handshake: %v", who, err)
		}
		got := <-roleCh
		conn.Close()
		want := map[string]string{"admin": "admin", "auditor": "auditor", "guest": "none"}[who]
		if got != want {
			t.Errorf("%s: server saw role %q, want %q", who, got, want)
		}
	}
}

// TestInitListen checks the server certificate's names and admin.yaml's
// address for several listen addresses.
func TestInitListen(t *testing.T) {
	for _, tc := range []struct {
		listen      string
		hosts       []string
		wantAddress string
		wantDNS     []string
		wantIPs     []string
	}{
		{"", nil, "127.0.0.1:8443", []string{"localhost"}, []string{"127.0.0.1"}},
		{"0.0.0.0:9443", nil, "127.0.0.1:9443", []string{"localhost"}, []string{"127.0.0.1"}},
		{":9443", nil, "127.0.0.1:9443", []string{"localhost"}, []string{"127.0.0.1"}},
		{"[::]:9443", nil, "[::1]:9443", []string{"localhost"}, []string{"127.0.0.1", "::1"}},
		{"[::1]:9443", nil, "[::1]:9443", []string{"localhost"}, []string{"::1", "127.0.0.1"}},
		{"10.0.0.5:8443", nil, "10.0.0.5:8443", []string{"localhost"}, []string{"10.0.0.5", "127.0.0.1"}},
		{"kbs.example.com:8443", nil, "kbs.example.com:8443", []string{"kbs.example.com", "localhost"}, []string{"127.0.0.1"}},
		// Explicit hosts replace the default; the admin address's host is
		// always added.
		{"10.0.0.5:8443", []string{"kbs.internal"}, "10.0.0.5:8443", []string{"kbs.internal"}, []string{"10.0.0.5"}},
	} {
		t.Run(tc.listen, func(t *testing.T) {
			opts := testOptions()
			opts.Listen, opts.Hosts = tc.listen, tc.hosts
			dir := initDir(t, opts)
			a, err := LoadAdmin(filepath.Join(dir, FileAdmin))
			if err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(filepath.Join(dir, FileServerCert))
			if err != nil {
				t.Fatal(err)
			}
			certs, err := pki.ParseCertificates(b)
			if err != nil {
				t.Fatal(err)
			}
			var ips []string
			for _, ip := range certs[0].IPAddresses {
				ips = append(ips, ip.String())
			}
			got := []any{a.Address, certs[0].DNSNames, ips}
			if diff := cmp.Diff([]any{tc.wantAddress, tc.wantDNS, tc.wantIPs}, got); diff != "" {
				t.Errorf("address, DNS names, IPs (-want +got):\n%s", diff)
			}
			host, _, _ := net.SplitHostPort(a.Address)
			if err := certs[0].VerifyHostname(host); err != nil {
				t.Errorf("server certificate does not name admin.yaml's host: %v", err)
			}
		})
	}
}

func TestInitRefusesOverwrite(t *testing.T) {
	for _, name := range append(allFileNames(), "kbs.db") {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, name)
			if err := os.WriteFile(p, []byte("precious"), 0o600); err != nil {
				t.Fatal(err)
			}
			created, err := Init(dir, testOptions())
			if !errors.Is(err, fs.ErrExist) {
				t.Errorf("Init into a directory holding %s = %v, want fs.ErrExist", name, err)
			}
			if created != nil {
				t.Errorf("Init returned created = %v, want nil", created)
			}
			assertOnly(t, dir, name)
			if b, _ := os.ReadFile(p); string(b) != "precious" {
				t.Errorf("%s was changed to %q", name, b)
			}
		})
	}
	// A second Init into an initialized directory changes nothing.
	dir := initDir(t, testOptions())
	before := snapshot(t, dir)
	if _, err := Init(dir, testOptions()); !errors.Is(err, fs.ErrExist) {
		t.Errorf("second Init = %v, want fs.ErrExist", err)
	}
	if diff := cmp.Diff(before, snapshot(t, dir)); diff != "" {
		t.Errorf("second Init changed the directory (-before +after):\n%s", diff)
	}
}

// assertOnly fails unless dir holds exactly names.
func assertOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	slices.Sort(names)
	if diff := cmp.Diff(names, got); diff != "" {
		t.Errorf("%s holds (-want +got):\n%s", dir, diff)
	}
}

func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		m[e.Name()] = string(b)
	}
	return m
}

// TestInitCleanup makes Init fail at every file it writes, and after
// writing a configuration that does not load: nothing may remain, not
// even the directories Init created.
func TestInitCleanup(t *testing.T) {
	n := len(allFileNames()) - 1 // without sim-root.pem
	failAt := func(k int) func(string, []byte, fs.FileMode) error {
		i := 0
		return func(p string, b []byte, m fs.FileMode) error {
			if i++; i > k {
				return errors.New("injected write failure")
			}
			return writeNew(p, b, m)
		}
	}
	for k := range n {
		for _, existing := range []bool{false, true} {
			base := t.TempDir()
			dir := filepath.Join(base, "x", "kbs")
			if existing {
				dir = base
			}
			opts := testOptions()
			opts.writeFile = failAt(k)
			created, err := Init(dir, opts)
			if err == nil || !strings.Contains(err.Error(), "injected") {
				t.Errorf("Init failing at file %d = %v, want the injected error", k, err)
			}
			if created != nil {
				t.Errorf("Init failing at file %d returned created = %v, want nil", k, created)
			}
			assertOnly(t, base)
		}
	}

	// The files all write, but kbs.yaml does not load back.
	base := t.TempDir()
	opts := testOptions()
	opts.writeFile = func(p string, b []byte, m fs.FileMode) error {
		if filepath.Base(p) == FileServer {
			b = append(b, "surprise: true\n"...)
		}
		return writeNew(p, b, m)
	}
	if _, err := Init(filepath.Join(base, "kbs"), opts); err == nil || !strings.Contains(err.Error(), "surprise: unknown field") {
		t.Errorf("Init writing a bad kbs.yaml = %v, want its load error", err)
	}
	assertOnly(t, base)
}

// TestInitUnwritableDir fails Init on a real permission error. Root
// ignores directory permissions, so this needs an unprivileged user;
// TestInitCleanup covers the same path by injection for everyone.
func TestInitUnwritableDir(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("needs a non-root user: root writes into a mode 0500 directory")
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(dir, 0o700) })
	if _, err := Init(dir, testOptions()); !errors.Is(err, fs.ErrPermission) {
		t.Errorf("Init into a read-only directory = %v, want fs.ErrPermission", err)
	}
	assertOnly(t, dir)
}

func TestInitBadOptions(t *testing.T) {
	caFile := filepath.Join(initDir(t, testOptions()), FileCA)
	notPEM := filepath.Join(t.TempDir(), "notpem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		modify func(*InitOptions)
		want   string
	}{
		{"no rand", func(o *InitOptions) { o.Rand = nil }, "Rand is required"},
		{"no time", func(o *InitOptions) { o.Now = time.Time{} }, "Now is required"},
		{"bad listen", func(o *InitOptions) { o.Listen = "8443" }, "not host:port"},
		{"bad port", func(o *InitOptions) { o.Listen = "127.0.0.1:http" }, "port"},
		{"bad host", func(o *InitOptions) { o.Hosts = []string{"a b"} }, `host "a b"`},
		{"missing sim root", func(o *InitOptions) { o.SimRoot = "/nonexistent/root.pem" }, "no such file"},
		{"sim root not PEM", func(o *InitOptions) { o.SimRoot = notPEM }, "not PEM"},
		// A real (non-simulated) root must never be trusted as the sim root.
		{"sim root is not a sim certificate", func(o *InitOptions) { o.SimRoot = caFile }, "not a simulated-TEE certificate"},
		{"rand runs dry", func(o *InitOptions) { o.Rand = io.LimitReader(testRand(1), 20) }, "EOF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			opts := testOptions()
			tc.modify(&opts)
			_, err := Init(filepath.Join(base, "kbs"), opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Init = %v, want an error containing %q", err, tc.want)
			}
			assertOnly(t, base)
		})
	}
}

func TestInitDirIsAFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Init(f, testOptions()); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("Init into a regular file = %v, want \"not a directory\"", err)
	}
}

// The server certificate Init writes must be usable for TLS server
// authentication only, and the client certificates for client
// authentication only.
func TestInitCertificateUsages(t *testing.T) {
	dir := initDir(t, testOptions())
	for _, tc := range []struct {
		file string
		want []x509.ExtKeyUsage
	}{
		{FileServerCert, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}},
		{FileAdminCert, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
		{FileAuditorCert, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
	} {
		b, err := os.ReadFile(filepath.Join(dir, tc.file))
		if err != nil {
			t.Fatal(err)
		}
		certs, err := pki.ParseCertificates(b)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tc.want, certs[0].ExtKeyUsage); diff != "" {
			t.Errorf("%s extended key usage (-want +got):\n%s", tc.file, diff)
		}
	}
}

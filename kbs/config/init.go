package config

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"text/template"
	"time"

	"github.com/greatjail/cvm/kbs/pki"
)

// Files Init writes, relative to its directory.
const (
	FileCA           = "ca.pem"
	FileCAKey        = "ca-key.pem"
	FileServerCert   = "server.pem"
	FileServerKey    = "server-key.pem"
	FileAdminCert    = "admin.pem"
	FileAdminKey     = "admin-key.pem"
	FileAuditorCert  = "auditor.pem"
	FileAuditorKey   = "auditor-key.pem"
	FileKEK          = "kek.key"
	FileTokenKey     = "token-key.pem"
	FileChallengeKey = "challenge.key"
	FileSimRoot      = "sim-root.pem"
	FileServer       = "kbs.yaml"
	FileAdmin        = "admin.yaml"
	FileAuditor      = "auditor.yaml"
)

// InitOptions are the inputs of Init.
type InitOptions struct {
	// Listen is the broker's address, host:port. Default DefaultListen.
	Listen string
	// SimRoot, if set, is a file holding the simulated TEE's root
	// certificates (sim.Authority.RootPEM); it is copied into the
	// directory as sim-root.pem and trusted by the broker.
	SimRoot string
	// Hosts are the server certificate's names (IP addresses, DNS names).
	// Default: Listen's host (unless it is unspecified, like 0.0.0.0),
	// "localhost" and "127.0.0.1". The host of admin.yaml's address is
	// always added.
	Hosts []string
	// Now is the time certificates are issued at. Required.
	Now time.Time
	// Rand supplies the key-encryption and challenge keys, the CA's name
	// suffix and serial numbers. Required. (The certificate keys and the
	// token key come from the standard library's own secure source since
	// Go 1.26, whatever Rand is.)
	Rand io.Reader

	// writeFile replaces writeNew in tests, to inject failures.
	writeFile func(path string, data []byte, mode fs.FileMode) error
}

// Init creates a broker installation in dir (created with mode 0700 if
// missing): a CA (ca.pem, ca-key.pem), the server certificate
// (server.pem, server-key.pem) for opts.Hosts, admin and auditor client
// certificates (admin.pem, admin-key.pem, auditor.pem, auditor-key.pem),
// a key-encryption key (kek.key), the token signing key (token-key.pem),
// the challenge key (challenge.key), the server configuration kbs.yaml,
// the client configurations admin.yaml and auditor.yaml, and sim-root.pem
// if opts.SimRoot is set. Private keys have mode 0600. It returns the
// paths it wrote.
//
// admin.yaml's address is Listen, with an unspecified host (0.0.0.0, ::,
// empty) replaced by loopback, where such a broker is reachable too.
//
// Init never overwrites: if dir holds any of these files, or a kbs.db
// (a store encrypted under some other key), it writes nothing and returns
// an error wrapping fs.ErrExist. On any failure it removes what it wrote
// and the directories it created. Before returning it loads the written
// configurations back with LoadServer and LoadAdmin.
//
// Concurrent Inits into one directory cannot both succeed: files are
// created exclusively, and the loser removes only what it wrote.
func Init(dir string, opts InitOptions) (created []string, err error) {
	if opts.Rand == nil {
		return nil, errors.New("config: init: InitOptions.Rand is required")
	}
	if opts.Now.IsZero() {
		return nil, errors.New("config: init: InitOptions.Now is required")
	}
	if opts.writeFile == nil {
		opts.writeFile = writeNew
	}
	setDefault(&opts.Listen, DefaultListen)
	files, err := render(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("config: init: %w", err)
	}

	for _, name := range append(allFileNames(), DefaultStore) {
		p := filepath.Join(dir, name)
		if _, err := os.Lstat(p); err == nil {
			return nil, fmt.Errorf("config: init: refusing to overwrite %s: %w", p, fs.ErrExist)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("config: init: %w", err)
		}
	}

	// Undo on failure: files in reverse order, then the directories this
	// call created, deepest first.
	var dirs []string
	defer func() {
		if err == nil {
			return
		}
		for _, p := range slices.Backward(created) {
			os.Remove(p)
		}
		for _, d := range dirs {
			os.Remove(d)
		}
		created = nil
	}()
	if dirs, err = mkdirAll(dir); err != nil {
		return nil, fmt.Errorf("config: init: %w", err)
	}
	for _, f := range files {
		p := filepath.Join(dir, f.name)
		if err = opts.writeFile(p, f.data, f.mode); err != nil {
			return created, fmt.Errorf("config: init: %w", err)
		}
		created = append(created, p)
	}
	if err = syncDir(dir); err != nil {
		return created, fmt.Errorf("config: init: %w", err)
	}

	if _, err = LoadServer(filepath.Join(dir, FileServer)); err != nil {
		return created, fmt.Errorf("config: init: the written configuration does not load: %w", err)
	}
	for _, name := range []string{FileAdmin, FileAuditor} {
		if _, err = LoadAdmin(filepath.Join(dir, name)); err != nil {
			return created, fmt.Errorf("config: init: the written configuration does not load: %w", err)
		}
	}
	return created, nil
}

func allFileNames() []string {
	return []string{
		FileCA, FileCAKey, FileServerCert, FileServerKey, FileAdminCert, FileAdminKey,
		FileAuditorCert, FileAuditorKey, FileKEK, FileTokenKey, FileChallengeKey, FileSimRoot,
		FileServer, FileAdmin, FileAuditor,
	}
}

type file struct {
	name string
	data []byte
	mode fs.FileMode
}

// render makes every file of an installation in memory.
func render(dir string, opts InitOptions) ([]file, error) {
	listenHost, err := splitAddress(opts.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	address := opts.Listen
	_, port, _ := net.SplitHostPort(opts.Listen)
	if ip, err := netip.ParseAddr(listenHost); listenHost == "" || (err == nil && ip.IsUnspecified()) {
		loop := "127.0.0.1"
		if err == nil && ip.Is6() {
			loop = "::1"
		}
		listenHost, address = "", net.JoinHostPort(loop, port)
	}
	adminHost, _ := splitAddress(address)

	hosts := slices.Clone(opts.Hosts)
	if len(hosts) == 0 {
		if listenHost != "" {
			hosts = append(hosts, listenHost)
		}
		hosts = append(hosts, "localhost", "127.0.0.1")
	}
	hosts = append(hosts, adminHost)
	var uniq []string
	for _, h := range hosts {
		if !slices.Contains(uniq, h) {
			uniq = append(uniq, h)
		}
	}
	hosts = uniq

	var simRoot []byte
	if opts.SimRoot != "" {
		if simRoot, err = readFile(opts.SimRoot); err != nil {
			return nil, fmt.Errorf("sim root: %w", err)
		}
		if err := checkSimRoot(simRoot); err != nil {
			return nil, fmt.Errorf("sim root %s: %w", opts.SimRoot, err)
		}
	}

	var id [4]byte
	if _, err := io.ReadFull(opts.Rand, id[:]); err != nil {
		return nil, err
	}
	ca, err := pki.NewCA(opts.Rand, opts.Now, hex.EncodeToString(id[:]))
	if err != nil {
		return nil, err
	}
	caKey, err := ca.KeyPEM()
	if err != nil {
		return nil, err
	}
	serverCert, serverKey, err := ca.IssueServer(opts.Rand, opts.Now, hosts)
	if err != nil {
		return nil, err
	}
	adminCert, adminKey, err := ca.IssueClient(opts.Rand, opts.Now, pki.RoleAdmin, "admin")
	if err != nil {
		return nil, err
	}
	auditorCert, auditorKey, err := ca.IssueClient(opts.Rand, opts.Now, pki.RoleAuditor, "auditor")
	if err != nil {
		return nil, err
	}
	kek, err := randomHexKey(opts.Rand)
	if err != nil {
		return nil, err
	}
	challengeKey, err := randomHexKey(opts.Rand)
	if err != nil {
		return nil, err
	}
	tk, err := ecdsa.GenerateKey(elliptic.P256(), opts.Rand)
	if err != nil {
		return nil, err
	}
	tokenKey, err := pki.EncodeKey(tk)
	if err != nil {
		return nil, err
	}

	data := templateData{
		Now:                 opts.Now.UTC().Format(time.RFC3339),
		Dir:                 dir,
		ServerExpires:       opts.Now.Add(pki.ServerValidity).UTC().Format(time.DateOnly),
		ClientExpires:       opts.Now.Add(pki.ClientValidity).UTC().Format(time.DateOnly),
		Listen:              opts.Listen,
		MetricsListen:       DefaultMetricsListen,
		Address:             address,
		Hosts:               hosts,
		ChallengeLifetime:   DefaultChallengeLifetime.String(),
		TokenLifetime:       DefaultTokenLifetime.String(),
		MaxMessageBytes:     DefaultMaxMessageBytes,
		ChallengesPerSecond: DefaultChallengesPerSecond,
		ChallengeBurst:      DefaultChallengeBurst,
		RequestTimeout:      DefaultRequestTimeout.String(),
	}
	if simRoot != nil {
		data.SimRoot = FileSimRoot
	}
	serverYAML, err := execute(serverTemplate, data)
	if err != nil {
		return nil, err
	}
	data.Role, data.Cert, data.Key = pki.RoleAdmin, FileAdminCert, FileAdminKey
	adminYAML, err := execute(adminTemplate, data)
	if err != nil {
		return nil, err
	}
	data.Role, data.Cert, data.Key = pki.RoleAuditor, FileAuditorCert, FileAuditorKey
	auditorYAML, err := execute(adminTemplate, data)
	if err != nil {
		return nil, err
	}

	files := []file{
		{FileCA, ca.CertPEM(), 0o644},
		{FileCAKey, caKey, 0o600},
		{FileServerCert, serverCert, 0o644},
		{FileServerKey, serverKey, 0o600},
		{FileAdminCert, adminCert, 0o644},
		{FileAdminKey, adminKey, 0o600},
		{FileAuditorCert, auditorCert, 0o644},
		{FileAuditorKey, auditorKey, 0o600},
		{FileKEK, kek, 0o600},
		{FileTokenKey, tokenKey, 0o600},
		{FileChallengeKey, challengeKey, 0o600},
	}
	if simRoot != nil {
		files = append(files, file{FileSimRoot, simRoot, 0o644})
	}
	return append(files,
		file{FileServer, serverYAML, 0o644},
		file{FileAdmin, adminYAML, 0o644},
		file{FileAuditor, auditorYAML, 0o644},
	), nil
}

func randomHexKey(rand io.Reader) ([]byte, error) {
	var k [KeySize]byte
	if _, err := io.ReadFull(rand, k[:]); err != nil {
		return nil, err
	}
	return []byte(hex.EncodeToString(k[:]) + "\n"), nil
}

// mkdirAll creates dir and missing parents with mode 0700 and returns the
// directories it created, deepest first.
func mkdirAll(dir string) ([]string, error) {
	var missing []string
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err == nil {
			if !st.IsDir() {
				return nil, fmt.Errorf("%s is not a directory", d)
			}
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		missing = append(missing, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		for _, d := range missing {
			os.Remove(d)
		}
		return nil, err
	}
	return missing, nil
}

// writeNew creates path (failing if it exists), writes data and syncs it.
// If it created the file but could not complete it, it removes it.
func writeNew(path string, data []byte, mode fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(mode) // not subject to the umask
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

type templateData struct {
	Now, Dir, Listen, MetricsListen  string
	Address                          string
	ServerExpires, ClientExpires     string
	Hosts                            []string
	SimRoot                          string
	ChallengeLifetime, TokenLifetime string
	MaxMessageBytes                  int
	ChallengesPerSecond              float64
	ChallengeBurst                   int
	RequestTimeout                   string
	Role                             pki.Role
	Cert, Key                        string
}

func execute(t *template.Template, data templateData) ([]byte, error) {
	var b bytes.Buffer
	if err := t.Execute(&b, data); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// quote writes s as a YAML double-quoted scalar (JSON string syntax is a
// subset of it).
func quote(s any) (string, error) {
	b, err := json.Marshal(fmt.Sprint(s))
	return string(b), err
}

var funcs = template.FuncMap{"q": quote, "path": filepath.Join}

var serverTemplate = template.Must(template.New(FileServer).Funcs(funcs).Parse(`# kbs.yaml: configuration of the cvm key broker, written by
# ` + "`cvm-kbs init`" + ` at {{.Now}}. Run the broker with:
#
#     cvm-kbs serve --config {{path .Dir "kbs.yaml"}}
#
# YAML. Unknown fields are errors, and so is a field name in another case.
# Relative paths are relative to the directory of this file. Durations are
# strings with a unit: "30s", "5m", "1h". A field left out or zero takes
# the default given in its comment.
#
# Keep this directory private (mode 0700): it holds the CA key, the
# key-encryption key and the signing keys.

# gRPC address (host:port) of the broker, for guests and admin clients.
# Always TLS 1.3. Default "127.0.0.1:8443". The server certificate names
# {{range $i, $h := .Hosts}}{{if $i}}, {{end}}{{$h}}{{end}}.
listen: {{q .Listen}}

# Prometheus metrics over plain HTTP (host:port), or "off", quoted, to
# disable them. Default "127.0.0.1:9464".
metrics_listen: {{q .MetricsListen}}

# Serve gRPC without TLS, for development only. Allowed only when listen
# is a loopback IP address (127.0.0.1:PORT, [::1]:PORT); the tls section
# must then be empty, and every admin RPC is denied since no client has a
# certificate. Default false.
insecure_plaintext: false

tls:
  # The broker's certificate (signed by ca.pem; valid until
  # {{.ServerExpires}}) and its private key.
  cert: "server.pem"
  key: "server-key.pem"
  # CA of admin clients. A client certificate signed by it carries its
  # role, admin or auditor, as its Organizational Unit. Guests connect
  # without a client certificate and authenticate by attestation.
  client_ca: "ca.pem"

# Database file (bbolt): resources (encrypted), policies, reference
# values, audit log. Default "kbs.db".
store: "kbs.db"

# Key-encryption keys of resources at rest: files of 32 random bytes in
# hex. The first encrypts; all of them decrypt. To rotate, put a new key
# first and keep the old ones until everything is re-encrypted. Losing
# them loses every resource.
kek_files:
  - "kek.key"

# Key that signs attestation tokens: ECDSA P-256, PKCS#8 PEM.
token_key: "token-key.pem"

# Key that authenticates the broker's stateless challenges: 32 random bytes
# in hex. Replicas of one broker share it.
challenge_key: "challenge.key"

# How long a guest may take to answer a challenge: 1s to 1h, default {{.ChallengeLifetime}}.
# How long a token is valid: 1s to 24h, default {{.TokenLifetime}}.
challenge_lifetime: {{q .ChallengeLifetime}}
token_lifetime: {{q .TokenLifetime}}

# Root certificates (ARK, ASK) of the simulated TEE to trust. Absent:
# evidence from the simulated TEE is denied. Development and CI only.
{{if .SimRoot}}sim_root: {{q .SimRoot}}{{else}}# sim_root: "sim-root.pem"{{end}}

# AMD SEV-SNP.
snp:
  # Directory caching VCEK certificates and CRLs from AMD KDS ("" = none).
  cert_cache: ""
  # Never fetch from AMD KDS: certificates come from the evidence and
  # cert_cache only.
  offline: false
  # Check AMD's CRL for a revoked ASK or VCEK.
  check_revocations: false

# Intel TDX.
tdx:
  # Directory of collateral from ` + "`cvm attest collateral fetch`" + `, used
  # instead of the network when set.
  collateral_dir: ""
  # Never fetch collateral from Intel PCS.
  offline: false
  # Intel PCS or PCCS base URL ("" = Intel PCS).
  pcs_url: ""
  # Check the PCK certificate revocation lists.
  check_revocations: false

# TPM quotes.
tpm:
  # PEM public key files ("PUBLIC KEY", RSA or ECDSA) of the attestation
  # keys registered at enrollment. None: no TPM quote verifies.
  trusted_aks: []

# What one peer can make the broker do.
limits:
  # Largest gRPC message in bytes: 4 KiB to 64 MiB. Default {{.MaxMessageBytes}}.
  max_message_bytes: {{.MaxMessageBytes}}
  # Challenges per peer: sustained rate per second (default {{.ChallengesPerSecond}})
  # and burst (default {{.ChallengeBurst}}).
  challenges_per_second: {{.ChallengesPerSecond}}
  challenge_burst: {{.ChallengeBurst}}
  # Deadline of each RPC: 1s to 10m. Default {{.RequestTimeout}}.
  request_timeout: {{q .RequestTimeout}}
`))

var adminTemplate = template.Must(template.New(FileAdmin).Funcs(funcs).Parse(`# Client configuration for the cvm key broker's admin API, role {{.Role}},
# written by ` + "`cvm-kbs init`" + ` at {{.Now}}. Use it with:
#
#     cvm kbs --admin-config {{path .Dir (printf "%s.yaml" .Role)}} ...
#
# YAML; unknown fields are errors. Relative paths are relative to the
# directory of this file. The key file gives whoever holds it the
# {{.Role}} role: keep it private.

# The broker, host:port. The server certificate must name the host.
address: {{q .Address}}

# CA that signed the broker's certificate; no other is trusted.
ca: "ca.pem"

# This client's certificate (valid until {{.ClientExpires}}) and key. The
# certificate's Organizational Unit is its role: {{.Role}}.
cert: {{q .Cert}}
key: {{q .Key}}
`))

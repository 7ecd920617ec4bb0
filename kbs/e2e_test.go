package kbs_test

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/attestation/runtimedata"
	"github.com/greatjail/cvm/attestation/sim"
	"github.com/greatjail/cvm/kbs"
	"github.com/greatjail/cvm/kbs/audit"
	"github.com/greatjail/cvm/kbs/challenge"
	"github.com/greatjail/cvm/kbs/client"
	"github.com/greatjail/cvm/kbs/pki"
	"github.com/greatjail/cvm/kbs/resources"
	"github.com/greatjail/cvm/kbs/seal"
	"github.com/greatjail/cvm/kbs/store/storetest"
	"github.com/greatjail/cvm/kbs/token"
	attestationv1 "github.com/greatjail/cvm/proto/cvm/attestation/v1"
	kbsv1 "github.com/greatjail/cvm/proto/cvm/kbs/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// authority is one simulated TEE for the whole test binary (RSA-4096 key
// generation takes seconds).
var authority = sync.OnceValues(func() (*sim.Authority, error) {
	return sim.New(rand.Reader, time.Now().Add(-time.Hour))
})

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// broker is a broker on loopback TLS with its clients.
type broker struct {
	clock   *clock
	log     *audit.Log
	guest   kbsv1.BrokerClient
	conn    *grpc.ClientConn
	admin   kbsv1.AdminClient
	auditor kbsv1.AdminClient
	audit   kbsv1.AuditClient
	noCert  kbsv1.AdminClient
	issuer  *challenge.Issuer
}

const maxMsg = 256 << 10

type brokerOpts struct {
	noSim bool
}

func newBroker(t testing.TB, o brokerOpts) *broker {
	t.Helper()
	a, err := authority()
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: time.Now()}
	st := storetest.NewMemory()
	kek, err := resources.LoadKEK(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	res, err := resources.New(st, []*resources.KEK{kek}, rand.Reader, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	issuer, err := challenge.NewIssuer(bytes.Repeat([]byte{1}, 32), challenge.Options{Now: clk.Now, Rand: rand.Reader})
	if err != nil {
		t.Fatal(err)
	}
	tokKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	signer, err := token.NewSigner(tokKey, token.Options{Now: clk.Now, Rand: rand.Reader})
	if err != nil {
		t.Fatal(err)
	}
	jwks, _ := signer.JWKS()
	tv, err := token.NewVerifier(jwks, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	verifiers := map[attestation.TEE]attestation.Verifier{}
	if !o.noSim {
		sv, err := sim.NewVerifier(a.RootPEM(), clk.Now)
		if err != nil {
			t.Fatal(err)
		}
		verifiers[attestation.TEESim] = sv
	}
	log := audit.New(st, clk.Now)
	srv, err := kbs.New(kbs.Options{
		Verifiers: verifiers, Store: st, Resources: res, Audit: log,
		Challenges: issuer, Nonces: challenge.NewUsedNonces(st), Tokens: signer, TokenVerifier: tv, Now: clk.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	// PKI: a CA, a server certificate, admin and auditor client certs.
	now := time.Now()
	ca, err := pki.NewCA(rand.Reader, now, "test")
	if err != nil {
		t.Fatal(err)
	}
	scert, skey, err := ca.IssueServer(rand.Reader, now, []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	stls, err := pki.ServerTLS(scert, skey, ca.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(stls)), grpc.MaxRecvMsgSize(maxMsg))
	srv.Register(g)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(lis)
	t.Cleanup(g.Stop)

	dial := func(role pki.Role) *grpc.ClientConn {
		var cert, key []byte
		if role != "" {
			if cert, key, err = ca.IssueClient(rand.Reader, now, role, "test-"+string(role)); err != nil {
				t.Fatal(err)
			}
		}
		ctls, err := pki.ClientTLS(ca.CertPEM(), cert, key, "127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		c, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(ctls)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	guestConn := dial("")
	adminConn := dial(pki.RoleAdmin)
	return &broker{
		clock: clk, log: log, issuer: issuer, conn: guestConn,
		guest: kbsv1.NewBrokerClient(guestConn), admin: kbsv1.NewAdminClient(adminConn),
		auditor: kbsv1.NewAdminClient(dial(pki.RoleAuditor)), audit: kbsv1.NewAuditClient(adminConn),
		noCert: kbsv1.NewAdminClient(guestConn),
	}
}

var goodMeasurement = bytes.Repeat([]byte{0xab}, 48)

// simProvider signs reports with the test authority.
type simProvider struct {
	measurement []byte
	debug       bool
	tamper      bool
}

func (p simProvider) TEE() attestation.TEE { return attestation.TEESim }

func (p simProvider) Evidence(_ context.Context, rd [64]byte) (*attestation.Evidence, error) {
	a, err := authority()
	if err != nil {
		return nil, err
	}
	req := sim.Request{ReportData: rd, Debug: p.debug}
	copy(req.Measurement[:], p.measurement)
	r, err := a.Report(req)
	if err != nil {
		return nil, err
	}
	if p.tamper {
		r[0x90] ^= 1
	}
	return &attestation.Evidence{TEE: attestation.TEESim, Report: r, Certificates: [][]byte{a.VCEK()}}, nil
}

// setup registers the reference measurement and a resource.
func (b *broker) setup(t testing.TB, secret []byte) {
	t.Helper()
	ctx := context.Background()
	if _, err := b.admin.AddReferenceValue(ctx, &kbsv1.AddReferenceValueRequest{Value: &kbsv1.ReferenceValue{
		Tee: attestationv1.Tee_TEE_SIM, Kind: "measurement", Value: goodMeasurement}}); err != nil {
		t.Fatalf("AddReferenceValue: %v", err)
	}
	if _, err := b.admin.PutResource(ctx, &kbsv1.PutResourceRequest{Name: "repo/key/disk", Data: secret}); err != nil {
		t.Fatalf("PutResource: %v", err)
	}
}

// lastReasons returns the reasons of the newest audit record.
func (b *broker) lastRecord(t testing.TB) audit.Record {
	t.Helper()
	recs, err := b.log.Tail(context.Background(), 1)
	if err != nil || len(recs) != 1 {
		t.Fatalf("audit tail: %v (%d records)", err, len(recs))
	}
	return recs[0]
}

func TestFetchEndToEnd(t *testing.T) {
	b := newBroker(t, brokerOpts{})
	secret := []byte("disk key: 0123456789abcdef")
	b.setup(t, secret)
	c := &client.Client{Conn: b.conn, Provider: simProvider{measurement: goodMeasurement}, Rand: rand.Reader}
	got, err := c.Fetch(context.Background(), "repo/key/disk")
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	if !bytes.Equal(got, secret) {
		t.Errorf("Fetch = %q, want %q", got, secret)
	}
	rec := b.lastRecord(t)
	if rec.Kind != "release" || rec.Outcome != "ok" || rec.TEE != "sim" {
		t.Errorf("last audit record = %+v, want an ok release for sim", rec)
	}
	if _, err := b.log.Verify(context.Background()); err != nil {
		t.Errorf("audit chain: %v", err)
	}
}

// guestSession performs the protocol by hand so attacks can alter any step.
type guestSession struct {
	nonce string
	priv  *ecdh.PrivateKey
	raw   []byte
	rd    [64]byte
}

func newSession(t *testing.T, nonce string) *guestSession {
	t.Helper()
	priv, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jwk, err := runtimedata.JWKFromPublicKey(priv.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	raw, err := runtimedata.RuntimeData{Nonce: nonce, TEEPubKey: jwk}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	rd, err := runtimedata.Digest(raw)
	if err != nil {
		t.Fatal(err)
	}
	return &guestSession{nonce: nonce, priv: priv, raw: raw, rd: rd}
}

func (b *broker) challenge(t *testing.T) string {
	t.Helper()
	ch, err := b.guest.GetChallenge(context.Background(), &kbsv1.GetChallengeRequest{Tee: attestationv1.Tee_TEE_SIM})
	if err != nil {
		t.Fatal(err)
	}
	return ch.GetNonce()
}

func attestReq(t *testing.T, p simProvider, s *guestSession, rd [64]byte) *kbsv1.AttestRequest {
	t.Helper()
	ev, err := p.Evidence(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	m, err := attestation.EvidenceToProto(ev)
	if err != nil {
		t.Fatal(err)
	}
	return &kbsv1.AttestRequest{Evidence: m, RuntimeData: s.raw}
}

func wantDenied(t *testing.T, err error, b *broker, reason string) {
	t.Helper()
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("got %v, want PermissionDenied", err)
	}
	if s := status.Convert(err).Message(); s != "denied" {
		t.Errorf("guest sees %q; the guest must see only a generic denial", s)
	}
	rec := b.lastRecord(t)
	if rec.Outcome != "denied" || !strings.Contains(strings.Join(rec.Reasons, "; "), reason) {
		t.Errorf("audit record %+v: want a denial with reason containing %q", rec, reason)
	}
}

func TestAttacks(t *testing.T) {
	good := simProvider{measurement: goodMeasurement}
	ctx := context.Background()
	tests := []struct {
		name   string
		opts   brokerOpts
		attack func(t *testing.T, b *broker) error
		reason string
	}{
		{"replayed nonce", brokerOpts{}, func(t *testing.T, b *broker) error {
			s := newSession(t, b.challenge(t))
			req := attestReq(t, good, s, s.rd)
			if _, err := b.guest.Attest(ctx, req); err != nil {
				t.Fatalf("first Attest: %v", err)
			}
			_, err := b.guest.Attest(ctx, req)
			return err
		}, "nonce already used"},
		{"expired challenge", brokerOpts{}, func(t *testing.T, b *broker) error {
			s := newSession(t, b.challenge(t))
			b.clock.Add(6 * time.Minute)
			_, err := b.guest.Attest(ctx, attestReq(t, good, s, s.rd))
			return err
		}, "nonce expired"},
		{"challenge signed by another broker", brokerOpts{}, func(t *testing.T, b *broker) error {
			other, _ := challenge.NewIssuer(bytes.Repeat([]byte{2}, 32), challenge.Options{Now: time.Now, Rand: rand.Reader})
			c, _ := other.Issue(attestation.TEESim)
			s := newSession(t, c.Nonce)
			_, err := b.guest.Attest(ctx, attestReq(t, good, s, s.rd))
			return err
		}, "nonce not issued by this broker"},
		{"tampered report", brokerOpts{}, func(t *testing.T, b *broker) error {
			s := newSession(t, b.challenge(t))
			_, err := b.guest.Attest(ctx, attestReq(t, simProvider{measurement: goodMeasurement, tamper: true}, s, s.rd))
			return err
		}, "report signature"},
		{"REPORT_DATA bound to another key", brokerOpts{}, func(t *testing.T, b *broker) error {
			nonce := b.challenge(t)
			s := newSession(t, nonce)
			other := newSession(t, nonce) // same nonce, another key
			_, err := b.guest.Attest(ctx, attestReq(t, good, s, other.rd))
			return err
		}, "REPORT_DATA"},
		{"measurement not in reference values", brokerOpts{}, func(t *testing.T, b *broker) error {
			s := newSession(t, b.challenge(t))
			_, err := b.guest.Attest(ctx, attestReq(t, simProvider{measurement: bytes.Repeat([]byte{0xcd}, 48)}, s, s.rd))
			return err
		}, "fail measurement"},
		{"debug guest", brokerOpts{}, func(t *testing.T, b *broker) error {
			s := newSession(t, b.challenge(t))
			_, err := b.guest.Attest(ctx, attestReq(t, simProvider{measurement: goodMeasurement, debug: true}, s, s.rd))
			return err
		}, "fail debug"},
		{"TCB below minimum", brokerOpts{}, func(t *testing.T, b *broker) error {
			req := []byte(`{"tee":"sim","min_tcb":{"Milan":{"raw":"0","bootloader":0,"tee":0,"snp":23,"microcode":0}}}`)
			if _, err := b.admin.SetRequirements(ctx, &kbsv1.SetRequirementsRequest{RequirementsJson: req}); err != nil {
				t.Fatalf("SetRequirements: %v", err)
			}
			s := newSession(t, b.challenge(t))
			_, err := b.guest.Attest(ctx, attestReq(t, good, s, s.rd))
			return err
		}, "fail min_tcb"},
		{"sim evidence without a sim root", brokerOpts{noSim: true}, func(t *testing.T, b *broker) error {
			s := newSession(t, b.challenge(t))
			_, err := b.guest.Attest(ctx, attestReq(t, good, s, s.rd))
			return err
		}, "no simulated-TEE root"},
		{"unknown resource", brokerOpts{}, func(t *testing.T, b *broker) error {
			s := newSession(t, b.challenge(t))
			att, err := b.guest.Attest(ctx, attestReq(t, good, s, s.rd))
			if err != nil {
				t.Fatalf("Attest: %v", err)
			}
			_, err = b.guest.GetResource(ctx, &kbsv1.GetResourceRequest{Token: att.GetToken(), Name: "repo/key/nope"})
			return err
		}, "unknown resource"},
		{"token with a swapped TEE key", brokerOpts{}, func(t *testing.T, b *broker) error {
			s := newSession(t, b.challenge(t))
			att, err := b.guest.Attest(ctx, attestReq(t, good, s, s.rd))
			if err != nil {
				t.Fatalf("Attest: %v", err)
			}
			forged := swapTokenKey(t, att.GetToken())
			_, err = b.guest.GetResource(ctx, &kbsv1.GetResourceRequest{Token: forged, Name: "repo/key/disk"})
			return err
		}, "token: invalid"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newBroker(t, tc.opts)
			b.setup(t, []byte("secret"))
			wantDenied(t, tc.attack(t, b), b, tc.reason)
		})
	}
}

// swapTokenKey replaces the TEE public key inside a token's payload (the
// EAR key-attestation akpub) with an attacker's key, keeping the broker's
// signature: what a thief would need to have a release sealed to itself.
func swapTokenKey(t *testing.T, tok string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(payload, &m); err != nil {
		t.Fatal(err)
	}
	submods, _ := m["submods"].(map[string]any)
	cpu, _ := submods["cpu"].(map[string]any)
	ka, _ := cpu["ear.veraison.key-attestation"].(map[string]any)
	old, ok := ka["akpub"].(string)
	if !ok {
		t.Fatalf("token payload has no submods.cpu key-attestation akpub: %s", payload)
	}
	attacker, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	spki, err := x509.MarshalPKIXPublicKey(&attacker.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	ka["akpub"] = base64.RawURLEncoding.EncodeToString(spki)
	if ka["akpub"] == old {
		t.Fatal("attacker key equals the guest's")
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	parts[1] = base64.RawURLEncoding.EncodeToString(b)
	return strings.Join(parts, ".")
}

// TestStolenTokenUseless: a token replayed by someone else yields only a
// resource sealed to the original guest's key.
func TestStolenTokenUseless(t *testing.T) {
	b := newBroker(t, brokerOpts{})
	b.setup(t, []byte("secret"))
	ctx := context.Background()
	s := newSession(t, b.challenge(t))
	att, err := b.guest.Attest(ctx, attestReq(t, simProvider{measurement: goodMeasurement}, s, s.rd))
	if err != nil {
		t.Fatal(err)
	}
	res, err := b.guest.GetResource(ctx, &kbsv1.GetResourceRequest{Token: att.GetToken(), Name: "repo/key/disk"})
	if err != nil {
		t.Fatal(err)
	}
	thief, _ := ecdh.P256().GenerateKey(rand.Reader)
	suite := seal.Suite{KEM: uint16(res.GetKemId()), KDF: uint16(res.GetKdfId()), AEAD: uint16(res.GetAeadId())}
	if _, err := seal.Open(thief, suite, res.GetInfo(), res.GetCiphertext()); err == nil {
		t.Error("a thief's key opened a resource sealed to the guest's key")
	}
	if got, err := seal.Open(s.priv, suite, res.GetInfo(), res.GetCiphertext()); err != nil || string(got) != "secret" {
		t.Errorf("the guest's own key: %q, %v", got, err)
	}
}

func TestAdminAuthorization(t *testing.T) {
	b := newBroker(t, brokerOpts{})
	ctx := context.Background()
	put := &kbsv1.PutResourceRequest{Name: "repo/key/x", Data: []byte("x")}
	if _, err := b.noCert.PutResource(ctx, put); status.Code(err) != codes.Unauthenticated {
		t.Errorf("PutResource without a client certificate: %v, want Unauthenticated", err)
	}
	if _, err := b.auditor.PutResource(ctx, put); status.Code(err) != codes.PermissionDenied {
		t.Errorf("PutResource with an auditor certificate: %v, want PermissionDenied", err)
	}
	if _, err := b.auditor.ListResources(ctx, &kbsv1.ListResourcesRequest{}); err != nil {
		t.Errorf("ListResources as auditor: %v, want allowed", err)
	}
	if _, err := b.admin.PutResource(ctx, put); err != nil {
		t.Errorf("PutResource as admin: %v", err)
	}
	if _, err := b.noCert.ListResources(ctx, &kbsv1.ListResourcesRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("ListResources without a certificate: %v, want Unauthenticated", err)
	}
}

func TestOversizedMessage(t *testing.T) {
	b := newBroker(t, brokerOpts{})
	big := &kbsv1.AttestRequest{RuntimeData: make([]byte, maxMsg+1)}
	if _, err := b.guest.Attest(context.Background(), big); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("oversized Attest: %v, want ResourceExhausted", err)
	}
}

func TestEvaluateAndAudit(t *testing.T) {
	b := newBroker(t, brokerOpts{})
	b.setup(t, []byte("secret"))
	ctx := context.Background()
	if _, err := b.admin.SetPolicy(ctx, &kbsv1.SetPolicyRequest{Resource: "repo/key/disk", Expression: `claims.host_data == "` + strings.Repeat("00", 32) + `"`}); err != nil {
		t.Fatalf("SetPolicy: %v", err)
	}
	if _, err := b.admin.SetPolicy(ctx, &kbsv1.SetPolicyRequest{Resource: "repo/key/disk", Expression: `claims.tee ==`}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("SetPolicy with a broken rule: %v, want InvalidArgument", err)
	}
	claims := attestation.Claims{TEE: attestation.TEESim, Product: "Milan", Measurement: goodMeasurement, ReportData: make([]byte, 64), HostData: make([]byte, 32)}
	cj, _ := json.Marshal(claims)
	res, err := b.admin.EvaluatePolicy(ctx, &kbsv1.EvaluatePolicyRequest{Resource: "repo/key/disk", ClaimsJson: cj})
	if err != nil {
		t.Fatalf("EvaluatePolicy: %v", err)
	}
	if !res.GetRelease() || res.GetPolicyVersion() != 1 || len(res.GetReasons()) == 0 {
		t.Errorf("EvaluatePolicy = %v, want release by policy version 1 with reasons", res)
	}
	claims.Debug = true
	cj, _ = json.Marshal(claims)
	res, err = b.admin.EvaluatePolicy(ctx, &kbsv1.EvaluatePolicyRequest{Resource: "repo/key/disk", ClaimsJson: cj})
	if err != nil || res.GetRelease() || res.GetStatus() != "contraindicated" {
		t.Errorf("EvaluatePolicy(debug) = %v, %v; want no release, contraindicated", res, err)
	}
	v, err := b.audit.Verify(ctx, &kbsv1.VerifyRequest{})
	if err != nil || v.GetRecords() < 3 {
		t.Errorf("audit Verify = %v, %v; want a valid chain of the admin changes", v, err)
	}
	q, err := b.audit.Query(ctx, &kbsv1.QueryRequest{Last: 2})
	if err != nil || len(q.GetRecords()) != 2 {
		t.Errorf("audit Query(last 2) = %v, %v", q, err)
	}
	// Stream: the existing records in order, then new ones as they happen.
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	stream, err := b.audit.Stream(sctx, &kbsv1.StreamRequest{FromSeq: 1})
	if err != nil {
		t.Fatal(err)
	}
	for want := uint64(1); want <= v.GetRecords(); want++ {
		r, err := stream.Recv()
		if err != nil || r.GetSeq() != want {
			t.Fatalf("stream record %d: seq %d, %v", want, r.GetSeq(), err)
		}
	}
	if _, err := b.admin.PutResource(ctx, &kbsv1.PutResourceRequest{Name: "repo/key/later", Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	r, err := stream.Recv()
	if err != nil || r.GetSeq() != v.GetRecords()+1 || r.GetAction() != "resource.put repo/key/later" {
		t.Errorf("streamed new record = %v, %v; want the put as seq %d", r, err, v.GetRecords()+1)
	}
}

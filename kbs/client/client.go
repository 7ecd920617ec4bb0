// Package client is the guest side of the key broker protocol: fetch a
// resource by proving, with hardware evidence, what the guest runs. It is
// the code `cvm kbs fetch` uses and the guest agent will link, so it
// depends only on the protocol pieces (runtimedata, seal, the wire
// messages) and never on the broker or the verifiers.
//
// One Fetch is: GetChallenge → a fresh ephemeral P-256 key → runtime data
// {nonce, tee-pubkey} → REPORT_DATA = its RFC 8785 SHA-384 digest →
// evidence from the Provider → Attest → token → GetResource → HPKE open
// with the ephemeral key. The ephemeral private key never leaves memory.
package client

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"errors"
	"fmt"
	"io"

	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/attestation/runtimedata"
	"github.com/greatjail/cvm/kbs/seal"
	kbsv1 "github.com/greatjail/cvm/proto/cvm/kbs/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Provider produces evidence binding reportData: the platform's report
// device (configfs-tsm, /dev/sev-guest, /dev/tdx_guest) or the simulated
// TEE. It is chosen by the measured launch configuration, never by the
// host at run time.
type Provider interface {
	TEE() attestation.TEE
	Evidence(ctx context.Context, reportData [64]byte) (*attestation.Evidence, error)
}

// ErrDenied means the broker refused: the evidence did not satisfy its
// policy, or the resource is not released to this guest. The broker does
// not say why; its operator can read the reason in the audit log.
var ErrDenied = errors.New("kbs client: denied by the key broker")

// Client fetches resources from one broker.
type Client struct {
	// Conn is a connection to the broker (TLS with the broker's CA pinned).
	Conn grpc.ClientConnInterface
	// Provider supplies the evidence.
	Provider Provider
	// Rand is the randomness for the ephemeral key.
	Rand io.Reader
}

// Fetch attests and returns the plaintext of resource name.
func (c *Client) Fetch(ctx context.Context, name string) ([]byte, error) {
	if c.Conn == nil || c.Provider == nil || c.Rand == nil {
		return nil, errors.New("kbs client: Conn, Provider and Rand are required")
	}
	broker := kbsv1.NewBrokerClient(c.Conn)
	tee, err := attestation.TEEToProto(c.Provider.TEE())
	if err != nil {
		return nil, fmt.Errorf("kbs client: %w", err)
	}
	ch, err := broker.GetChallenge(ctx, &kbsv1.GetChallengeRequest{Tee: tee})
	if err != nil {
		return nil, rpcError("challenge", err)
	}
	priv, err := ecdh.P256().GenerateKey(c.Rand)
	if err != nil {
		return nil, fmt.Errorf("kbs client: ephemeral key: %w", err)
	}
	jwk, err := runtimedata.JWKFromPublicKey(priv.PublicKey())
	if err != nil {
		return nil, fmt.Errorf("kbs client: %w", err)
	}
	jwk.Alg = "ECDH-ES+A256KW" // Trustee requires alg; HPKE does not use it
	raw, err := runtimedata.RuntimeData{Nonce: ch.GetNonce(), TEEPubKey: jwk}.Marshal()
	if err != nil {
		return nil, fmt.Errorf("kbs client: runtime data: %w", err)
	}
	digest, err := runtimedata.Digest(raw)
	if err != nil {
		return nil, fmt.Errorf("kbs client: runtime data: %w", err)
	}
	evidence, err := c.Provider.Evidence(ctx, digest)
	if err != nil {
		return nil, fmt.Errorf("kbs client: evidence from %s: %w", c.Provider.TEE(), err)
	}
	wire, err := attestation.EvidenceToProto(evidence)
	if err != nil {
		return nil, fmt.Errorf("kbs client: %w", err)
	}
	att, err := broker.Attest(ctx, &kbsv1.AttestRequest{Evidence: wire, RuntimeData: raw})
	if err != nil {
		return nil, rpcError("attest", err)
	}
	res, err := broker.GetResource(ctx, &kbsv1.GetResourceRequest{Token: att.GetToken(), Name: name})
	if err != nil {
		return nil, rpcError("resource "+name, err)
	}
	// The info string binds name and version; refuse a release of
	// something other than what was asked for.
	if want := seal.Info(name, int(res.GetVersion())); !bytes.Equal(res.GetInfo(), want) {
		return nil, fmt.Errorf("kbs client: the broker released %q, not %q", res.GetInfo(), want)
	}
	suite := seal.Suite{KEM: uint16(res.GetKemId()), KDF: uint16(res.GetKdfId()), AEAD: uint16(res.GetAeadId())}
	plain, err := seal.Open(priv, suite, res.GetInfo(), res.GetCiphertext())
	if err != nil {
		return nil, fmt.Errorf("kbs client: opening the released resource: %w", err)
	}
	return plain, nil
}

// rpcError maps a broker status to ErrDenied or a descriptive error.
func rpcError(step string, err error) error {
	switch status.Code(err) {
	case codes.PermissionDenied:
		return fmt.Errorf("%w (at %s)", ErrDenied, step)
	case codes.ResourceExhausted:
		return fmt.Errorf("kbs client: %s: the broker is rate-limiting this host; retry later", step)
	case codes.Unavailable:
		return fmt.Errorf("kbs client: %s: broker unreachable: %w", step, err)
	}
	return fmt.Errorf("kbs client: %s: %w", step, err)
}

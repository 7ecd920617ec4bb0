// Package kbs is the cvm key broker: a gRPC service that verifies a guest's
// hardware evidence, appraises it against the operator's reference values
// and release rules, and releases resources (disk and image keys) sealed
// with HPKE to the guest's attested ephemeral key. It also serves the
// operator's admin and audit APIs.
//
// The guest protocol (docs/protocol-kbs.md): GetChallenge returns a signed,
// stateless nonce; Attest takes evidence whose REPORT_DATA binds that nonce
// and the guest's public key (attestation/runtimedata) and returns a
// short-lived EAR token; GetResource takes the token and returns the
// resource sealed to the token's key, if the resource's rule allows it.
//
// Every denial a guest sees is the same generic PERMISSION_DENIED; the
// reasons go to the audit log and the operator's logs. Errors become gRPC
// status codes only in this package's RPC handlers.
package kbs

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/kbs/audit"
	"github.com/greatjail/cvm/kbs/challenge"
	"github.com/greatjail/cvm/kbs/resources"
	"github.com/greatjail/cvm/kbs/store"
	"github.com/greatjail/cvm/kbs/token"
	kbsv1 "github.com/greatjail/cvm/proto/cvm/kbs/v1"
	"google.golang.org/grpc"
)

// Options wire a Server. Every field but Logger and Metrics is required.
type Options struct {
	// Verifiers check evidence by TEE. A TEE without a verifier is denied
	// (for example sim, when no sim root is configured).
	Verifiers map[attestation.TEE]attestation.Verifier
	// Store holds policies, reference values, nonces and the audit log.
	Store store.Store
	// Resources holds the (encrypted at rest) resources.
	Resources *resources.Store
	// Audit is the append-only audit log.
	Audit *audit.Log
	// Challenges issues and checks stateless nonces; Nonces remembers the
	// ones used until they expire.
	Challenges *challenge.Issuer
	Nonces     *challenge.UsedNonces
	// Tokens signs attestation tokens; TokenVerifier checks them.
	Tokens        *token.Signer
	TokenVerifier *token.Verifier
	// Now is the clock.
	Now func() time.Time
	// Logger receives operator-facing detail (denial reasons). Nil
	// discards.
	Logger *slog.Logger
	// Metrics, if set, records attestation and release counters.
	Metrics *Metrics
	// ChallengeLimit limits GetChallenge per peer; nil means no limit.
	ChallengeLimit *PeerLimiter
}

// Server implements the Broker, Admin and Audit services.
type Server struct {
	kbsv1.UnimplementedBrokerServer
	opts Options
	log  *slog.Logger
}

// New checks opts and returns a Server.
func New(opts Options) (*Server, error) {
	var missing []string
	if opts.Store == nil {
		missing = append(missing, "Store")
	}
	if opts.Resources == nil {
		missing = append(missing, "Resources")
	}
	if opts.Audit == nil {
		missing = append(missing, "Audit")
	}
	if opts.Challenges == nil || opts.Nonces == nil {
		missing = append(missing, "Challenges/Nonces")
	}
	if opts.Tokens == nil || opts.TokenVerifier == nil {
		missing = append(missing, "Tokens/TokenVerifier")
	}
	if opts.Now == nil {
		missing = append(missing, "Now")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("kbs: options missing: %v", missing)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{opts: opts, log: log}, nil
}

// Register adds the Broker, Admin and Audit services to g.
func (s *Server) Register(g *grpc.Server) {
	kbsv1.RegisterBrokerServer(g, s)
	kbsv1.RegisterAdminServer(g, &adminServer{s: s})
	kbsv1.RegisterAuditServer(g, &auditServer{s: s})
}

// deny records a denial with its reasons in the audit log and the
// operator's log; the guest learns only statusDenied.
func (s *Server) deny(ctx context.Context, rec audit.Record, reasons ...string) {
	rec.Outcome = "denied"
	rec.Reasons = append(rec.Reasons, reasons...)
	if rec.Kind == "" {
		rec.Kind = "deny"
	}
	if _, err := s.opts.Audit.Append(ctx, rec); err != nil {
		s.log.ErrorContext(ctx, "audit append failed", "err", err)
	}
	s.log.InfoContext(ctx, "denied", "action", rec.Action, "actor", rec.Actor, "reasons", rec.Reasons)
}

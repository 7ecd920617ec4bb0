package kbs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/attestation/runtimedata"
	"github.com/greatjail/cvm/kbs/audit"
	"github.com/greatjail/cvm/kbs/resources"
	"github.com/greatjail/cvm/kbs/seal"
	"github.com/greatjail/cvm/kbs/token"
	"github.com/greatjail/cvm/policy"
	kbsv1 "github.com/greatjail/cvm/proto/cvm/kbs/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// statusDenied is what a guest gets for every denial, whatever the reason.
var statusDenied = status.Error(codes.PermissionDenied, "denied")

func peerName(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return "guest@" + p.Addr.String()
	}
	return "guest"
}

// GetChallenge implements kbsv1.BrokerServer.
func (s *Server) GetChallenge(ctx context.Context, req *kbsv1.GetChallengeRequest) (*kbsv1.GetChallengeResponse, error) {
	tee, err := attestation.TEEFromProto(req.GetTee())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, "unknown tee")
	}
	if l := s.opts.ChallengeLimit; l != nil && !l.Allow(peerKey(ctx), s.opts.Now()) {
		s.opts.Metrics.denied("rate limit")
		return nil, status.Error(codes.ResourceExhausted, "too many challenges; retry later")
	}
	c, err := s.opts.Challenges.Issue(tee)
	if err != nil {
		s.log.ErrorContext(ctx, "issuing challenge", "err", err)
		return nil, status.Error(codes.Internal, "internal error")
	}
	return &kbsv1.GetChallengeResponse{Nonce: c.Nonce, Expires: timestamppb.New(c.Expires)}, nil
}

// Attest implements kbsv1.BrokerServer.
func (s *Server) Attest(ctx context.Context, req *kbsv1.AttestRequest) (*kbsv1.AttestResponse, error) {
	start := s.opts.Now()
	rec := audit.Record{Kind: "attest", Actor: peerName(ctx), Action: "attest"}
	res, err := s.attest(ctx, req, &rec)
	s.opts.Metrics.attestation(rec.TEE, rec.Outcome, s.opts.Now().Sub(start))
	if err != nil {
		var d *denial
		if errors.As(err, &d) {
			rec.Kind = "deny"
			s.opts.Metrics.denied(d.metric)
			s.deny(ctx, rec, d.reason)
			return nil, statusDenied
		}
		s.log.ErrorContext(ctx, "attest failed", "err", err)
		return nil, status.Error(codes.Internal, "internal error")
	}
	return res, nil
}

// denial is a reason to deny, for the audit log and metrics only.
type denial struct {
	metric string // low-cardinality label
	reason string // detail for the operator
}

func (d *denial) Error() string { return d.reason }

func deniedf(metric, format string, args ...any) error {
	return &denial{metric: metric, reason: fmt.Sprintf(format, args...)}
}

func (s *Server) attest(ctx context.Context, req *kbsv1.AttestRequest, rec *audit.Record) (*kbsv1.AttestResponse, error) {
	now := s.opts.Now()
	ev, err := attestation.EvidenceFromProto(req.GetEvidence())
	if err != nil {
		return nil, deniedf("malformed evidence", "evidence: %v", err)
	}
	rec.TEE = string(ev.TEE)
	rd, err := runtimedata.Parse(req.GetRuntimeData())
	if err != nil {
		return nil, deniedf("runtime data", "runtime data: %v", err)
	}
	expires, err := s.opts.Challenges.Check(rd.Nonce, ev.TEE)
	if err != nil {
		return nil, deniedf("challenge", "challenge: %v", err)
	}
	v, ok := s.opts.Verifiers[ev.TEE]
	if !ok {
		if ev.TEE == attestation.TEESim {
			return nil, deniedf("tee not accepted", "sim evidence, but no simulated-TEE root is configured (sim_root in kbs.yaml)")
		}
		return nil, deniedf("tee not accepted", "no verifier configured for tee %s", ev.TEE)
	}
	claims, err := v.Verify(ctx, ev)
	if err != nil {
		return nil, deniedf("evidence", "evidence: %v", err)
	}
	rec.ClaimsDigest = claimsDigest(claims)
	if err := runtimedata.Check(req.GetRuntimeData(), claims.ReportData); err != nil {
		return nil, deniedf("binding", "REPORT_DATA does not bind this nonce and TEE public key: %v", err)
	}
	if err := s.opts.Nonces.Consume(ctx, rd.Nonce, expires); err != nil {
		return nil, deniedf("replay", "nonce: %v", err)
	}
	ref, err := s.reference(ctx)
	if err != nil {
		return nil, err
	}
	ap := policy.Appraise(claims, ref, now)
	rec.Reasons = reasonStrings(ap.Reasons, false)
	if ap.Status == policy.StatusContraindicated {
		return nil, deniedf("appraisal", "appraisal contraindicated")
	}
	tok, err := s.opts.Tokens.Sign(token.Token{
		Status:    string(ap.Status),
		TEE:       claims.TEE,
		Claims:    claims,
		TEEPubKey: rd.TEEPubKey,
	})
	if err != nil {
		return nil, fmt.Errorf("signing token: %w", err)
	}
	t, err := s.opts.TokenVerifier.Verify(tok)
	if err != nil {
		return nil, fmt.Errorf("verifying own token: %w", err)
	}
	rec.Outcome = "ok"
	rec.Details = map[string]string{"status": string(ap.Status), "token": t.ID}
	if _, err := s.opts.Audit.Append(ctx, *rec); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	return &kbsv1.AttestResponse{Token: tok, Expires: timestamppb.New(t.Expires), Status: string(ap.Status)}, nil
}

// GetResource implements kbsv1.BrokerServer.
func (s *Server) GetResource(ctx context.Context, req *kbsv1.GetResourceRequest) (*kbsv1.GetResourceResponse, error) {
	rec := audit.Record{Kind: "release", Actor: peerName(ctx), Action: "resource.get " + req.GetName()}
	res, err := s.release(ctx, req, &rec)
	if err != nil {
		var d *denial
		if errors.As(err, &d) {
			rec.Kind = "deny"
			s.opts.Metrics.denied(d.metric)
			s.deny(ctx, rec, d.reason)
			return nil, statusDenied
		}
		s.log.ErrorContext(ctx, "release failed", "err", err)
		return nil, status.Error(codes.Internal, "internal error")
	}
	s.opts.Metrics.released()
	return res, nil
}

func (s *Server) release(ctx context.Context, req *kbsv1.GetResourceRequest, rec *audit.Record) (*kbsv1.GetResourceResponse, error) {
	now := s.opts.Now()
	t, err := s.opts.TokenVerifier.Verify(req.GetToken())
	if err != nil {
		return nil, deniedf("token", "token: %v", err)
	}
	if t.Claims == nil {
		return nil, deniedf("token", "token carries no claims")
	}
	rec.TEE = string(t.TEE)
	rec.ClaimsDigest = claimsDigest(t.Claims)
	if err := resources.ValidName(req.GetName()); err != nil {
		return nil, deniedf("unknown resource", "resource name: %v", err)
	}
	data, meta, err := s.opts.Resources.Get(ctx, req.GetName(), 0)
	if errors.Is(err, resources.ErrNotFound) {
		return nil, deniedf("unknown resource", "unknown resource %q", req.GetName())
	}
	if err != nil {
		return nil, fmt.Errorf("reading resource: %w", err)
	}
	ref, err := s.reference(ctx)
	if err != nil {
		return nil, err
	}
	rule, version, err := s.rule(ctx, req.GetName())
	if err != nil {
		// A stored rule that cannot be loaded or compiled denies; it never
		// falls back to the default.
		return nil, deniedf("policy", "%v", err)
	}
	rec.PolicyVersion = version
	d := policy.Decide(t.Claims, ref, rule, now)
	rec.Reasons = reasonStrings(d.Reasons, true)
	if !d.Release {
		return nil, deniedf("policy", "policy denied release (rule %s)", d.Rule)
	}
	info := seal.Info(req.GetName(), meta.Version)
	ct, suite, err := seal.Seal(t.TEEPubKey, info, data)
	if err != nil {
		return nil, deniedf("tee key", "sealing to the token's TEE key: %v", err)
	}
	rec.Outcome = "ok"
	rec.Details = map[string]string{"version": strconv.Itoa(meta.Version), "token": t.ID, "rule": d.Rule}
	if _, err := s.opts.Audit.Append(ctx, *rec); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	return &kbsv1.GetResourceResponse{
		Ciphertext: ct,
		KemId:      uint32(suite.KEM),
		KdfId:      uint32(suite.KDF),
		AeadId:     uint32(suite.AEAD),
		Info:       info,
		Version:    uint64(meta.Version),
	}, nil
}

// claimsDigest is the hex SHA-256 of the claims' JSON, recorded in the
// audit log so a decision can be tied to the exact claims.
func claimsDigest(c *attestation.Claims) string {
	b, err := json.Marshal(c)
	if err != nil {
		return ""
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// reasonStrings renders reasons for the audit log; with all, passing ones
// are included too.
func reasonStrings(rs []policy.Reason, all bool) []string {
	var out []string
	for _, r := range rs {
		if !all && (r.Outcome == "pass" || r.Outcome == "skip") {
			continue
		}
		out = append(out, r.Outcome+" "+r.Rule+": "+r.Detail)
	}
	return out
}

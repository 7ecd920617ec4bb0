package kbs

import (
	"github.com/greatjail/cvm/kbs/audit"
	kbsv1 "github.com/greatjail/cvm/proto/cvm/kbs/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"context"
	"errors"
)

// maxQuery bounds one audit query.
const maxQuery = 10000

type auditServer struct {
	kbsv1.UnimplementedAuditServer
	s *Server
}

func recordProto(r audit.Record) *kbsv1.AuditRecord {
	return &kbsv1.AuditRecord{
		Seq: r.Seq, Time: timestamppb.New(r.Time), Kind: r.Kind, Actor: r.Actor, Action: r.Action,
		Outcome: r.Outcome, Tee: r.TEE, PolicyVersion: r.PolicyVersion, ClaimsDigest: r.ClaimsDigest,
		Reasons: r.Reasons, Details: r.Details, Prev: r.Prev, Hash: r.Hash,
	}
}

func (a *auditServer) Query(ctx context.Context, req *kbsv1.QueryRequest) (*kbsv1.QueryResponse, error) {
	if _, err := authorize(ctx, false); err != nil {
		return nil, err
	}
	var recs []audit.Record
	var err error
	switch {
	case req.GetLast() > 0 && req.GetFromSeq() == 0:
		recs, err = a.s.opts.Audit.Tail(ctx, int(min(req.GetLast(), maxQuery)))
	default:
		limit := int(req.GetLimit())
		if limit <= 0 || limit > maxQuery {
			limit = maxQuery
		}
		recs, err = a.s.opts.Audit.Range(ctx, max(req.GetFromSeq(), 1), limit)
	}
	if err != nil {
		return nil, a.s.internal(ctx, "audit query", err)
	}
	out := &kbsv1.QueryResponse{}
	for _, r := range recs {
		out.Records = append(out.Records, recordProto(r))
	}
	return out, nil
}

func (a *auditServer) Stream(req *kbsv1.StreamRequest, stream grpc.ServerStreamingServer[kbsv1.AuditRecord]) error {
	ctx := stream.Context()
	if _, err := authorize(ctx, false); err != nil {
		return err
	}
	ch, err := a.s.opts.Audit.Subscribe(ctx, max(req.GetFromSeq(), 1))
	if err != nil {
		return a.s.internal(ctx, "audit stream", err)
	}
	for r := range ch {
		if err := stream.Send(recordProto(r)); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return status.FromContextError(ctx.Err()).Err()
	}
	return status.Error(codes.Unavailable, "audit stream ended (consumer too slow); resume from the last sequence number received")
}

func (a *auditServer) Verify(ctx context.Context, _ *kbsv1.VerifyRequest) (*kbsv1.VerifyResponse, error) {
	if _, err := authorize(ctx, false); err != nil {
		return nil, err
	}
	res, err := a.s.opts.Audit.Verify(ctx)
	if err != nil {
		var ve *audit.VerifyError
		if errors.As(err, &ve) {
			return nil, status.Errorf(codes.DataLoss, "audit log tampered: %v", err)
		}
		return nil, a.s.internal(ctx, "audit verify", err)
	}
	return &kbsv1.VerifyResponse{Records: res.Records, Head: res.Head}, nil
}

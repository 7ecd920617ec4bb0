package kbs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/kbs/audit"
	"github.com/greatjail/cvm/kbs/pki"
	"github.com/greatjail/cvm/kbs/resources"
	"github.com/greatjail/cvm/kbs/store"
	"github.com/greatjail/cvm/policy"
	kbsv1 "github.com/greatjail/cvm/proto/cvm/kbs/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// maxResourceSize bounds a resource; larger puts are rejected.
const maxResourceSize = 1 << 20

// caller is an authenticated admin-API client.
type caller struct {
	name string
	role pki.Role
}

// authorize returns the caller if its client certificate (verified by the
// TLS handshake against the broker's CA) carries a role allowed here.
// write needs admin; reads accept admin or auditor.
func authorize(ctx context.Context, write bool) (*caller, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "admin API needs a client certificate")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return nil, status.Error(codes.Unauthenticated, "admin API needs a client certificate issued by this broker's CA")
	}
	cert := ti.State.VerifiedChains[0][0]
	role, err := pki.RoleOf(cert)
	if err != nil {
		return nil, status.Error(codes.PermissionDenied, "client certificate has no valid role")
	}
	if write && role != pki.RoleAdmin {
		return nil, status.Errorf(codes.PermissionDenied, "role %s may not change the broker; admin role needed", role)
	}
	return &caller{name: cert.Subject.CommonName + " (" + string(role) + ")", role: role}, nil
}

type adminServer struct {
	kbsv1.UnimplementedAdminServer
	s *Server
}

// record appends an admin audit record inside tx, so the change and its
// record commit together.
func (a *adminServer) record(tx store.Tx, c *caller, action string, details map[string]string) error {
	_, err := audit.AppendTx(tx, a.s.opts.Now(), audit.Record{Kind: "admin", Actor: c.name, Action: action, Outcome: "ok", Details: details})
	return err
}

func (a *adminServer) PutResource(ctx context.Context, req *kbsv1.PutResourceRequest) (*kbsv1.ResourceMeta, error) {
	c, err := authorize(ctx, true)
	if err != nil {
		return nil, err
	}
	if err := resources.ValidName(req.GetName()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if len(req.GetData()) > maxResourceSize {
		return nil, status.Errorf(codes.InvalidArgument, "resource is %d bytes; the limit is %d", len(req.GetData()), maxResourceSize)
	}
	var meta resources.Meta
	err = a.s.opts.Store.Update(ctx, func(tx store.Tx) error {
		var err error
		if meta, err = a.s.opts.Resources.PutTx(tx, req.GetName(), req.GetData()); err != nil {
			return err
		}
		return a.record(tx, c, "resource.put "+req.GetName(), map[string]string{"version": strconv.Itoa(meta.Version), "size": strconv.Itoa(meta.Size)})
	})
	if err != nil {
		return nil, a.s.internal(ctx, "put resource", err)
	}
	a.s.opts.Audit.Notify()
	return metaProto(meta), nil
}

func (a *adminServer) GetResourceMeta(ctx context.Context, req *kbsv1.GetResourceMetaRequest) (*kbsv1.ResourceMeta, error) {
	if _, err := authorize(ctx, false); err != nil {
		return nil, err
	}
	list, err := a.s.opts.Resources.List(ctx)
	if err != nil {
		return nil, a.s.internal(ctx, "list resources", err)
	}
	for _, m := range list {
		if m.Name == req.GetName() {
			return metaProto(m), nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "no resource %q", req.GetName())
}

func (a *adminServer) ListResources(ctx context.Context, _ *kbsv1.ListResourcesRequest) (*kbsv1.ListResourcesResponse, error) {
	if _, err := authorize(ctx, false); err != nil {
		return nil, err
	}
	list, err := a.s.opts.Resources.List(ctx)
	if err != nil {
		return nil, a.s.internal(ctx, "list resources", err)
	}
	out := &kbsv1.ListResourcesResponse{}
	for _, m := range list {
		out.Resources = append(out.Resources, metaProto(m))
	}
	return out, nil
}

func (a *adminServer) DeleteResource(ctx context.Context, req *kbsv1.DeleteResourceRequest) (*kbsv1.DeleteResourceResponse, error) {
	c, err := authorize(ctx, true)
	if err != nil {
		return nil, err
	}
	err = a.s.opts.Store.Update(ctx, func(tx store.Tx) error {
		if err := a.s.opts.Resources.DeleteTx(tx, req.GetName()); err != nil {
			return err
		}
		return a.record(tx, c, "resource.delete "+req.GetName(), nil)
	})
	if errors.Is(err, resources.ErrNotFound) {
		return nil, status.Errorf(codes.NotFound, "no resource %q", req.GetName())
	}
	if err != nil {
		return nil, a.s.internal(ctx, "delete resource", err)
	}
	a.s.opts.Audit.Notify()
	return &kbsv1.DeleteResourceResponse{}, nil
}

func metaProto(m resources.Meta) *kbsv1.ResourceMeta {
	return &kbsv1.ResourceMeta{Name: m.Name, Version: uint64(m.Version), Size: uint64(m.Size), Created: timestamppb.New(m.Created)}
}

func (a *adminServer) SetPolicy(ctx context.Context, req *kbsv1.SetPolicyRequest) (*kbsv1.Policy, error) {
	c, err := authorize(ctx, true)
	if err != nil {
		return nil, err
	}
	if err := resources.ValidName(req.GetResource()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if _, err := policy.Compile(policy.Rule{Name: req.GetResource(), Expression: req.GetExpression()}); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	p := storedPolicy{Expression: req.GetExpression(), Updated: a.s.opts.Now().UTC()}
	err = a.s.opts.Store.Update(ctx, func(tx store.Tx) error {
		if b, err := tx.Get(bucketPolicies, req.GetResource()); err == nil {
			var old storedPolicy
			if err := json.Unmarshal(b, &old); err != nil {
				return err
			}
			p.Version = old.Version
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		p.Version++
		b, err := json.Marshal(p)
		if err != nil {
			return err
		}
		if err := tx.Put(bucketPolicies, req.GetResource(), b); err != nil {
			return err
		}
		return a.record(tx, c, "policy.set "+req.GetResource(), map[string]string{"version": strconv.FormatUint(p.Version, 10), "expression": req.GetExpression()})
	})
	if err != nil {
		return nil, a.s.internal(ctx, "set policy", err)
	}
	a.s.opts.Audit.Notify()
	return policyProto(req.GetResource(), p), nil
}

func policyProto(resource string, p storedPolicy) *kbsv1.Policy {
	return &kbsv1.Policy{Resource: resource, Expression: p.Expression, Version: p.Version, Updated: timestamppb.New(p.Updated)}
}

func (a *adminServer) GetPolicy(ctx context.Context, req *kbsv1.GetPolicyRequest) (*kbsv1.Policy, error) {
	if _, err := authorize(ctx, false); err != nil {
		return nil, err
	}
	p, err := a.s.policy(ctx, req.GetResource())
	if errors.Is(err, store.ErrNotFound) {
		return nil, status.Errorf(codes.NotFound, "no policy for %q: the default applies (release only on an affirming appraisal)", req.GetResource())
	}
	if err != nil {
		return nil, a.s.internal(ctx, "get policy", err)
	}
	return policyProto(req.GetResource(), *p), nil
}

func (a *adminServer) ListPolicies(ctx context.Context, _ *kbsv1.ListPoliciesRequest) (*kbsv1.ListPoliciesResponse, error) {
	if _, err := authorize(ctx, false); err != nil {
		return nil, err
	}
	out := &kbsv1.ListPoliciesResponse{}
	err := a.s.opts.Store.View(ctx, func(tx store.Tx) error {
		return tx.Scan(bucketPolicies, "", func(k string, v []byte) error {
			var p storedPolicy
			if err := json.Unmarshal(v, &p); err != nil {
				return err
			}
			out.Policies = append(out.Policies, policyProto(k, p))
			return nil
		})
	})
	if err != nil {
		return nil, a.s.internal(ctx, "list policies", err)
	}
	return out, nil
}

func (a *adminServer) ValidatePolicy(ctx context.Context, req *kbsv1.ValidatePolicyRequest) (*kbsv1.ValidatePolicyResponse, error) {
	if _, err := authorize(ctx, false); err != nil {
		return nil, err
	}
	if err := policy.ValidateRule(policy.Rule{Name: "validate", Expression: req.GetExpression()}); err != nil {
		return &kbsv1.ValidatePolicyResponse{Valid: false, Error: err.Error()}, nil
	}
	return &kbsv1.ValidatePolicyResponse{Valid: true}, nil
}

func (a *adminServer) EvaluatePolicy(ctx context.Context, req *kbsv1.EvaluatePolicyRequest) (*kbsv1.EvaluatePolicyResponse, error) {
	if _, err := authorize(ctx, false); err != nil {
		return nil, err
	}
	var claims attestation.Claims
	if err := json.Unmarshal(req.GetClaimsJson(), &claims); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "claims: not a claims JSON document (docs/claims.md): %v", err)
	}
	if _, err := attestation.ParseTEE(string(claims.TEE)); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "claims: %v", err)
	}
	at := a.s.opts.Now()
	if req.GetAt() != nil {
		at = req.GetAt().AsTime()
	}
	ref, err := a.s.reference(ctx)
	if err != nil {
		return nil, a.s.internal(ctx, "reference values", err)
	}
	rule, version, err := a.s.rule(ctx, req.GetResource())
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "%v", err)
	}
	d := policy.Decide(&claims, ref, rule, at)
	out := &kbsv1.EvaluatePolicyResponse{Release: d.Release, Status: string(d.Appraisal.Status), Rule: d.Rule}
	if v, err := strconv.ParseUint(version, 10, 64); err == nil {
		out.PolicyVersion = v
	}
	for _, r := range d.Reasons {
		out.Reasons = append(out.Reasons, &kbsv1.Reason{Rule: r.Rule, Outcome: r.Outcome, Detail: r.Detail})
	}
	return out, nil
}

func (a *adminServer) AddReferenceValue(ctx context.Context, req *kbsv1.AddReferenceValueRequest) (*kbsv1.ReferenceValue, error) {
	c, err := authorize(ctx, true)
	if err != nil {
		return nil, err
	}
	rv, err := refValueFromProto(req.GetValue())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	stored, err := a.addRefValues(ctx, c, []policy.ReferenceValue{rv})
	if err != nil {
		return nil, err
	}
	return refValueProto(stored[0]), nil
}

func (a *adminServer) ImportReferenceValues(ctx context.Context, req *kbsv1.ImportReferenceValuesRequest) (*kbsv1.ImportReferenceValuesResponse, error) {
	c, err := authorize(ctx, true)
	if err != nil {
		return nil, err
	}
	rvs, err := policy.ImportMeasurement(req.GetDocument())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	stored, err := a.addRefValues(ctx, c, rvs)
	if err != nil {
		return nil, err
	}
	out := &kbsv1.ImportReferenceValuesResponse{}
	for _, rv := range stored {
		out.Values = append(out.Values, refValueProto(rv))
	}
	return out, nil
}

// addRefValues validates and stores values with fresh IDs, atomically with
// their audit record.
func (a *adminServer) addRefValues(ctx context.Context, c *caller, rvs []policy.ReferenceValue) ([]policy.ReferenceValue, error) {
	if err := (&policy.Reference{Values: rvs}).Validate(); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	err := a.s.opts.Store.Update(ctx, func(tx store.Tx) error {
		for i := range rvs {
			n, err := tx.NextSequence(bucketRefValues)
			if err != nil {
				return err
			}
			rvs[i].ID = fmt.Sprintf("rv-%d", n)
			b, err := json.Marshal(rvs[i])
			if err != nil {
				return err
			}
			if err := tx.Put(bucketRefValues, fmt.Sprintf("%020d", n), b); err != nil {
				return err
			}
			if err := a.record(tx, c, "refvalue.add "+rvs[i].ID, map[string]string{"tee": string(rvs[i].TEE), "kind": rvs[i].Kind, "value": rvs[i].Value.String()}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, a.s.internal(ctx, "add reference values", err)
	}
	a.s.opts.Audit.Notify()
	return rvs, nil
}

func (a *adminServer) ListReferenceValues(ctx context.Context, _ *kbsv1.ListReferenceValuesRequest) (*kbsv1.ListReferenceValuesResponse, error) {
	if _, err := authorize(ctx, false); err != nil {
		return nil, err
	}
	ref, err := a.s.reference(ctx)
	if err != nil {
		return nil, a.s.internal(ctx, "reference values", err)
	}
	out := &kbsv1.ListReferenceValuesResponse{}
	for _, rv := range ref.Values {
		out.Values = append(out.Values, refValueProto(rv))
	}
	if len(ref.Requirements) > 0 {
		out.RequirementsJson = mustJSON(ref.Requirements)
	}
	return out, nil
}

func (a *adminServer) DeleteReferenceValue(ctx context.Context, req *kbsv1.DeleteReferenceValueRequest) (*kbsv1.DeleteReferenceValueResponse, error) {
	c, err := authorize(ctx, true)
	if err != nil {
		return nil, err
	}
	var n uint64
	if _, err := fmt.Sscanf(req.GetId(), "rv-%d", &n); err != nil || "rv-"+strconv.FormatUint(n, 10) != req.GetId() {
		return nil, status.Errorf(codes.InvalidArgument, "reference value ID %q: want rv-N as 'refvalue list' shows", req.GetId())
	}
	err = a.s.opts.Store.Update(ctx, func(tx store.Tx) error {
		if err := tx.Delete(bucketRefValues, fmt.Sprintf("%020d", n)); err != nil {
			return err
		}
		return a.record(tx, c, "refvalue.delete "+req.GetId(), nil)
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, status.Errorf(codes.NotFound, "no reference value %s", req.GetId())
	}
	if err != nil {
		return nil, a.s.internal(ctx, "delete reference value", err)
	}
	a.s.opts.Audit.Notify()
	return &kbsv1.DeleteReferenceValueResponse{}, nil
}

func (a *adminServer) SetRequirements(ctx context.Context, req *kbsv1.SetRequirementsRequest) (*kbsv1.SetRequirementsResponse, error) {
	c, err := authorize(ctx, true)
	if err != nil {
		return nil, err
	}
	r, err := policy.ParseRequirements(req.GetRequirementsJson())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	err = a.s.opts.Store.Update(ctx, func(tx store.Tx) error {
		if err := tx.Put(bucketRequirements, string(r.TEE), mustJSON(r)); err != nil {
			return err
		}
		return a.record(tx, c, "requirements.set "+string(r.TEE), map[string]string{"requirements": string(mustJSON(r))})
	})
	if err != nil {
		return nil, a.s.internal(ctx, "set requirements", err)
	}
	a.s.opts.Audit.Notify()
	return &kbsv1.SetRequirementsResponse{}, nil
}

func (a *adminServer) GetJWKS(ctx context.Context, _ *kbsv1.GetJWKSRequest) (*kbsv1.GetJWKSResponse, error) {
	if _, err := authorize(ctx, false); err != nil {
		return nil, err
	}
	b, err := a.s.opts.Tokens.JWKS()
	if err != nil {
		return nil, a.s.internal(ctx, "jwks", err)
	}
	return &kbsv1.GetJWKSResponse{Jwks: b}, nil
}

func refValueFromProto(m *kbsv1.ReferenceValue) (policy.ReferenceValue, error) {
	if m == nil {
		return policy.ReferenceValue{}, errors.New("no reference value")
	}
	tee, err := attestation.TEEFromProto(m.GetTee())
	if err != nil {
		return policy.ReferenceValue{}, err
	}
	return policy.ReferenceValue{TEE: tee, Kind: m.GetKind(), Value: m.GetValue(), Note: m.GetNote()}, nil
}

func refValueProto(rv policy.ReferenceValue) *kbsv1.ReferenceValue {
	tee, _ := attestation.TEEToProto(rv.TEE) // stored values were validated; unknown → unspecified
	return &kbsv1.ReferenceValue{Id: rv.ID, Tee: tee, Kind: rv.Kind, Value: rv.Value, Note: rv.Note}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("kbs: marshal %T: %v", v, err))
	}
	return b
}

// internal logs err for the operator and returns a generic status.
func (s *Server) internal(ctx context.Context, what string, err error) error {
	s.log.ErrorContext(ctx, what, "err", err)
	return status.Errorf(codes.Internal, "%s failed", what)
}

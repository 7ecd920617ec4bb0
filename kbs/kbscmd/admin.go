package kbscmd

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/greatjail/cvm/attestation"
	attestationv1 "github.com/greatjail/cvm/proto/cvm/attestation/v1"
	kbsv1 "github.com/greatjail/cvm/proto/cvm/kbs/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Admin runs operator commands against one broker.
type Admin struct {
	Conn grpc.ClientConnInterface
	Out  io.Writer
}

func (a *Admin) admin() kbsv1.AdminClient { return kbsv1.NewAdminClient(a.Conn) }

// ResourcePut stores the contents of file as a new version of name.
func (a *Admin) ResourcePut(ctx context.Context, name, file string) error {
	data, err := readFile("--file", file)
	if err != nil {
		return err
	}
	m, err := a.admin().PutResource(ctx, &kbsv1.PutResourceRequest{Name: name, Data: data})
	if err != nil {
		return rpcError("resource put", err)
	}
	fmt.Fprintf(a.Out, "%s version %d (%d bytes)\n", m.GetName(), m.GetVersion(), m.GetSize())
	return nil
}

// ResourceList prints every resource's latest version.
func (a *Admin) ResourceList(ctx context.Context) error {
	res, err := a.admin().ListResources(ctx, &kbsv1.ListResourcesRequest{})
	if err != nil {
		return rpcError("resource list", err)
	}
	w := tabwriter.NewWriter(a.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tVERSION\tSIZE\tCREATED")
	for _, m := range res.GetResources() {
		fmt.Fprintf(w, "%s\t%d\t%d\t%s\n", m.GetName(), m.GetVersion(), m.GetSize(), m.GetCreated().AsTime().Format(time.RFC3339))
	}
	return w.Flush()
}

// ResourceRemove deletes every version of name.
func (a *Admin) ResourceRemove(ctx context.Context, name string) error {
	if _, err := a.admin().DeleteResource(ctx, &kbsv1.DeleteResourceRequest{Name: name}); err != nil {
		return rpcError("resource rm", err)
	}
	fmt.Fprintf(a.Out, "%s deleted\n", name)
	return nil
}

// PolicySet sets the release rule (a CEL expression in file) of resource.
func (a *Admin) PolicySet(ctx context.Context, resource, file string) error {
	expr, err := readFile("--file", file)
	if err != nil {
		return err
	}
	p, err := a.admin().SetPolicy(ctx, &kbsv1.SetPolicyRequest{Resource: resource, Expression: strings.TrimSpace(string(expr))})
	if err != nil {
		return rpcError("policy set", err)
	}
	fmt.Fprintf(a.Out, "%s policy version %d\n", p.GetResource(), p.GetVersion())
	return nil
}

// PolicyGet prints the release rule of resource.
func (a *Admin) PolicyGet(ctx context.Context, resource string) error {
	p, err := a.admin().GetPolicy(ctx, &kbsv1.GetPolicyRequest{Resource: resource})
	if err != nil {
		return rpcError("policy get", err)
	}
	fmt.Fprintf(a.Out, "# %s, version %d, updated %s\n%s\n", p.GetResource(), p.GetVersion(), p.GetUpdated().AsTime().Format(time.RFC3339), p.GetExpression())
	return nil
}

// PolicyEval is a dry run: the decision for the claims in file (JSON, as
// `cvm attest verify` prints them) and every rule that decided it.
func (a *Admin) PolicyEval(ctx context.Context, resource, claimsFile string) error {
	cj, err := readFile("--claims", claimsFile)
	if err != nil {
		return err
	}
	res, err := a.admin().EvaluatePolicy(ctx, &kbsv1.EvaluatePolicyRequest{Resource: resource, ClaimsJson: cj})
	if err != nil {
		return rpcError("policy eval", err)
	}
	verdict := "DENY"
	if res.GetRelease() {
		verdict = "RELEASE"
	}
	fmt.Fprintf(a.Out, "%s %s (appraisal %s; decided by %s", verdict, resource, res.GetStatus(), res.GetRule())
	if res.GetPolicyVersion() > 0 {
		fmt.Fprintf(a.Out, ", policy version %d", res.GetPolicyVersion())
	}
	fmt.Fprintln(a.Out, ")")
	w := tabwriter.NewWriter(a.Out, 0, 4, 2, ' ', 0)
	for _, r := range res.GetReasons() {
		fmt.Fprintf(w, "  %s\t%s\t%s\n", r.GetOutcome(), r.GetRule(), r.GetDetail())
	}
	return w.Flush()
}

// RefValueAdd registers an accepted launch measurement for tee.
func (a *Admin) RefValueAdd(ctx context.Context, tee, measurement, note string) error {
	t, err := attestation.ParseTEE(strings.ToLower(tee))
	if err != nil {
		return fmt.Errorf("%w: --tee: %w", ErrUsage, err)
	}
	v, err := hex.DecodeString(strings.TrimPrefix(measurement, "0x"))
	if err != nil || len(v) != 48 {
		return fmt.Errorf("%w: --measurement: want 96 hex digits (48 bytes)", ErrUsage)
	}
	pt, err := attestation.TEEToProto(t)
	if err != nil {
		return fmt.Errorf("%w: --tee: %w", ErrUsage, err)
	}
	rv, err := a.admin().AddReferenceValue(ctx, &kbsv1.AddReferenceValueRequest{Value: &kbsv1.ReferenceValue{Tee: pt, Kind: "measurement", Value: v, Note: note}})
	if err != nil {
		return rpcError("refvalue add", err)
	}
	fmt.Fprintf(a.Out, "%s %s measurement %x\n", rv.GetId(), tee, rv.GetValue())
	return nil
}

// RefValueImport registers the measurements in a `cvm measure --json`
// document.
func (a *Admin) RefValueImport(ctx context.Context, file string) error {
	doc, err := readFile("FILE", file)
	if err != nil {
		return err
	}
	res, err := a.admin().ImportReferenceValues(ctx, &kbsv1.ImportReferenceValuesRequest{Document: doc})
	if err != nil {
		return rpcError("refvalue import", err)
	}
	for _, rv := range res.GetValues() {
		fmt.Fprintf(a.Out, "%s %s %s %x\n", rv.GetId(), teeName(rv.GetTee()), rv.GetKind(), rv.GetValue())
	}
	return nil
}

// RefValueRemove deletes a reference value by the ID 'refvalue list' shows.
func (a *Admin) RefValueRemove(ctx context.Context, id string) error {
	if _, err := a.admin().DeleteReferenceValue(ctx, &kbsv1.DeleteReferenceValueRequest{Id: id}); err != nil {
		return rpcError("refvalue rm", err)
	}
	fmt.Fprintf(a.Out, "%s deleted\n", id)
	return nil
}

// RequirementsSet sets one TEE's appraisal requirements from a JSON file
// (policy.Requirements: tee, min_tcb, allowed_tdx_tcb_statuses,
// require_fresh_collateral, accept_unchecked, min_guest_svn).
func (a *Admin) RequirementsSet(ctx context.Context, file string) error {
	b, err := readFile("--file", file)
	if err != nil {
		return err
	}
	if _, err := a.admin().SetRequirements(ctx, &kbsv1.SetRequirementsRequest{RequirementsJson: b}); err != nil {
		return rpcError("requirements set", err)
	}
	fmt.Fprintln(a.Out, "requirements set")
	return nil
}

// RefValueList prints the reference values and requirements.
func (a *Admin) RefValueList(ctx context.Context) error {
	res, err := a.admin().ListReferenceValues(ctx, &kbsv1.ListReferenceValuesRequest{})
	if err != nil {
		return rpcError("refvalue list", err)
	}
	w := tabwriter.NewWriter(a.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tTEE\tKIND\tVALUE\tNOTE")
	for _, rv := range res.GetValues() {
		fmt.Fprintf(w, "%s\t%s\t%s\t%x\t%s\n", rv.GetId(), teeName(rv.GetTee()), rv.GetKind(), rv.GetValue(), rv.GetNote())
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if len(res.GetRequirementsJson()) > 0 {
		fmt.Fprintf(a.Out, "requirements: %s\n", res.GetRequirementsJson())
	}
	return nil
}

func teeName(t attestationv1.Tee) string {
	if tee, err := attestation.TEEFromProto(t); err == nil {
		return string(tee)
	}
	return t.String()
}

// AuditTail prints the last n audit records as JSON lines.
func (a *Admin) AuditTail(ctx context.Context, n int) error {
	if n <= 0 {
		return fmt.Errorf("%w: -n must be positive", ErrUsage)
	}
	res, err := kbsv1.NewAuditClient(a.Conn).Query(ctx, &kbsv1.QueryRequest{Last: uint32(n)})
	if err != nil {
		return rpcError("audit tail", err)
	}
	enc := json.NewEncoder(a.Out)
	for _, r := range res.GetRecords() {
		if err := enc.Encode(recordJSON(r)); err != nil {
			return err
		}
	}
	return nil
}

func recordJSON(r *kbsv1.AuditRecord) map[string]any {
	m := map[string]any{
		"seq": r.GetSeq(), "time": r.GetTime().AsTime().Format(time.RFC3339Nano), "kind": r.GetKind(),
		"actor": r.GetActor(), "action": r.GetAction(), "outcome": r.GetOutcome(), "hash": r.GetHash(),
	}
	for k, v := range map[string]string{"tee": r.GetTee(), "policy_version": r.GetPolicyVersion(), "claims_digest": r.GetClaimsDigest()} {
		if v != "" {
			m[k] = v
		}
	}
	if len(r.GetReasons()) > 0 {
		m["reasons"] = r.GetReasons()
	}
	if len(r.GetDetails()) > 0 {
		m["details"] = r.GetDetails()
	}
	return m
}

// ErrTampered means audit verification found the log altered.
var ErrTampered = fmt.Errorf("audit log tampered")

// AuditVerify walks the whole audit chain and prints its head.
func (a *Admin) AuditVerify(ctx context.Context) error {
	res, err := kbsv1.NewAuditClient(a.Conn).Verify(ctx, &kbsv1.VerifyRequest{})
	if err != nil {
		if status.Code(err) == codes.DataLoss {
			return fmt.Errorf("%w: %v", ErrTampered, err)
		}
		return rpcError("audit verify", err)
	}
	fmt.Fprintf(a.Out, "audit log intact: %d records, head %s\n", res.GetRecords(), res.GetHead())
	return nil
}

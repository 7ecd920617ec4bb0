package kbs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/greatjail/cvm/kbs/store"
	"github.com/greatjail/cvm/policy"
)

// Buckets the broker keeps its own state in (resources, audit and nonces
// have theirs in their packages).
const (
	bucketPolicies     = "policies"
	bucketRefValues    = "refvalues"
	bucketRequirements = "requirements"
)

// storedPolicy is a release rule as stored.
type storedPolicy struct {
	Expression string    `json:"expression"`
	Version    uint64    `json:"version"`
	Updated    time.Time `json:"updated"`
}

// reference loads the reference values and requirements.
func (s *Server) reference(ctx context.Context) (*policy.Reference, error) {
	ref := &policy.Reference{}
	err := s.opts.Store.View(ctx, func(tx store.Tx) error {
		if err := tx.Scan(bucketRefValues, "", func(_ string, v []byte) error {
			var rv policy.ReferenceValue
			if err := json.Unmarshal(v, &rv); err != nil {
				return fmt.Errorf("stored reference value: %w", err)
			}
			ref.Values = append(ref.Values, rv)
			return nil
		}); err != nil {
			return err
		}
		return tx.Scan(bucketRequirements, "", func(_ string, v []byte) error {
			var r policy.Requirements
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("stored requirements: %w", err)
			}
			ref.Requirements = append(ref.Requirements, r)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("kbs: loading reference values: %w", err)
	}
	return ref, nil
}

// rule loads and compiles the release rule of resource. No rule means the
// default (release only on an affirming appraisal): nil program.
func (s *Server) rule(ctx context.Context, resource string) (*policy.Program, string, error) {
	p, err := s.policy(ctx, resource)
	if errors.Is(err, store.ErrNotFound) {
		return nil, "default", nil
	}
	if err != nil {
		return nil, "", err
	}
	prog, err := policy.Compile(policy.Rule{Name: resource, Expression: p.Expression})
	if err != nil {
		// A stored rule that no longer compiles denies: never fall back to
		// the default.
		return nil, "", fmt.Errorf("kbs: stored rule for %q: %w", resource, err)
	}
	return prog, strconv.FormatUint(p.Version, 10), nil
}

func (s *Server) policy(ctx context.Context, resource string) (*storedPolicy, error) {
	var p storedPolicy
	err := s.opts.Store.View(ctx, func(tx store.Tx) error {
		b, err := tx.Get(bucketPolicies, resource)
		if err != nil {
			return err
		}
		return json.Unmarshal(b, &p)
	})
	if err != nil {
		return nil, err
	}
	return &p, nil
}

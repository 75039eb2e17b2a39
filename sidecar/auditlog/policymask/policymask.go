// Package policymask lets policy authors decide what the decision log masks: it evaluates
// data.consentry.log.mask (when the policy defines it) with the decision's input and returns
// its rules, like OPA's system.log.mask. A rule is a JSON pointer to remove ("/input/...") or
// {"op": "remove"|"upsert", "path": ..., "value": ...}. It implements auditlog.MaskSource.
//
//	package consentry.log
//
//	mask contains "/input/subject/claims/email"
//	mask contains {"op": "upsert", "path": "/input/request/headers/x-forwarded-for", "value": ["redacted"]}
package policymask

import (
	"context"
	"fmt"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"

	"github.com/consentry/consentry/sidecar/auditlog"
	"github.com/consentry/consentry/sidecar/engine"
	"github.com/consentry/consentry/sidecar/input"
)

// Query is the rule the source evaluates.
const Query = "data.consentry.log.mask"

// Source evaluates Query against one compiled policy set. Build a new one when policies change.
type Source struct {
	pq rego.PreparedEvalQuery
}

var _ auditlog.MaskSource = (*Source)(nil)

// New compiles ps for the mask query with the engine's restricted capabilities. For a policy
// without the rule the query is undefined and yields no rules (a few microseconds).
func New(ctx context.Context, ps *engine.PolicySet, cfg engine.Config) (*Source, error) {
	modules, err := ps.ParseModules()
	if err != nil {
		return nil, err
	}
	s := &Source{}
	data := ps.Data
	if data == nil {
		data = map[string]any{}
	}
	opts := []func(*rego.Rego){rego.Query(Query), rego.SetRegoVersion(ast.RegoV1), rego.Store(inmem.NewFromObject(data)),
		rego.Capabilities(engine.RestrictedCapabilities(cfg)), rego.StrictBuiltinErrors(true)}
	for _, m := range modules {
		opts = append(opts, rego.ParsedModule(m))
	}
	if s.pq, err = rego.New(opts...).PrepareForEval(ctx); err != nil {
		return nil, fmt.Errorf("compile %s: %w", Query, err)
	}
	return s, nil
}

// MaskRules implements auditlog.MaskSource. An evaluation error or a malformed rule is an
// error, which makes the log erase the whole input for that decision.
func (s *Source) MaskRules(ctx context.Context, in *input.Input) ([]auditlog.MaskRule, error) {
	rs, err := s.pq.Eval(ctx, rego.EvalParsedInput(in.ToValue()))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", Query, err)
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return nil, nil
	}
	raw, ok := rs[0].Expressions[0].Value.([]any)
	if !ok {
		return nil, fmt.Errorf("%s: %T is not a set or array of rules", Query, rs[0].Expressions[0].Value)
	}
	out := make([]auditlog.MaskRule, 0, len(raw))
	for i, v := range raw {
		var r auditlog.MaskRule
		switch x := v.(type) {
		case string:
			r = auditlog.MaskRule{Op: auditlog.MaskOpRemove, Path: x}
		case map[string]any:
			op, _ := x["op"].(string)
			path, _ := x["path"].(string)
			if op == "" {
				op = auditlog.MaskOpRemove
			}
			r = auditlog.MaskRule{Op: op, Path: path, Value: x["value"]}
		default:
			return nil, fmt.Errorf("%s[%d]: %T is not a rule", Query, i, v)
		}
		if err := r.Check(); err != nil {
			return nil, fmt.Errorf("%s[%d]: %w", Query, i, err)
		}
		out = append(out, r)
	}
	return out, nil
}

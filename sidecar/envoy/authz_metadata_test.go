package envoy

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/consentry/consentry/sidecar/decision"
	"github.com/consentry/consentry/sidecar/input"
	"github.com/consentry/consentry/sidecar/pipeline"
)

// metadataViaMap is the straightforward construction (structpb.NewStruct over a map) that
// metadata must stay equal to.
func metadataViaMap(out *pipeline.Outcome) *structpb.Struct {
	d := out.Decision
	reasons := make([]any, 0, len(d.Reasons))
	for _, r := range d.Reasons {
		reasons = append(reasons, r.Code)
	}
	fields := make(map[string]any, len(d.Fields))
	for name, f := range d.Fields {
		fields[name] = f.Outcome
	}
	scopes := make([]any, 0, len(d.KeyScopes))
	for _, s := range d.KeyScopes {
		scopes = append(scopes, s)
	}
	m := map[string]any{"decision_id": out.DecisionID, "allow": d.Allow, "status": float64(out.Status), "reasons": reasons, "fields": fields, "key_scopes": scopes}
	if out.Input != nil {
		m["purpose"] = out.Input.Purpose
		m["route"] = out.Input.Request.Route
		m["customer_id"] = out.Input.Resource.CustomerID
	}
	if out.Revision != "" {
		m["revision"] = out.Revision
	}
	s, err := structpb.NewStruct(m)
	if err != nil {
		s, _ = structpb.NewStruct(map[string]any{"decision_id": out.DecisionID})
	}
	return s
}

func TestMetadataEqualsMapConstruction(t *testing.T) {
	in := &input.Input{Purpose: "essential.service.operations.support", CaseID: "case-7"}
	in.Request.Route = "GET /api/customers/{customer_id}"
	in.Resource.CustomerID = "c-1001"
	allow := &decision.Decision{Allow: true, Status: 200, Fields: map[string]decision.Field{"contact.email": {Outcome: "allow"}, "card": {Outcome: "mask"}},
		KeyScopes: []string{"contact"}, Reasons: []decision.Reason{{Code: "break_glass.used"}}}
	for name, out := range map[string]*pipeline.Outcome{
		"allow":           {DecisionID: "01J", Decision: allow, Status: 200, Input: in, Revision: "r1"},
		"deny no input":   {DecisionID: "01K", Decision: decision.Deny(451, "consent.withdrawn", "m"), Status: 451},
		"empty decision":  {DecisionID: "01L", Decision: &decision.Decision{}, Status: 403, Input: &input.Input{}},
		"bad utf8 field":  {DecisionID: "01M", Decision: &decision.Decision{Fields: map[string]decision.Field{"a\xff": {Outcome: "deny"}}}, Status: 403},
		"bad utf8 reason": {DecisionID: "01N", Decision: decision.Deny(403, "x\xfe", "m"), Status: 403, Input: in},
		"many fields": {DecisionID: "01P", Decision: &decision.Decision{Fields: map[string]decision.Field{"a": {Outcome: "allow"}, "b": {Outcome: "deny"}, "c": {Outcome: "mask"}, "d": {}, "e": {}, "f": {}, "g": {}},
			Reasons: []decision.Reason{{Code: "a"}, {Code: "b"}}, KeyScopes: []string{"x", "y", "z"}}, Status: 403, Input: in, Revision: "r2"},
	} {
		if got, want := metadata(out), metadataViaMap(out); !proto.Equal(got, want) {
			t.Errorf("%s:\ngot  %v\nwant %v", name, got, want)
		}
	}
}

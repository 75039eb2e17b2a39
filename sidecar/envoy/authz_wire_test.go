package envoy

import (
	"reflect"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"

	"github.com/consentry/consentry/sidecar/decision"
	"github.com/consentry/consentry/sidecar/input"
	"github.com/consentry/consentry/sidecar/pipeline"
)

// onTheWire is resp as a gRPC client (Envoy) decodes it.
func onTheWire(t testing.TB, resp *authv3.CheckResponse) *authv3.CheckResponse {
	t.Helper()
	raw, err := proto.Marshal(resp)
	if err != nil {
		t.Fatal(err)
	}
	var got authv3.CheckResponse
	if err := proto.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	return &got
}

func TestWireResponseDecodesLikeStructured(t *testing.T) {
	in := &input.Input{Purpose: "essential.service.operations.support", CaseID: "case-7"}
	in.Request.Route = "GET /api/customers/{customer_id}"
	in.Resource.CustomerID = "c-1001"
	long := make(map[string]decision.Field)
	for _, n := range []string{"id", "name", "contact.email", "contact.phone", "address", "date_of_birth", "payment.card_number", "payment.card_expiry", "health.notes", "marketing_segment", "created_at", "updated_at"} {
		long[n+".with.a.rather.long.suffix.to.cross.the.one.byte.length.boundary.of.a.varint"] = decision.Field{Outcome: "allow"}
	}
	allow := &decision.Decision{Allow: true, Status: 200, Fields: map[string]decision.Field{"contact.email": {Outcome: "allow"}, "card": {Outcome: "mask"}},
		KeyScopes: []string{"contact"}, Reasons: []decision.Reason{{Code: "break_glass.used"}}, Headers: map[string]string{"x-consentry-purpose": "p"}}
	for name, out := range map[string]*pipeline.Outcome{
		"allow":           {DecisionID: "01J", Decision: allow, Status: 200, Input: in, Revision: "r1", UpstreamHeaders: map[string]string{"x-consentry-fields": "a,b"}, RemoveHeaders: []string{"x-consentry-x"}},
		"deny no input":   {DecisionID: "01K", Decision: decision.Deny(451, "consent.withdrawn", "m"), Status: 451, Body: []byte(`{}`), ResponseHeaders: map[string]string{"content-type": "application/json"}},
		"empty decision":  {DecisionID: "01L", Decision: &decision.Decision{}, Status: 403, Input: &input.Input{}},
		"bad utf8 field":  {DecisionID: "01M", Decision: &decision.Decision{Fields: map[string]decision.Field{"a\xff": {Outcome: "deny"}}}, Status: 403},
		"bad utf8 reason": {DecisionID: "01N", Decision: &decision.Decision{Allow: true, Status: 200, Reasons: []decision.Reason{{Code: "x\xfe"}}}, Status: 200, Input: in},
		"bad utf8 input":  {DecisionID: "01N", Decision: allow, Status: 200, Input: &input.Input{Purpose: "\xff"}},
		"long entries":    {DecisionID: "01P", Decision: &decision.Decision{Allow: true, Status: 200, Fields: long, Reasons: []decision.Reason{{Code: "a"}, {Code: "b"}}, KeyScopes: []string{"x", "y", "z"}}, Status: 200, Input: in, Revision: "r2"},
		"zero status":     {DecisionID: "01Q", Decision: &decision.Decision{Fields: map[string]decision.Field{"": {}}}, Input: in},
	} {
		want := onTheWire(t, ResponseFromOutcome(out))
		got := onTheWire(t, wireResponse(out))
		if !proto.Equal(got, want) {
			t.Errorf("%s:\ngot  %v\nwant %v", name, got, want)
		}
		if len(got.ProtoReflect().GetUnknown()) != 0 || got.GetDynamicMetadata() == nil {
			t.Errorf("%s: metadata not decoded as dynamic_metadata", name)
		}
	}
}

func TestHeadersOfKeepsEveryValue(t *testing.T) {
	hm := &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
		{Key: "x-a", Value: "1"}, {Key: "x-b", Value: "2"}, {Key: "x-a", RawValue: []byte("3")}, {Key: "x-c", Value: "4"}, {Key: "x-a", Value: "5"},
	}}
	got := headersOf(&authv3.AttributeContext_HttpRequest{HeaderMap: hm})
	want := map[string][]string{"x-a": {"1", "3", "5"}, "x-b": {"2"}, "x-c": {"4"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("header_map: %v", got)
	}
	got = headersOf(&authv3.AttributeContext_HttpRequest{Headers: map[string]string{"a": "1", "b": "2,3"}})
	if want := map[string][]string{"a": {"1"}, "b": {"2,3"}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("headers: %v", got)
	}
}

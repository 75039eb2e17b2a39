package auditlog

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/audit"
	"github.com/consentry/consentry/sidecar/decision"
	"github.com/consentry/consentry/sidecar/input"
)

type noRules struct{}

func (noRules) MaskRules(context.Context, *input.Input) ([]MaskRule, error) { return nil, nil }

func variedEntries(t testing.TB) []*audit.Entry {
	base := entry(t, 1)
	list := entry(t, 2)
	list.Input.Resource.CustomerID = ""
	list.Input.Phase = input.PhaseResponse
	list.Input.Request.Path = "/api/customers"
	list.Input.Request.Query = map[string][]string{"q": {"x"}, "access_token": {"t0k3n"}}
	list.Input.Records = []input.Record{{CustomerID: "c-9", Enrichment: input.Enrichment{Consents: []input.Consent{}}}, {CustomerID: "c-8"}}
	list.Decision.Records = map[string]decision.Record{"c-9": {Allow: true, Fields: map[string]decision.Field{"name": {Outcome: "allow"}}, KeyScopes: []string{"contact"}},
		"c-8": {Allow: false, Reasons: []decision.Reason{{Code: "consent.withdrawn", Message: "c-8 withdrew"}}}}
	proc := entry(t, 3)
	until := time.Date(2027, 1, 1, 0, 0, 0, 0, time.FixedZone("x", 3600))
	proc.Input.Subject = input.Subject{ID: "p-1", Type: input.SubjectProcessor, ProcessorID: "acme", MFA: true, AuthMethod: "mtls",
		Claims: map[string]any{"scope": []any{"a", "b"}, "n": 3.5, "nested": map[string]any{"cust": "c-1001", "ok": true, "none": nil}}}
	proc.Input.Enrichment.Agreement = &input.Agreement{ProcessorID: "acme", Purposes: []string{"third_party_sharing"}, ValidUntil: &until}
	proc.Input.BreakGlass = &input.BreakGlass{Justification: "fire \"drill\" \u2028 <x>"}
	proc.Input.Enrichment.Errors = []string{"consent"}
	proc.Decision = &decision.Decision{Allow: true, Status: 200, Obligations: []decision.Obligation{{Type: "record_justification", Params: map[string]any{"min": 10}}, {Type: "notify"}},
		Headers: map[string]string{"x-b": "2", "x-a": "c-1001"}, Flags: []string{"break_glass"}, Fields: map[string]decision.Field{}}
	self := entry(t, 4)
	self.Input.Subject = input.Subject{ID: "c-1001", Type: input.SubjectCustomer, CustomerID: "c-1001"}
	self.Input.Enrichment = input.Enrichment{}
	empty := &audit.Entry{DecisionID: "e", Timestamp: time.Unix(0, 0)}
	return []*audit.Entry{base, list, proc, self, empty}
}

// TestTypedEncodingMatchesGeneric holds the fast typed encoder to the reference path
// (json.Marshal -> generic tree -> canonical JSON).
func TestTypedEncodingMatchesGeneric(t *testing.T) {
	ps, _ := NewPseudonymizer(testKey)
	fast := builder{masker: newMasker(Config{}), pseudo: ps}
	ref := builder{masker: newMasker(Config{}), pseudo: ps, source: noRules{}, forceGeneric: true}
	for i, e := range variedEntries(t) {
		a, err := fast.build(context.Background(), e)
		if err != nil {
			t.Fatal(err)
		}
		b, err := ref.build(context.Background(), e)
		if err != nil {
			t.Fatal(err)
		}
		if len(a.kvs) != len(b.kvs) {
			t.Fatalf("entry %d: %d vs %d members", i, len(a.kvs), len(b.kvs))
		}
		for j := range a.kvs {
			if a.kvs[j].key != b.kvs[j].key || !bytes.Equal(a.kvs[j].val, b.kvs[j].val) {
				t.Errorf("entry %d member %s differs:\nfast %s\nref  %s", i, a.kvs[j].key, a.kvs[j].val, b.kvs[j].val)
			}
			if bytes.Contains(a.kvs[j].val, []byte("c-1001")) || bytes.Contains(a.kvs[j].val, []byte("t0k3n")) || bytes.Contains(a.kvs[j].val, []byte("c-8")) {
				t.Errorf("entry %d member %s leaks a raw id or secret: %s", i, a.kvs[j].key, a.kvs[j].val)
			}
		}
	}
}

// FuzzTypedMatchesGeneric feeds arbitrary strings into the input's free-text places (path,
// header and query names and values, claims, reason messages, customer ids) and holds the fast
// encoder byte-equal to the reference path.
func FuzzTypedMatchesGeneric(f *testing.F) {
	f.Add("c-1001", "/api/customers/c-1001", "x-note", "see c-1001", "q", "1", "msg c-1001.")
	f.Add("a\u2028b", "/\x00/\"", "Authorization", "Bearer x", "access_token", "t", "\xff\xfe")
	ps, _ := NewPseudonymizer(testKey)
	fast := builder{masker: newMasker(Config{}), pseudo: ps}
	ref := builder{masker: newMasker(Config{}), pseudo: ps, forceGeneric: true}
	f.Fuzz(func(t *testing.T, cid, path, hname, hval, qname, qval, msg string) {
		e := entry(t, 1)
		e.Input.Resource.CustomerID = cid
		e.Input.Request.Path = path
		e.Input.Request.Headers[hname] = []string{hval, cid}
		e.Input.Request.Query = map[string][]string{qname: {qval}}
		e.Input.Subject.Claims = map[string]any{"note": hval, "id": cid}
		e.Decision.Reasons = []decision.Reason{{Code: "x", Message: msg}}
		e.Decision.Headers = map[string]string{"x-h": hval}
		a, err1 := fast.build(context.Background(), e)
		b, err2 := ref.build(context.Background(), e)
		if (err1 == nil) != (err2 == nil) {
			t.Fatalf("errors differ: %v / %v", err1, err2)
		}
		if err1 != nil {
			return
		}
		for j := range a.kvs {
			if a.kvs[j].key != b.kvs[j].key || !bytes.Equal(a.kvs[j].val, b.kvs[j].val) {
				t.Fatalf("member %s differs:\nfast %s\nref  %s", a.kvs[j].key, a.kvs[j].val, b.kvs[j].val)
			}
		}
	})
}

package input

import (
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

func ptime(s string) *time.Time {
	t, _ := time.Parse(time.RFC3339, s)
	return &t
}

func full() *Input {
	return &Input{
		Request: Request{ID: "r1", FrontDoor: "proxy", Method: "GET", Path: "/api/customers/c-1", Route: "GET /api/customers/{customer_id}",
			Params:  map[string]string{"customer_id": "c-1"},
			Headers: map[string][]string{"x-purpose": {"a"}, "accept": {"a", "b"}},
			Query:   map[string][]string{"q": {"x", "y"}}, Host: "crm", Source: Source{Address: "10.0.0.1:5", Principal: "spiffe://x/y"}},
		Subject:    Subject{ID: "e1", Type: SubjectEmployee, Roles: []string{"r1", "r2"}, MFA: true, AuthMethod: "jwt", Claims: map[string]any{"iss": "me", "n": 1.5}},
		Purpose:    "p",
		CaseID:     "case-1",
		BreakGlass: &BreakGlass{Justification: "why"},
		Action:     ActionRead,
		Resource:   Resource{Type: "customer", CustomerID: "c-1", Fields: []string{"a", "b"}},
		Enrichment: Enrichment{
			Consents:  []Consent{{Purpose: "p", Status: ConsentGranted, NoticeVersion: "1", GrantedAt: ptime("2026-01-01T00:00:00Z"), ExpiresAt: ptime("2027-01-01T00:00:00Z")}},
			Case:      &Case{ID: "case-1", CustomerID: "c-1", Assignees: []string{"e1"}, Status: "open"},
			Agreement: &Agreement{ProcessorID: "p1", Purposes: []string{"p"}, Categories: []string{"user"}, ValidUntil: ptime("2027-01-01T00:00:00Z")},
			Customer:  &CustomerState{ID: "c-1", RetentionUntil: ptime("2030-01-01T00:00:00Z")},
			Errors:    []string{"case"},
		},
		Phase:   PhaseResponse,
		Records: []Record{{CustomerID: "c-2", Enrichment: Enrichment{Consents: []Consent{}}}},
		Time:    NewTime(time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)),
	}
}

// TestToValueMatchesJSON holds the hand-written conversion to the JSON encoding: a policy must
// see exactly what the documented JSON form (and the decision log) says.
func TestToValueMatchesJSON(t *testing.T) {
	cases := map[string]*Input{"full": full(), "empty": {Enrichment: Enrichment{Consents: []Consent{}}}}
	raw, err := os.ReadFile("../../policies/examples/support-read.json")
	if err != nil {
		t.Fatal(err)
	}
	var ex Input
	if err := json.Unmarshal(raw, &ex); err != nil {
		t.Fatal(err)
	}
	cases["example"] = &ex
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			js, err := json.Marshal(in)
			if err != nil {
				t.Fatal(err)
			}
			want, err := ast.ValueFromReader(bytesReader(js))
			if err != nil {
				t.Fatal(err)
			}
			got := in.ToValue()
			if got.Compare(want) != 0 {
				t.Errorf("ToValue differs from JSON form:\n got %v\nwant %v", got, want)
			}
		})
	}
}

func BenchmarkToValue(b *testing.B) {
	in := full()
	b.ReportAllocs()
	for b.Loop() {
		_ = in.ToValue()
	}
}

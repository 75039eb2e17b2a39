package replay

import (
	"strings"
	"testing"

	"github.com/consentry/consentry/sidecar/decision"
)

func TestDiff(t *testing.T) {
	base := func() *decision.Decision {
		return &decision.Decision{Allow: true, Status: 200, Reasons: []decision.Reason{{Code: "b"}, {Code: "a"}},
			Fields:    map[string]decision.Field{"email": {Outcome: "allow"}, "card": {Outcome: "mask", Mask: "last4"}},
			KeyScopes: []string{"contact", "financial"}, Records: map[string]decision.Record{"cp_1": {Allow: true}}}
	}
	cases := []struct {
		name   string
		mutate func(d *decision.Decision)
		want   string
	}{
		{"same (reason and scope order ignored)", func(d *decision.Decision) {
			d.Reasons[0], d.Reasons[1] = d.Reasons[1], d.Reasons[0]
			d.KeyScopes = []string{"financial", "contact"}
		}, ""},
		{"outcome", func(d *decision.Decision) { d.Allow, d.Status = false, 403 }, "outcome,status"},
		{"reason added", func(d *decision.Decision) { d.Reasons = append(d.Reasons, decision.Reason{Code: "c"}) }, "reasons"},
		{"mask kind", func(d *decision.Decision) { d.Fields["card"] = decision.Field{Outcome: "mask", Mask: "redact"} }, "fields"},
		{"field removed", func(d *decision.Decision) { delete(d.Fields, "email") }, "fields"},
		{"key scope", func(d *decision.Decision) { d.KeyScopes = []string{"contact"} }, "key_scopes"},
		{"list record", func(d *decision.Decision) { d.Records["cp_1"] = decision.Record{Allow: false} }, "records"},
	}
	for _, tc := range cases {
		d := base()
		tc.mutate(d)
		if got := strings.Join(diff(summarize(base()), summarize(d)), ","); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

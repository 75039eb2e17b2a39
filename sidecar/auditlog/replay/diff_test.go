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
			KeyScopes: []string{"contact", "financial"},
			Obligations: []decision.Obligation{{Type: "record_justification", Params: map[string]any{"justification": "outage"}},
				{Type: "filter_records", Params: map[string]any{}}},
			Flags:   []string{"break_glass", "review"},
			Headers: map[string]string{"x-consentry-purpose": "support"},
			Records: map[string]decision.Record{"cp_1": {Allow: true, Reasons: []decision.Reason{}, Fields: map[string]decision.Field{"email": {Outcome: "allow"}},
				KeyScopes: []string{"contact", "financial"}}}}
	}
	outcome := func(d *decision.Decision) Outcome {
		o := summarize(d)
		o.Records = summarizeRecords(d.Records)
		return o
	}
	cases := []struct {
		name   string
		mutate func(d *decision.Decision)
		want   string
	}{
		{"same (order of reasons, scopes, obligations, flags ignored)", func(d *decision.Decision) {
			d.Reasons[0], d.Reasons[1] = d.Reasons[1], d.Reasons[0]
			d.KeyScopes = []string{"financial", "contact"}
			d.Obligations[0], d.Obligations[1] = d.Obligations[1], d.Obligations[0]
			d.Flags = []string{"review", "break_glass"}
			d.Records["cp_1"] = decision.Record{Allow: true, Fields: map[string]decision.Field{"email": {Outcome: "allow"}}, KeyScopes: []string{"financial", "contact"}}
		}, ""},
		{"outcome", func(d *decision.Decision) { d.Allow, d.Status = false, 403 }, "outcome,status"},
		{"reason added", func(d *decision.Decision) { d.Reasons = append(d.Reasons, decision.Reason{Code: "c"}) }, "reasons"},
		{"mask kind", func(d *decision.Decision) { d.Fields["card"] = decision.Field{Outcome: "mask", Mask: "redact"} }, "fields"},
		{"field removed", func(d *decision.Decision) { delete(d.Fields, "email") }, "fields"},
		{"key scope", func(d *decision.Decision) { d.KeyScopes = []string{"contact"} }, "key_scopes"},
		{"obligation removed", func(d *decision.Decision) { d.Obligations = d.Obligations[1:] }, "obligations"},
		{"obligation params", func(d *decision.Decision) { d.Obligations[0].Params["justification"] = "other" }, "obligations"},
		{"flag removed", func(d *decision.Decision) { d.Flags = []string{"review"} }, "flags"},
		{"header value", func(d *decision.Decision) { d.Headers["x-consentry-purpose"] = "marketing" }, "headers"},
		{"header added", func(d *decision.Decision) { d.Headers["x-consentry-extra"] = "1" }, "headers"},
		{"list record", func(d *decision.Decision) { d.Records["cp_1"] = decision.Record{Allow: false} }, "records"},
		{"list record reasons", func(d *decision.Decision) {
			r := d.Records["cp_1"]
			r.Reasons = []decision.Reason{{Code: "break_glass.used"}}
			d.Records["cp_1"] = r
		}, "records"},
		{"list record fields", func(d *decision.Decision) {
			r := d.Records["cp_1"]
			r.Fields = map[string]decision.Field{"email": {Outcome: "mask", Mask: "hmac"}}
			d.Records["cp_1"] = r
		}, "records"},
		{"list record key scopes", func(d *decision.Decision) {
			r := d.Records["cp_1"]
			r.KeyScopes = []string{"contact"}
			d.Records["cp_1"] = r
		}, "records"},
		{"list record added", func(d *decision.Decision) { d.Records["cp_2"] = decision.Record{Allow: false} }, "records"},
	}
	for _, tc := range cases {
		d := base()
		tc.mutate(d)
		ch := Change{Old: outcome(base()), New: outcome(d)}
		ch.Kinds = diff(ch.Old, ch.New)
		if got := strings.Join(ch.Kinds, ","); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
		if tc.want != "" && describe(ch) == "" {
			t.Errorf("%s: the example does not say what changed", tc.name)
		}
	}
}

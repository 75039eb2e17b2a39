package pipeline_test

import (
	"context"
	"slices"
	"testing"

	"github.com/consentry/consentry/sidecar/decision"
	"github.com/consentry/consentry/sidecar/pipeline"
	"github.com/consentry/consentry/sidecar/routes"
)

// TestUnboundReadIsFilteredPerRecord: a search mapped as a read, with no customer in its path,
// is no one customer's read: the decision obligates per-record filtering, so a door without a
// response phase refuses it and one with it decides each record with its own customer's state.
func TestUnboundReadIsFilteredPerRecord(t *testing.T) {
	rm, err := routes.Parse([]byte(`
routes:
  - {method: GET, path: /api/search, action: read, resource: customer, record_path: items, fields: [id, name, marketing_segment]}
`))
	if err != nil {
		t.Fatal(err)
	}
	p, err := pipeline.New(slowCI, pipeline.Deps{Engine: fx.Engine, Routes: rm, Identity: fx.Identity, Enrich: fx.Enrich, Log: fx.Sink})
	if err != nil {
		t.Fatal(err)
	}
	analyst := fx.Token("emp-50", "employee", []string{"analyst"}, nil)
	for _, tt := range []struct {
		name   string
		fulfil []string
		allow  bool
	}{
		{"response phase", []string{pipeline.ObligationFilterRecords, pipeline.ObligationMinimizeFields}, true},
		{"no response phase", nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req := request("GET", "/api/search?q=a", hdr{"authorization": bearer(analyst), "x-purpose": {"analytics.reporting"}})
			req.CanFulfil = tt.fulfil
			out := p.Check(context.Background(), req)
			if out.Allowed() != tt.allow {
				t.Fatalf("allowed %v, want %v: %v", out.Allowed(), tt.allow, out.Decision.ReasonCodes())
			}
			if tt.allow && !slices.ContainsFunc(out.Decision.Obligations, func(o decision.Obligation) bool { return o.Type == pipeline.ObligationFilterRecords }) {
				t.Fatalf("no filter_records: %+v", out.Decision.Obligations)
			}
		})
	}
}

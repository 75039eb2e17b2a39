package pipeline_test

import (
	"context"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/decision"
	"github.com/consentry/consentry/sidecar/engine"
	"github.com/consentry/consentry/sidecar/pipeline"
	"github.com/consentry/consentry/sidecar/routes"
)

// noFilterPolicy is a custom decision rule that allows everything with no obligations: on a
// request bound to no customer it drops filter_records, which alone has each record decided
// with its own customer's state.
const noFilterPolicy = `package consentry

decision := {"allow": true, "status": 200, "reasons": [], "fields": {f: {"outcome": "allow"} | some f in input.resource.fields}, "key_scopes": [], "obligations": [], "headers": {}, "flags": []}
`

// An allowed decision on a list, an export or a read bound to no customer must carry
// filter_records, or every record of the response would be served under the request's field
// outcomes; without it the pipeline denies (engine.invalid_decision) even at a door that could
// filter. A read bound to a customer needs no such obligation.
func TestUnboundRequestNeedsFilterRecords(t *testing.T) {
	rm, err := routes.Parse([]byte(`
routes:
  - {method: GET, path: /api/customers, action: list, resource: customer, list: true, record_path: items, fields: [id, name]}
  - {method: GET, path: /api/export, action: export, resource: customer, list: true, record_path: items, fields: [id, name]}
  - {method: GET, path: /api/search, action: read, resource: customer, record_path: items, fields: [id, name]}
  - {method: GET, path: "/api/customer/{id}", customer_param: id, action: read, resource: customer, fields: [id, name]}
`))
	if err != nil {
		t.Fatal(err)
	}
	eng := engine.New(engine.Config{Timeout: 5 * time.Second}, nil)
	if err := eng.Load(context.Background(), &engine.PolicySet{Modules: map[string]string{"p.rego": noFilterPolicy}, Revision: "custom"}); err != nil {
		t.Fatal(err)
	}
	p, err := pipeline.New(slowCI, pipeline.Deps{Engine: eng, Routes: rm, Identity: fx.Identity, Enrich: fx.Enrich, Log: fx.Sink})
	if err != nil {
		t.Fatal(err)
	}
	analyst := fx.Token("emp-50", "employee", []string{"analyst"}, nil)
	for _, tt := range []struct {
		target string
		allow  bool
	}{
		{"/api/customers", false},
		{"/api/export", false},
		{"/api/search?q=a", false},
		{"/api/customer/c-1001", true},
	} {
		t.Run(tt.target, func(t *testing.T) {
			req := request("GET", tt.target, hdr{"authorization": bearer(analyst), "x-purpose": {"analytics.reporting"}})
			req.CanFulfil = []string{pipeline.ObligationFilterRecords, pipeline.ObligationMinimizeFields}
			out := p.Check(context.Background(), req)
			if out.Allowed() != tt.allow {
				t.Fatalf("allowed %v, want %v: %v", out.Allowed(), tt.allow, out.Decision.Reasons)
			}
			if !tt.allow && (out.Decision.ReasonCodes()[0] != decision.ReasonEngineInvalid || out.Status != 503) {
				t.Fatalf("denied with %v (status %d), want engine.invalid_decision (503)", out.Decision.ReasonCodes(), out.Status)
			}
		})
	}
}

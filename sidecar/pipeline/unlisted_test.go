package pipeline_test

import (
	"context"
	"strings"
	"testing"

	"github.com/consentry/consentry/sidecar/pipeline"
	"github.com/consentry/consentry/sidecar/routes"
)

// TestDropRouteNeedsAResponsePhase: a route that drops unlisted response members cannot be
// honoured by a door that never sees the response (Envoy ext_authz alone), so its requests
// are refused there, writes too (the CRM's answer to a PATCH echoes the whole record); the
// same requests on a pass route are not affected.
func TestDropRouteNeedsAResponsePhase(t *testing.T) {
	shipped := mustRoutes(t) // the shipped map says unlisted: drop
	passing := mustRoutes(t)
	for _, r := range passing.Routes() {
		r.Unlisted = routes.UnlistedPass
	}
	read := func(fulfil ...string) *pipeline.Request {
		r := request("GET", "/api/customers/c-1001", hdr{"authorization": bearer(fx.Agent()), "x-purpose": {support}, "x-case-id": {"case-7"}})
		r.CanFulfil = fulfil
		return r
	}
	write := func(fulfil ...string) *pipeline.Request {
		r := request("PATCH", "/api/customers/c-1001", hdr{"authorization": bearer(fx.Agent()), "x-purpose": {support}, "x-case-id": {"case-7"}, "content-type": {"application/json"}})
		r.Body, r.BodyComplete, r.CanFulfil = []byte(`{"name":"Ann B"}`), true, fulfil
		return r
	}
	tests := []struct {
		name  string
		m     *routes.Map
		req   *pipeline.Request
		allow bool
	}{
		{"drop route, read, no response phase", shipped, read(), false},
		{"drop route, read, response phase", shipped, read(pipeline.ObligationMinimizeFields), true},
		{"drop route, write, no response phase (its answer echoes the record)", shipped, write(), false},
		{"drop route, write, response phase", shipped, write(pipeline.ObligationMinimizeFields), true},
		{"pass route, read, no response phase", passing, read(), true},
		{"pass route, write, no response phase", passing, write(), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if u := tt.m.Routes()[1].Unlisted; tt.m == shipped && u != routes.UnlistedDrop {
				t.Fatalf("shipped map route unlisted %q, want drop", u)
			}
			p, err := pipeline.New(slowCI, pipeline.Deps{Engine: fx.Engine, Routes: tt.m, Identity: fx.Identity, Enrich: fx.Enrich, Log: fx.Sink})
			if err != nil {
				t.Fatal(err)
			}
			out := p.Check(context.Background(), tt.req)
			if out.Allowed() != tt.allow {
				t.Fatalf("allowed %v, want %v: %v", out.Allowed(), tt.allow, out.Decision.Reasons)
			}
			if !tt.allow && (!strings.Contains(strings.Join(out.Decision.ReasonCodes(), ","), pipeline.ReasonObligation) || out.Decision.Status != 403) {
				t.Fatalf("denied with %v (%d), want %s 403", out.Decision.ReasonCodes(), out.Decision.Status, pipeline.ReasonObligation)
			}
		})
	}
}

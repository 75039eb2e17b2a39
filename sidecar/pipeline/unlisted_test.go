package pipeline_test

import (
	"context"
	"strings"
	"testing"

	"github.com/consentry/consentry/sidecar/pipeline"
	"github.com/consentry/consentry/sidecar/routes"
)

// TestDropRouteNeedsAResponsePhase: a route that drops unlisted response members cannot be
// honoured by a door that never sees the response (Envoy ext_authz alone), so its reads are
// refused there; writes, and the same read on a pass route, are not affected.
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
	tests := []struct {
		name  string
		m     *routes.Map
		req   *pipeline.Request
		allow bool
	}{
		{"drop route, no response phase", shipped, read(), false},
		{"drop route, response phase", shipped, read(pipeline.ObligationMinimizeFields), true},
		{"pass route, no response phase", passing, read(), true},
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

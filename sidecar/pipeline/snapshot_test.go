package pipeline_test

import (
	"context"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/engine"
	"github.com/consentry/consentry/sidecar/enrich"
	"github.com/consentry/consentry/sidecar/input"
	"github.com/consentry/consentry/sidecar/pipeline"
	"github.com/consentry/consentry/sidecar/routes"
)

// pausingEnrich holds the first enrichment until released: a request is then in flight
// between routing (step 2) and evaluation (step 6). entered is closed when it holds it.
type pausingEnrich struct {
	enrich.Provider
	once             sync.Once
	entered, release chan struct{}
}

func (e *pausingEnrich) Enrich(ctx context.Context, q enrich.Query) (input.Enrichment, error) {
	e.once.Do(func() {
		close(e.entered)
		<-e.release
	})
	return e.Provider.Enrich(ctx, q)
}

// routedBundle is a policy with its route map (routes.from_bundle): one route at path, and a
// rule that denies exactly that route by name. It is published as the app's activator does:
// the map into holder, then the policy carrying the map.
func routedBundle(t *testing.T, eng *engine.Engine, holder *routes.Holder, rev, path string) {
	t.Helper()
	ps := &engine.PolicySet{Revision: rev, Modules: map[string]string{"p.rego": `package consentry

blocked if input.request.route == "GET ` + path + `"

decision := {"allow": true, "status": 200, "reasons": [], "fields": {f: {"outcome": "allow"} | some f in input.resource.fields}, "key_scopes": [], "obligations": [], "headers": {}, "flags": []} if not blocked
else := {"allow": false, "status": 403, "reasons": [{"code": "custom.deny", "message": "route ` + path + `"}], "fields": {}, "key_scopes": [], "obligations": [], "headers": {}, "flags": []}
`},
		Data: map[string]any{"consentry": map[string]any{"routes": map[string]any{"routes": []any{
			map[string]any{"method": "GET", "path": path, "customer_param": "id", "action": "read", "resource": "customer", "fields": []any{"id"}},
		}}}},
	}
	m, ok, err := routes.FromData(ps.Data)
	if err != nil || !ok {
		t.Fatalf("route map: %v %v", ok, err)
	}
	p, err := eng.Prepare(context.Background(), ps)
	if err != nil {
		t.Fatal(err)
	}
	holder.Store(m)
	eng.Activate(p.WithRoutes(m))
}

// A request routed by one bundle's route map is decided by that bundle's policy, even when
// the next bundle (which moved the route, and the rule with it) activates while the request
// waits for enrichment: the new policy would not know the old route and allow it.
func TestInFlightRequestIsDecidedByThePolicyItWasRoutedWith(t *testing.T) {
	eng := engine.New(engine.Config{Timeout: 5 * time.Second}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	holder := &routes.Holder{}
	routedBundle(t, eng, holder, "1", "/api/admin/{id}")
	pe := &pausingEnrich{Provider: fx.Enrich, entered: make(chan struct{}), release: make(chan struct{})}
	p, err := pipeline.New(pipeline.Config{Timeout: 5 * time.Second}, pipeline.Deps{Engine: eng, Routes: holder, Identity: fx.Identity, Enrich: pe, Log: fx.Sink})
	if err != nil {
		t.Fatal(err)
	}
	agent := bearer(fx.Agent())
	get := func(path string) *pipeline.Request {
		return request("GET", path, hdr{"authorization": agent, "x-purpose": {support}})
	}
	done := make(chan *pipeline.Outcome, 1)
	go func() { done <- p.Check(context.Background(), get("/api/admin/c-1001")) }()
	select {
	case <-pe.entered: // routed by revision 1's map
	case out := <-done:
		t.Fatalf("decided before enrichment: %v %v", out.Decision.ReasonCodes(), out.Err)
	}
	routedBundle(t, eng, holder, "2", "/api/v2/admin/{id}")
	close(pe.release)
	out := <-done
	if out.Allowed() || out.Revision != "1" || out.Input.Request.Route != "GET /api/admin/{id}" {
		t.Fatalf("route %q decided by revision %q: allowed=%v %v; want revision 1's deny",
			out.Input.Request.Route, out.Revision, out.Allowed(), out.Decision.ReasonCodes())
	}
	// Requests that start now are routed and decided by revision 2.
	if out := p.Check(context.Background(), get("/api/admin/c-1001")); out.Allowed() || out.Decision.ReasonCodes()[0] != pipeline.ReasonRouteUnknown {
		t.Fatalf("old path after the swap: %v", out.Decision.ReasonCodes())
	}
	if out := p.Check(context.Background(), get("/api/v2/admin/c-1001")); out.Allowed() || out.Revision != "2" {
		t.Fatalf("new path after the swap: revision %q allowed=%v", out.Revision, out.Allowed())
	}
	if m := p.Route("GET", "/api/v2/admin/c-1001"); m == nil {
		t.Fatal("Route does not use the route map published with the active policy")
	}
}

// revisionPagePolicy allows the list request and gives every record of its response phase the
// outcome allow (true) or deny.
func revisionPagePolicy(allow bool) string {
	rec := `{"allow": true, "reasons": [], "fields": {}, "key_scopes": []}`
	if !allow {
		rec = `{"allow": false, "reasons": [{"code": "custom.deny", "message": "revision 2"}], "fields": {}, "key_scopes": []}`
	}
	return `package consentry

base := {"allow": true, "status": 200, "reasons": [], "fields": {}, "key_scopes": [], "obligations": [{"type": "filter_records", "params": {}}], "headers": {}, "flags": []}

decision := base if input.phase != "response"

decision := object.union(base, {"records": {r.customer_id: ` + rec + ` | some r in input.records}}) if input.phase == "response"
`
}

// The response phase of a list is decided by the policy that allowed its request, also when
// a new one activated in between (in one evaluation, and split into parallel slices).
func TestResponsePhaseIsDecidedByTheRequestsPolicy(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
	for _, per := range []int{-1, 2} {
		eng := engine.New(engine.Config{Timeout: 5 * time.Second}, slog.New(slog.NewTextHandler(io.Discard, nil)))
		load := func(rev string, allow bool) {
			if err := eng.Load(context.Background(), &engine.PolicySet{Modules: map[string]string{"page.rego": revisionPagePolicy(allow)}, Revision: rev}); err != nil {
				t.Fatal(err)
			}
		}
		load("1", true)
		p, err := pipeline.New(pipeline.Config{RecordsPerEvaluation: per, Timeout: 5 * time.Second}, pipeline.Deps{Engine: eng, Routes: fx.Routes, Identity: fx.Identity, Enrich: fx.Enrich, Log: fx.Sink})
		if err != nil {
			t.Fatal(err)
		}
		req := request("GET", "/api/customers?q=a", hdr{"authorization": bearer(fx.Token("emp-30", "employee", []string{"marketing"}, nil)), "x-purpose": {marketing}})
		req.CanFulfil = []string{pipeline.ObligationFilterRecords, pipeline.ObligationMinimizeFields}
		out := p.Check(context.Background(), req)
		if !out.Allowed() || out.Revision != "1" {
			t.Fatalf("list request: revision %q %v %v", out.Revision, out.Decision.ReasonCodes(), out.Err)
		}
		load("2", false)
		d, err := p.DecideRecords(context.Background(), out, pageIDs(6))
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range pageIDs(6) {
			if !d.Records[id].Allow {
				t.Fatalf("records_per_evaluation %d: record %s denied by revision 2 on a page revision 1 allowed: %+v", per, id, d.Records[id])
			}
		}
	}
}

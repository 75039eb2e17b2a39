package app

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/engine"
	"github.com/consentry/consentry/sidecar/enrich"
	"github.com/consentry/consentry/sidecar/input"
	"github.com/consentry/consentry/sidecar/pipeline"
	"github.com/consentry/consentry/sidecar/pipeline/pipelinetest"
	"github.com/consentry/consentry/sidecar/routes"
)

// pausedEnrich holds the first enrichment until release is closed; entered is closed when
// it holds it.
type pausedEnrich struct {
	enrich.Provider
	once             sync.Once
	entered, release chan struct{}
}

func (b *pausedEnrich) Enrich(ctx context.Context, q enrich.Query) (input.Enrichment, error) {
	b.once.Do(func() {
		close(b.entered)
		<-b.release
	})
	return b.Provider.Enrich(ctx, q)
}

// With routes.from_bundle the activator publishes the route map with the policy: rev 1 has
// /api/admin/{id} and a custom rule denying it; rev 2 moved the route to /api/v2/admin/{id},
// and the rule with it. A request routed by rev 1's map before the swap (now waiting for
// enrichment) must still be decided by rev 1's policy, not allowed by rev 2's, whose rule no
// longer names its route.
func TestActivatorPublishesRoutesWithPolicy(t *testing.T) {
	fx, err := pipelinetest.New(t.TempDir(), pipelinetest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer fx.Close()
	eng := engine.New(engine.Config{Timeout: 5 * time.Second}, slog.New(slog.DiscardHandler))
	holder := &routes.Holder{}
	act := &activator{eng: eng, routes: holder, fromBundle: true}
	bundle := func(rev, path string) *engine.PolicySet {
		return &engine.PolicySet{Revision: rev,
			Modules: map[string]string{"p.rego": `package consentry

allow if not input.request.route == "GET ` + path + `"

decision := {"allow": true, "status": 200, "reasons": [], "fields": {f: {"outcome": "allow"} | some f in input.resource.fields}, "key_scopes": [], "obligations": [], "headers": {}, "flags": []} if allow
else := {"allow": false, "status": 403, "reasons": [{"code": "custom.deny", "message": "admin route"}], "fields": {}, "key_scopes": [], "obligations": [], "headers": {}, "flags": []}
`},
			Data: map[string]any{"consentry": map[string]any{"routes": map[string]any{"routes": []any{
				map[string]any{"method": "GET", "path": path, "customer_param": "id", "action": "read", "resource": "customer", "fields": []any{"id"}},
			}}}},
		}
	}
	if err := act.Load(context.Background(), bundle("1", "/api/admin/{id}")); err != nil {
		t.Fatal(err)
	}
	be := &pausedEnrich{Provider: fx.Enrich, entered: make(chan struct{}), release: make(chan struct{})}
	p, err := pipeline.New(pipeline.Config{}, pipeline.Deps{Engine: eng, Routes: holder, Identity: fx.Identity, Enrich: be, Log: fx.Sink})
	if err != nil {
		t.Fatal(err)
	}
	tok := fx.Token("emp-17", "employee", []string{"support_agent"}, nil)
	req := &pipeline.Request{FrontDoor: "proxy", Method: "GET", Target: "/api/admin/c-1001",
		Headers: map[string][]string{"authorization": {"Bearer " + tok}, "x-purpose": {"essential.service.operations.support"}}}
	done := make(chan *pipeline.Outcome, 1)
	go func() { done <- p.Check(context.Background(), req) }()
	select {
	case <-be.entered: // matched rev 1's route, now enriching
	case out := <-done:
		t.Fatalf("decided before enrichment: %v", out.Decision.ReasonCodes())
	}
	if err := act.Load(context.Background(), bundle("2", "/api/v2/admin/{id}")); err != nil {
		t.Fatal(err)
	}
	// One swap publishes both: the active policy carries the map the holder has (a request
	// taking the policy between the holder's swap and the engine's still routes with its own).
	if m := eng.Active().Routes(); m == nil || m != holder.Load() {
		t.Fatalf("the active policy carries route map %p, the holder %p", m, holder.Load())
	}
	close(be.release)
	out := <-done
	if out.Allowed() || out.Revision != "1" {
		t.Fatalf("route %s decided by revision %s (allowed=%v): a request routed by rev 1's map must be decided by rev 1's policy",
			out.Input.Request.Route, out.Revision, out.Allowed())
	}
}

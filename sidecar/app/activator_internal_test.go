package app

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"

	"github.com/consentry/consentry/sidecar/engine"
	"github.com/consentry/consentry/sidecar/routes"
)

// activationProbe is a log handler that, at the engine's "policy activated" record (written
// at the moment the new policy becomes active), records which route map was in force then.
type activationProbe struct {
	routes *routes.Holder
	seen   atomic.Pointer[routes.Map]
	hits   atomic.Int32
}

func (h *activationProbe) Enabled(context.Context, slog.Level) bool { return true }
func (h *activationProbe) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *activationProbe) WithGroup(string) slog.Handler            { return h }
func (h *activationProbe) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "policy activated" {
		h.seen.Store(h.routes.Load())
		h.hits.Add(1)
	}
	return nil
}

// With routes.from_bundle, the new route map is in force by the time the new policy is: a
// request never meets the new policy under the old route map.
func TestActivatorSwapsRoutesBeforePolicy(t *testing.T) {
	holder := &routes.Holder{}
	probe := &activationProbe{routes: holder}
	eng := engine.New(engine.Config{}, slog.New(probe))
	act := &activator{eng: eng, routes: holder, fromBundle: true}
	bundleWith := func(path string) *engine.PolicySet {
		return &engine.PolicySet{
			Modules: map[string]string{"p.rego": "package consentry\n\ndecision := {\"allow\": false}\n"},
			Data: map[string]any{"consentry": map[string]any{"routes": map[string]any{"routes": []any{
				map[string]any{"method": "GET", "path": path, "customer_param": "id", "action": "read", "resource": "customer", "fields": []any{"id"}},
			}}}},
		}
	}
	for _, path := range []string{"/v1/customer/{id}", "/v2/customer/{id}"} {
		if err := act.Load(context.Background(), bundleWith(path)); err != nil {
			t.Fatal(err)
		}
		seen := probe.seen.Load()
		if seen == nil || seen != holder.Load() {
			t.Fatalf("the policy for %s became active under another route map", path)
		}
		if _, ok := seen.Match("GET", path[:len(path)-len("{id}")]+"c-1"); !ok {
			t.Fatalf("the route map in force at activation does not hold %s", path)
		}
	}
	if probe.hits.Load() != 2 {
		t.Fatalf("%d activations logged, want 2", probe.hits.Load())
	}
}

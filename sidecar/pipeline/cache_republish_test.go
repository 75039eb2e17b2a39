package pipeline_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/engine"
	"github.com/consentry/consentry/sidecar/pipeline"
)

const denyAllPolicy = `package consentry
decision := {"allow": false, "status": 403, "reasons": [{"code": "custom.deny", "message": "v2"}], "fields": {}, "key_scopes": [], "obligations": [], "headers": {}, "flags": []}
`

// TestSameRevisionRepublishIsNotServedFromTheCache: a bundle republished with other policies
// under the same revision (a hot fix without a new .manifest revision) is accepted; the
// decision cache was keyed by the revision string and kept serving the old policy's allow.
func TestSameRevisionRepublishIsNotServedFromTheCache(t *testing.T) {
	eng := engine.New(engine.Config{Timeout: 5 * time.Second}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	load := func(mod string) {
		if err := eng.Load(context.Background(), &engine.PolicySet{Modules: map[string]string{"p.rego": mod}, Revision: "2026-12-01"}); err != nil {
			t.Fatal(err)
		}
	}
	load(revisionPagePolicy(true))
	p, err := pipeline.New(pipeline.Config{Timeout: 5 * time.Second}, pipeline.Deps{Engine: eng, Routes: fx.Routes, Identity: fx.Identity, Enrich: fx.Enrich, Log: fx.Sink})
	if err != nil {
		t.Fatal(err)
	}
	req := func() *pipeline.Request {
		r := request("GET", "/api/customers?q=a", hdr{"authorization": bearer(fx.Token("emp-30", "employee", []string{"marketing"}, nil)), "x-purpose": {marketing}})
		r.CanFulfil = []string{pipeline.ObligationFilterRecords, pipeline.ObligationMinimizeFields}
		return r
	}
	if out := p.Check(context.Background(), req()); !out.Allowed() {
		t.Fatalf("v1: %v", out.Decision.ReasonCodes())
	}
	load(denyAllPolicy) // same revision string, a deny-all policy
	out := p.Check(context.Background(), req())
	if out.Allowed() {
		t.Fatalf("deny-all policy active (revision %q), but the request was allowed (cache hit=%d)", out.Revision, out.Metrics["decision_cache_hit"])
	}
}

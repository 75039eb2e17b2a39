package pipeline_test

import (
	"context"
	"testing"

	"github.com/consentry/consentry/sidecar/audit"
	"github.com/consentry/consentry/sidecar/pipeline"
)

// BenchmarkCheck measures one in-process check plus its decision log line (no network), with
// and without the decision cache: the CPU cost of the pipeline itself.
func BenchmarkCheck(b *testing.B) {
	h := hdr{"authorization": bearer(fx.Agent()), "x-purpose": {support}, "x-case-id": {"case-7"}, "accept": {"application/json"}}
	uncached, err := fx.WithConfig(pipeline.Config{DecisionCache: pipeline.CacheConfig{Size: -1}})
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		p    *pipeline.Pipeline
	}{{"cached", fx.Pipeline}, {"uncached", uncached}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			timeouts := 0
			for i := 0; i < b.N; i++ {
				out := bc.p.Check(context.Background(), request("GET", "/api/customers/c-1001", h))
				if !out.Allowed() {
					// On a shared, overloaded machine an evaluation can miss its deadline:
					// count it (fail closed is the correct behaviour), fail on anything else.
					if out.Decision.Reasons[0].Code != "engine.timeout" {
						b.Fatal(out.Decision.Reasons)
					}
					timeouts++
				}
				if err := bc.p.Record(context.Background(), out, audit.Enforcement{}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(timeouts), "timeouts")
		})
	}
}

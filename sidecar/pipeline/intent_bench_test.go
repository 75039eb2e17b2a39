package pipeline_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/audit"
)

// BenchmarkStrictWrite is what the write-ahead intent costs a write: an allowed update decided
// by the default library (decision cache on) and recorded in the production decision log in
// strict mode, once as before intents (the decision's record only) and once with the intent
// first, alternating write by write in one run so that both see the same disk. The latency is
// the recording's alone (the decision is cached): one durable append against two.
//
//	go test -run '^$' -bench StrictWrite -benchtime 4000x ./sidecar/pipeline/
func BenchmarkStrictWrite(b *testing.B) {
	p, lg, _ := auditlogPipeline(b)
	defer lg.Close()
	ctx := context.Background()
	h := hdr{"authorization": bearer(fx.Agent()), "x-purpose": {support}, "x-case-id": {"case-7"}, "content-type": {"application/json"}}
	used := audit.Enforcement{KeyScopes: []string{"contact"}, FieldsReleased: []string{"contact.email"}}
	write := func(intent bool) time.Duration {
		req := request("PATCH", "/api/customers/c-1001", h)
		req.Body, req.BodyComplete = []byte(`{"contact":{"email":"a@example.test"}}`), true
		out := p.Check(ctx, req)
		if !out.Allowed() {
			b.Fatalf("write denied: %v", out.Decision.ReasonCodes())
		}
		start := time.Now()
		if intent {
			if err := p.RecordIntent(ctx, out, used); err != nil {
				b.Fatal(err)
			}
		}
		enf := audit.Enforcement{Status: 200}
		enf.AddWrite(used)
		if err := p.Record(ctx, out, enf); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	for i := 0; i < 50; i++ { // warm the decision cache and the log
		write(i%2 == 0)
	}
	var one, two []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		one = append(one, write(false))
		two = append(two, write(true))
	}
	b.StopTimer()
	q := func(l []time.Duration, p int) float64 {
		slices.Sort(l)
		return float64(l[len(l)*p/100].Microseconds())
	}
	b.ReportMetric(q(one, 50), "decision-only-p50-µs")
	b.ReportMetric(q(one, 99), "decision-only-p99-µs")
	b.ReportMetric(q(two, 50), "with-intent-p50-µs")
	b.ReportMetric(q(two, 99), "with-intent-p99-µs")
}

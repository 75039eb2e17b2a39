package engine

import (
	"context"
	"encoding/json"
	"os"
	"sort"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
)

// BenchmarkDecide is a full decision with the default library on a realistic input
// (5 consent records, 12 requested fields) through consentry's engine: input conversion,
// evaluation, strict decoding of the decision. Reports p50/p99 latency as metrics.
func BenchmarkDecide(b *testing.B) {
	e := loadLibrary(b)
	in := exampleInput(b)
	ctx := context.Background()
	lat := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		res, err := e.Decide(ctx, in)
		lat = append(lat, time.Since(start))
		if err != nil || !res.Decision.Allow {
			b.Fatal(err)
		}
	}
	reportPercentiles(b, lat)
}

// BenchmarkPlainRego is the same decision through a bare rego.PreparedEvalQuery with no
// consentry code (input passed as a Go map, result left undecoded): the baseline for our
// overhead ratio.
func BenchmarkPlainRego(b *testing.B) {
	ps, err := LoadDir(policyDir, LoadOptions{})
	if err != nil {
		b.Fatal(err)
	}
	modules, err := ps.ParseModules()
	if err != nil {
		b.Fatal(err)
	}
	opts := []func(*rego.Rego){rego.Query("data.consentry.decision"), rego.Store(inmem.NewFromObject(ps.Data)), rego.Schemas(ps.SchemaSet())}
	for _, m := range modules {
		opts = append(opts, rego.ParsedModule(m))
	}
	pq, err := rego.New(opts...).PrepareForEval(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	raw, err := os.ReadFile(policyDir + "/examples/support-read.json")
	if err != nil {
		b.Fatal(err)
	}
	var in map[string]any
	if err := json.Unmarshal(raw, &in); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	lat := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		rs, err := pq.Eval(ctx, rego.EvalInput(in))
		lat = append(lat, time.Since(start))
		if err != nil || len(rs) == 0 {
			b.Fatal(err)
		}
	}
	reportPercentiles(b, lat)
}

// BenchmarkPlainRegoParsedInput is the bare query with a pre-parsed input value, isolating
// evaluation cost from input conversion.
func BenchmarkPlainRegoParsedInput(b *testing.B) {
	e := loadLibrary(b)
	p := e.active.Load()
	in := exampleInput(b).ToValue()
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := p.query.Eval(ctx, rego.EvalParsedInput(in)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecideParallel measures throughput with every core evaluating.
func BenchmarkDecideParallel(b *testing.B) {
	e := loadLibrary(b)
	in := exampleInput(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := e.Decide(ctx, in); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

var _ ast.Value = ast.Null{}

func reportPercentiles(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) }
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
}

package jsonl

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/audit"
	"github.com/consentry/consentry/sidecar/decision"
	"github.com/consentry/consentry/sidecar/input"
)

// BenchmarkAppend encodes the example support-read input with a decision, as the pipeline
// logs every check.
func BenchmarkAppend(b *testing.B) {
	raw, err := os.ReadFile("../../../policies/examples/support-read.json")
	if err != nil {
		b.Fatal(err)
	}
	var in input.Input
	if err := json.Unmarshal(raw, &in); err != nil {
		b.Fatal(err)
	}
	d := &decision.Decision{Allow: true, Status: 200, Fields: map[string]decision.Field{}, Headers: map[string]string{"x-consentry-purpose": in.Purpose}}
	for _, f := range in.Resource.Fields {
		d.Fields[f] = decision.Field{Outcome: "allow", Category: "user.contact"}
	}
	s := New(io.Discard)
	e := &audit.Entry{DecisionID: "01JDQ3Z8W6K2V4M7R9T1X3C5B8", Timestamp: time.Now(), Path: "consentry/decision", Input: &in, Decision: d,
		Revision: "dev", Metrics: map[string]int64{"timer_rego_query_eval_ns": 1000}}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if err := s.Append(context.Background(), e); err != nil {
			b.Fatal(err)
		}
	}
}

package engine

import (
	"context"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/input"
)

// BenchmarkCompareLibraries evaluates the same inputs with two policy libraries loaded in one
// process, alternating decision by decision, and reports the ratio of their CPU medians
// (B/A). On a machine whose speed drifts by 2-3x within minutes, alternating is what makes a
// 5% difference visible: run against itself it agrees within 1-2.5%. Skipped unless both
// directories are given:
//
//	CONSENTRY_COMPARE_A=/tmp/old/policies CONSENTRY_COMPARE_B=policies \
//	  go test -run '^$' -bench CompareLibraries -benchtime 3000x ./sidecar/engine/
//
// The inputs are the example (the fast path), a customer reading their own record, and
// typical denials.
func BenchmarkCompareLibraries(b *testing.B) {
	dirA, dirB := os.Getenv("CONSENTRY_COMPARE_A"), os.Getenv("CONSENTRY_COMPARE_B")
	if dirA == "" || dirB == "" {
		b.Skip("set CONSENTRY_COMPARE_A and CONSENTRY_COMPARE_B to two policy directories")
	}
	engA, engB := loadLibraryFrom(b, dirA), loadLibraryFrom(b, dirB)
	variants := []struct {
		name   string
		modify func(*input.Input)
	}{
		{"allowed-read", func(*input.Input) {}},
		{"no-purpose", func(in *input.Input) { in.Purpose = "" }},
		{"role-not-allowed", func(in *input.Input) { in.Purpose = "marketing.communications.email" }},
		{"unauthenticated", func(in *input.Input) { in.Subject = input.Subject{} }},
		{"no-case", func(in *input.Input) { in.CaseID = "" }},
		{"customer-own-record", func(in *input.Input) {
			in.Subject = input.Subject{ID: "u-1001", Type: input.SubjectCustomer, CustomerID: in.Resource.CustomerID}
			in.Purpose, in.CaseID = "essential.service", ""
		}},
		{"consent-read", func(in *input.Input) {
			in.Purpose, in.Subject.Roles = "marketing.communications.email", []string{"marketing"}
		}},
		{"no-consent", func(in *input.Input) {
			in.Purpose, in.Subject.Roles = "marketing.communications.email", []string{"marketing"}
			in.Enrichment.Consents = in.Enrichment.Consents[1:]
		}},
	}
	ctx := context.Background()
	for _, v := range variants {
		b.Run(v.name, func(b *testing.B) {
			in := exampleInput(b)
			v.modify(in)
			ra, _ := engA.Decide(ctx, in)
			rb, _ := engB.Decide(ctx, in)
			if !reflect.DeepEqual(ra.Decision, rb.Decision) {
				b.Logf("note: the two libraries decide %s differently", v.name)
			}
			cpuA := make([]time.Duration, 0, b.N)
			cpuB := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				c0 := processCPU()
				_, _ = engA.Decide(ctx, in)
				c1 := processCPU()
				_, _ = engB.Decide(ctx, in)
				c2 := processCPU()
				cpuA, cpuB = append(cpuA, c1-c0), append(cpuB, c2-c1)
			}
			b.StopTimer()
			ma, mb := median(cpuA), median(cpuB)
			b.ReportMetric(float64(ma.Nanoseconds())/1e3, "A-cpu-p50-µs")
			b.ReportMetric(float64(mb.Nanoseconds())/1e3, "B-cpu-p50-µs")
			if ma > 0 {
				b.ReportMetric(float64(mb)/float64(ma), "B/A")
			}
		})
	}
}

package pipeline_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"reflect"
	"runtime"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/engine"
	"github.com/consentry/consentry/sidecar/pipeline"
)

// listOutcome is an allowed list request of a marketing employee, ready for DecideRecords.
func listOutcome(t *testing.T) *pipeline.Outcome {
	t.Helper()
	mkt := bearer(fx.Token("emp-30", "employee", []string{"marketing"}, nil))
	req := request("GET", "/api/customers?q=a", hdr{"authorization": mkt, "x-purpose": {marketing}})
	req.CanFulfil = []string{pipeline.ObligationFilterRecords, pipeline.ObligationMinimizeFields}
	out := fx.Pipeline.Check(context.Background(), req)
	if !out.Allowed() {
		t.Fatalf("list denied: %v", out.Decision.Reasons)
	}
	return out
}

// pageIDs is a page mixing the fixture's customers (opted in, withdrawn, erased, ...) with
// customers the state does not know.
func pageIDs(n int) []string {
	ids := []string{"c-1001", "c-2002", "c-3003", "c-4004"}
	for i := len(ids); i < n; i++ {
		ids = append(ids, fmt.Sprintf("c-x%03d", i))
	}
	return ids
}

// A page split into parallel evaluations gets, record for record, the decision of one
// evaluation of the whole page.
func TestDecideRecordsSplitMatchesOneEvaluation(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
	out := listOutcome(t)
	one, err := fx.WithConfig(pipeline.Config{RecordsPerEvaluation: -1})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ per, page int }{{1, 4}, {2, 9}, {3, 40}, {50, 100}, {50, 51}, {50, 50}} {
		t.Run(fmt.Sprintf("per=%d,page=%d", tc.per, tc.page), func(t *testing.T) {
			split, err := fx.WithConfig(pipeline.Config{RecordsPerEvaluation: tc.per})
			if err != nil {
				t.Fatal(err)
			}
			ids := pageIDs(tc.page)
			want, err := one.DecideRecords(context.Background(), out, ids)
			if err != nil {
				t.Fatal(err)
			}
			got, err := split.DecideRecords(context.Background(), out, ids)
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Records) != tc.page {
				t.Fatalf("%d records decided, want %d", len(got.Records), tc.page)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("split decision differs from one evaluation:\n got %+v\nwant %+v", got, want)
			}
			allowed := 0
			for _, r := range got.Records {
				if r.Allow {
					allowed++
				}
			}
			if allowed == 0 || allowed == tc.page {
				t.Fatalf("page not mixed: %d of %d allowed", allowed, tc.page)
			}
		})
	}
}

// pagePolicy makes the request-level decision depend on the whole page (deny when c-1001 is
// on it): a policy the split must not change.
const pagePolicy = `package consentry

_rec(_, allow) := {"allow": true, "reasons": [], "fields": {}, "key_scopes": []} if allow
else := {"allow": false, "reasons": [{"code": "page.has_c1001", "message": "c-1001 is on the page"}]}

_ok if not _has_c1001

_has_c1001 if {
	some r in input.records
	r.customer_id == "c-1001"
}

decision := {"allow": true, "status": 200, "reasons": [], "fields": {}, "key_scopes": [], "obligations": [], "headers": {}, "flags": [], "records": {r.customer_id: _rec(r, true) | some r in input.records}} if _ok

else := {"allow": false, "status": 403, "reasons": [{"code": "page.has_c1001", "message": "c-1001 is on the page"}], "fields": {}, "key_scopes": [], "obligations": [], "headers": {}, "flags": [], "records": {r.customer_id: _rec(r, false) | some r in input.records}}
`

// Slices that disagree on the request-level decision fall back to one evaluation: with the
// page policy every record is denied, although the slice without c-1001 alone would allow.
func TestDecideRecordsSplitFallsBackWhenSlicesDisagree(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
	out := listOutcome(t)
	p := slicedPipeline(t, pagePolicy)
	d, err := p.DecideRecords(context.Background(), out, pageIDs(8))
	if err != nil {
		t.Fatal(err)
	}
	if d.Allow || len(d.Records) != 8 {
		t.Fatalf("page decision allow=%v with %d records, want a deny of all 8", d.Allow, len(d.Records))
	}
	for id, r := range maps.All(d.Records) {
		if r.Allow {
			t.Fatalf("record %s served although the page policy denies the page", id)
		}
	}
}

func TestRecordsPerEvaluationConfig(t *testing.T) {
	if got := (pipeline.Config{}).WithDefaults().RecordsPerEvaluation; got != pipeline.DefaultRecordsPerEvaluation {
		t.Fatalf("default records_per_evaluation = %d", got)
	}
	for v, ok := range map[int]bool{-2: false, -1: true, 1: true, 500: true} {
		err := (pipeline.Config{RecordsPerEvaluation: v}).WithDefaults().Validate()
		if (err == nil) != ok {
			t.Errorf("records_per_evaluation %d: Validate() = %v", v, err)
		}
	}
}

// countingPolicy allows every record and counts the page in a header: slices of different
// sizes agree on allow, status and reasons but not on the header. (Slices of equal size would
// agree: no check can tell such a policy from a record-independent one, which is why a
// page-dependent policy sets records_per_evaluation: -1.)
const countingPolicy = `package consentry

decision := {"allow": true, "status": 200, "reasons": [], "fields": {}, "key_scopes": [], "obligations": [], "headers": {"x-page-size": sprintf("%d", [count(input.records)])}, "flags": [], "records": {r.customer_id: {"allow": true, "reasons": [], "fields": {}, "key_scopes": []} | some r in input.records}}
`

func TestDecideRecordsSplitFallsBackWhenHeadersDiffer(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
	out := listOutcome(t)
	p := slicedPipeline(t, countingPolicy)
	// 7 records in slices of 2, 2, 2 and 1: the last slice counts 1, the others 2.
	d, err := p.DecideRecords(context.Background(), out, pageIDs(7))
	if err != nil {
		t.Fatal(err)
	}
	if got := d.Headers["x-page-size"]; got != "7" || len(d.Records) != 7 {
		t.Fatalf("x-page-size %q with %d records, want the whole page (7)", got, len(d.Records))
	}
}

// failingPolicy fails to evaluate (a strict built-in error) for any slice holding c-x006.
const failingPolicy = `package consentry

decision := {"allow": true, "status": 200, "reasons": [], "fields": {}, "key_scopes": [], "obligations": [], "headers": {}, "flags": [], "records": {r.customer_id: {"allow": true, "reasons": [], "fields": {}, "key_scopes": []} | some r in input.records; _n(r) == 0}}

_n(r) := to_number(r.customer_id) if r.customer_id == "c-x006"

else := 0
`

// One slice failing fails the page closed: every record denied, the error returned.
func TestDecideRecordsSplitFailsClosedWhenOneSliceFails(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
	out := listOutcome(t)
	p := slicedPipeline(t, failingPolicy)
	// Without c-x006 every slice evaluates.
	if d, err := p.DecideRecords(context.Background(), out, pageIDs(6)); err != nil || len(d.Records) != 6 || !d.Records["c-x005"].Allow {
		t.Fatalf("page without the failing record: %v, %+v", err, d)
	}
	d, err := p.DecideRecords(context.Background(), out, pageIDs(8))
	if err == nil {
		t.Fatal("a failed slice was not reported")
	}
	if d.Allow {
		t.Fatal("page allowed although a slice failed")
	}
	for id, r := range d.Records {
		if r.Allow {
			t.Fatalf("record %s served although a slice failed", id)
		}
	}
}

// slicedPipeline is a pipeline over the fixture's routes, identity and state that evaluates
// policy src and splits pages into slices of 2 records.
func slicedPipeline(t *testing.T, src string) *pipeline.Pipeline {
	t.Helper()
	eng := engine.New(engine.Config{Timeout: 5 * time.Second}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err := eng.Load(context.Background(), &engine.PolicySet{Modules: map[string]string{"page.rego": src}, Revision: "test"}); err != nil {
		t.Fatal(err)
	}
	p, err := pipeline.New(pipeline.Config{RecordsPerEvaluation: 2, Timeout: 5 * time.Second}, pipeline.Deps{Engine: eng, Routes: fx.Routes, Identity: fx.Identity, Enrich: fx.Enrich, Log: fx.Sink})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

package pipeline_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/consentry/consentry/sidecar/audit"
	"github.com/consentry/consentry/sidecar/auditlog"
	"github.com/consentry/consentry/sidecar/input"
	"github.com/consentry/consentry/sidecar/pipeline"
)

func TestChangesState(t *testing.T) {
	tests := []struct {
		method, action string
		want           bool
	}{
		{"GET", input.ActionRead, false},
		{"HEAD", input.ActionRead, false},
		{"OPTIONS", "", false},
		{"TRACE", "", false},
		{"GET", input.ActionList, false},
		{"POST", input.ActionCreate, true},
		{"PATCH", input.ActionUpdate, true},
		{"PUT", input.ActionUpdate, true},
		{"DELETE", input.ActionDelete, true},
		{"POST", input.ActionRead, true},  // an intent too many costs a record
		{"POST", input.ActionList, false}, // a search: its customers come with the response
		{"POST", input.ActionExport, false},
		{"GET", input.ActionErase, true},     // a route that writes whatever its method
		{"MERGE", input.ActionUpdate, true},  // OData
		{"PROPFIND", input.ActionRead, true}, // not a method HTTP defines as safe
	}
	for _, tt := range tests {
		out := &pipeline.Outcome{Input: &input.Input{Action: tt.action, Request: input.Request{Method: tt.method}}}
		if got := pipeline.ChangesState(out); got != tt.want {
			t.Errorf("%s %s: ChangesState = %v, want %v", tt.method, tt.action, got, tt.want)
		}
	}
	if pipeline.ChangesState(nil) || pipeline.ChangesState(&pipeline.Outcome{}) {
		t.Error("an outcome without input changes nothing")
	}
}

// TestRecordIntentWritesAheadOnce: an allowed write gets one intent before its decision, in the
// real decision log, with the write's key use and no status; the intent is the decision's
// record as it stood before the CRM answered. Reads, denials and repeated calls add nothing.
func TestRecordIntentWritesAheadOnce(t *testing.T) {
	p, lg, dir := auditlogPipeline(t)
	ctx := context.Background()
	agent := hdr{"authorization": bearer(fx.Agent()), "x-purpose": {support}, "x-case-id": {"case-7"}, "content-type": {"application/json"}}

	write := request("PATCH", "/api/customers/c-1001", agent)
	write.Body, write.BodyComplete = []byte(`{"contact":{"email":"a@example.test"}}`), true
	wout := p.Check(ctx, write)
	if !wout.Allowed() {
		t.Fatalf("write denied: %v", wout.Decision.ReasonCodes())
	}
	used := audit.Enforcement{KeyScopes: []string{"contact"}, FieldsReleased: []string{"contact.email"}}
	for i := 0; i < 2; i++ { // the second call is a no-op
		if err := p.RecordIntent(ctx, wout, used); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Record(ctx, wout, audit.Enforcement{Status: 200}); err != nil {
		t.Fatal(err)
	}
	if err := p.RecordIntent(ctx, wout, used); err != nil { // after the decision: nothing
		t.Fatal(err)
	}

	read := p.Check(ctx, request("GET", "/api/customers/c-1001", agent))
	denied := p.Check(ctx, request("DELETE", "/api/customers/c-1001", agent))
	if !read.Allowed() || denied.Allowed() {
		t.Fatalf("read allowed %v, delete allowed %v: the fixture changed", read.Allowed(), denied.Allowed())
	}
	for _, out := range []*pipeline.Outcome{read, denied} {
		if err := p.RecordIntent(ctx, out, audit.Enforcement{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := lg.Close(); err != nil {
		t.Fatal(err)
	}

	var types []string
	var intent, decision *auditlog.Event
	if err := auditlog.ScanEvents(dir, func(ev *auditlog.Event, _ []byte) error {
		if ev.Type == auditlog.TypeIntent || ev.Type == auditlog.TypeDecision {
			types = append(types, ev.Type+":"+ev.DecisionID)
		}
		switch {
		case ev.Type == auditlog.TypeIntent && ev.DecisionID == wout.DecisionID:
			intent = ev
		case ev.Type == auditlog.TypeDecision && ev.DecisionID == wout.DecisionID:
			decision = ev
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := []string{"intent:" + wout.DecisionID, "decision:" + wout.DecisionID}
	if len(types) != 2 || types[0] != want[0] || types[1] != want[1] {
		t.Fatalf("log holds %v, want %v (one intent, before its decision; nothing for the read and the denial)", types, want)
	}
	if intent.Status != 0 || decision.Status != 200 || intent.Outcome != "allow" {
		t.Errorf("intent status %d outcome %q, decision status %d", intent.Status, intent.Outcome, decision.Status)
	}
	if len(intent.KeyScopes) != 1 || intent.KeyScopes[0] != "contact" || intent.Customer == "" || intent.Customer != decision.Customer {
		t.Errorf("intent key scopes %v customer %q (decision's %q)", intent.KeyScopes, intent.Customer, decision.Customer)
	}
	if string(intent.Input) != string(decision.Input) || !jsonEqual(intent.Result, decision.Result) {
		t.Error("the intent does not carry the decision's input and result")
	}
}

func jsonEqual(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	ax, _ := json.Marshal(x)
	by, _ := json.Marshal(y)
	return string(ax) == string(by)
}

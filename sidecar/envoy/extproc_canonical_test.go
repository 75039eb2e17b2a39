package envoy_test

import (
	"bytes"
	"testing"

	"github.com/consentry/consentry/sidecar/normalize"
	"github.com/consentry/consentry/sidecar/pipeline"
	tt "github.com/consentry/consentry/sidecar/transform/transformtest"
)

// TestExtProcRefusesNonCanonicalPaths: Envoy sends the CRM the caller's :path, not the path
// the pipeline decided on, so a spelling decided as an allowed path but routed elsewhere by
// the CRM (a trailing slash, dot segments, needless escapes) is refused before the CRM with
// 400 request.path_non_canonical, reads and buffered writes alike, and logged.
func TestExtProcRefusesNonCanonicalPaths(t *testing.T) {
	capture := &tt.Capture{}
	e := tt.Start(t, tt.Options{Sink: capture})
	sim := &envoySim{client: startExtProc(t, e.Pipeline, e.Transformer), upstream: e.CRM, protocol: buffered}
	h := map[string]string{"authorization": "Bearer " + e.Agent(), "x-purpose": tt.Support, "x-case-id": "case-7"}
	tests := []struct{ method, path, body string }{
		{"GET", "/api/customers/c-1001/", ""},
		{"GET", "/api/customers/c-1001/notes/..", ""},
		{"GET", "//api/customers/c-1001", ""},
		{"GET", "/api/customers/c%2D1001", ""},
		{"PATCH", "/api/customers/c-1001/", `{"contact":{"phone":"+44 7"}}`},
	}
	for _, c := range tests {
		r := sim.do(t, c.method, c.path, h, c.body)
		if r.status != 400 || r.crmCalled || !bytes.Contains(r.body, []byte(normalize.ReasonPathNonCanonical)) {
			t.Errorf("%s %s: %d crm=%v %s", c.method, c.path, r.status, r.crmCalled, r.body)
			continue
		}
		en := capture.Find(r.header[pipeline.HeaderDecisionID])
		if en == nil || en.Decision.Allow || en.Decision.Reasons[0].Code != normalize.ReasonPathNonCanonical || en.Enforcement.Status != 400 {
			t.Errorf("%s %s: not logged as the deny it was: %+v", c.method, c.path, en)
		}
	}
	if r := sim.do(t, "GET", "/api/customers/c-1001?x=a%2Db", h, ""); r.status != 200 {
		t.Errorf("canonical path: %d %s", r.status, r.body)
	}
}

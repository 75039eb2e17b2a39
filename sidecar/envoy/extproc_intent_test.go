package envoy_test

import (
	"bytes"
	"net/http"
	"slices"
	"testing"

	"github.com/consentry/consentry/sidecar/pipeline"
	tt "github.com/consentry/consentry/sidecar/transform/transformtest"
)

// TestExtProcWriteAheadIntent: the answer that lets a write go on to the CRM is sent only
// once the write-ahead entry is in the log, with the write's key use; the decision's own entry
// waits for the CRM's answer. A read gets no intent. An intent that cannot be written stops
// the write with a 503 audit.unavailable instead of the encrypted body.
func TestExtProcWriteAheadIntent(t *testing.T) {
	sink := &tt.IntentCapture{}
	e := tt.Start(t, tt.Options{Sink: sink})
	client := startExtProc(t, e.Pipeline, e.Transformer)

	t.Run("write", func(t *testing.T) {
		send := stream(t, client)
		id := sendWrite(t, send, e, "+44 11")
		in := sink.FindIntent(id)
		if in == nil {
			t.Fatal("the encrypted body was released to the CRM before its intent was logged")
		}
		if !slices.Contains(in.Enforcement.KeyScopes, "contact") || in.Enforcement.Status != 0 {
			t.Errorf("intent key scopes %v status %d, want the contact key and no status yet", in.Enforcement.KeyScopes, in.Enforcement.Status)
		}
		if sink.Find(id) != nil {
			t.Error("the decision was logged before the CRM answered")
		}
		if r := send(respHeadersMsg(map[string]string{":status": "204"}, true)); r.GetImmediateResponse() != nil {
			t.Fatalf("204 refused: %v", r)
		}
		if d := sink.Find(id); d == nil || d.Enforcement.Status != 204 {
			t.Fatalf("decision entry %+v, want status 204", d)
		}
	})
	t.Run("read", func(t *testing.T) {
		send := stream(t, client)
		r := send(reqHeadersMsg(requestHeaders("GET", "/api/customers/c-1001", map[string]string{"authorization": "Bearer " + e.Agent(),
			"x-purpose": tt.Support, "x-case-id": "case-7"}), true))
		id := decisionIDOf(r.GetRequestHeaders().GetResponse().GetHeaderMutation())
		if id == "" {
			t.Fatalf("read not allowed: %v", r)
		}
		if sink.FindIntent(id) != nil {
			t.Fatal("a read got a write-ahead entry")
		}
	})
	t.Run("intent cannot be written", func(t *testing.T) {
		sink.FailIntents.Store(true)
		defer sink.FailIntents.Store(false)
		send := stream(t, client)
		h := requestHeaders("PATCH", "/api/customers/c-1001", map[string]string{"authorization": "Bearer " + e.Agent(),
			"x-purpose": tt.Support, "x-case-id": "case-7", "content-type": "application/json"})
		if r := send(reqHeadersMsg(h, false)); r.GetImmediateResponse() != nil {
			t.Fatalf("write refused on its headers: %v", r)
		}
		r := send(reqBodyMsg(`{"contact":{"phone":"+44 22"}}`))
		ir := r.GetImmediateResponse()
		if ir == nil || int(ir.GetStatus().GetCode()) != http.StatusServiceUnavailable || !bytes.Contains(ir.GetBody(), []byte(pipeline.ReasonAuditUnavailable)) {
			t.Fatalf("got %v, want a 503 %s instead of the body", r, pipeline.ReasonAuditUnavailable)
		}
	})
}

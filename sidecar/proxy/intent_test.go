package proxy_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/consentry/consentry/sidecar/pipeline"
	"github.com/consentry/consentry/sidecar/proxy"
	tt "github.com/consentry/consentry/sidecar/transform/transformtest"
)

// TestWriteAheadIntentBeforeTheCRM: a request that may change the CRM's state is in the
// decision log before the CRM sees it (checked by the CRM itself, at the moment the request
// arrives), carrying the write's key use; the decision's own entry follows with the CRM's
// status. Reads and denied requests get no intent. If the intent cannot be written, the CRM
// gets nothing and the caller a 503 audit.unavailable.
func TestWriteAheadIntentBeforeTheCRM(t *testing.T) {
	sink := &tt.IntentCapture{}
	e := tt.Start(t, tt.Options{Sink: sink})
	var (
		mu   sync.Mutex
		seen = map[string]bool{} // decision id -> its intent was logged when the CRM got it
		hits atomic.Int64
	)
	crm := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		id := r.Header.Get(pipeline.HeaderDecisionID)
		mu.Lock()
		seen[id] = sink.FindIntent(id) != nil
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"id":"c-1001","name":"Ada"}`))
	}))
	t.Cleanup(crm.Close)
	url := startProxy(t, proxy.Config{Upstream: crm.URL}, e.Pipeline, e.Transformer)

	cases := []struct {
		name, method, path, token, purpose, caseID, body string
		status                                           int
		intent                                           bool
		scopes                                           []string // the intent's key use
	}{
		{name: "update with an encrypted field", method: "PATCH", path: "/api/customers/c-1001", token: e.Agent(), purpose: tt.Support, caseID: "case-7",
			body: `{"contact":{"email":"new@example.test"}}`, status: 200, intent: true, scopes: []string{"contact"}},
		{name: "create a note", method: "POST", path: "/api/customers/c-1001/notes", token: e.Agent(), purpose: tt.Support, caseID: "case-7",
			body: `{"body":"called back"}`, status: 200, intent: true, scopes: []string{"notes"}},
		{name: "read", method: "GET", path: "/api/customers/c-1001", token: e.Agent(), purpose: tt.Support, caseID: "case-7", status: 200},
		{name: "denied delete", method: "DELETE", path: "/api/customers/c-1001", token: e.Agent(), purpose: tt.Support, caseID: "case-7", status: 403},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := do(t, c.method, url+c.path, c.token, c.purpose, c.caseID, c.body, nil)
			if r.status != c.status {
				t.Fatalf("status %d, want %d: %s", r.status, c.status, r.body)
			}
			id := r.header.Get(pipeline.HeaderDecisionID)
			final := sink.Find(id)
			if final == nil || final.Enforcement.Status != c.status {
				t.Fatalf("decision entry %+v, want one with status %d", final, c.status)
			}
			in := sink.FindIntent(id)
			if !c.intent {
				if in != nil {
					t.Fatalf("a %s got a write-ahead entry", c.name)
				}
				return
			}
			mu.Lock()
			before := seen[id]
			mu.Unlock()
			if !before {
				t.Fatal("the CRM received the request before its intent was in the decision log")
			}
			if in.Enforcement.Status != 0 || !in.Decision.Allow {
				t.Errorf("intent status %d allow %v: an intent has no CRM status yet and an allowed decision", in.Enforcement.Status, in.Decision.Allow)
			}
			if !slices.Equal(in.Enforcement.KeyScopes, c.scopes) {
				t.Errorf("intent key scopes %v, want %v", in.Enforcement.KeyScopes, c.scopes)
			}
			entries := sink.Entries()
			if slices.Index(entries, in) > slices.Index(entries, final) {
				t.Error("the intent was logged after its decision")
			}
		})
	}

	t.Run("intent cannot be written", func(t *testing.T) {
		sink.FailIntents.Store(true)
		defer sink.FailIntents.Store(false)
		before := hits.Load()
		r := do(t, "PATCH", url+"/api/customers/c-1001", e.Agent(), tt.Support, "case-7", `{"contact":{"email":"x@example.test"}}`, nil)
		if r.status != http.StatusServiceUnavailable || !bytes.Contains(r.body, []byte(pipeline.ReasonAuditUnavailable)) {
			t.Fatalf("%d %s, want 503 %s", r.status, r.body, pipeline.ReasonAuditUnavailable)
		}
		if hits.Load() != before {
			t.Fatal("the CRM got a write whose intent was not logged")
		}
		if bytes.Contains(r.body, []byte("x@example.test")) {
			t.Fatalf("the refusal echoes the plaintext: %s", r.body)
		}
	})
}

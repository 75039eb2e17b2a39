package envoy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/consentry/consentry/sidecar/envoy"
	"github.com/consentry/consentry/sidecar/pipeline"
	tt "github.com/consentry/consentry/sidecar/transform/transformtest"
)

func reqHeadersMsg(h map[string]string, eos bool) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{ProtocolConfig: buffered, Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: hdrs(h, eos)}}
}

func reqBodyMsg(b string) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: []byte(b), EndOfStream: true}}}
}

func respHeadersMsg(h map[string]string, eos bool) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: hdrs(h, eos)}}
}

func respBodyMsg(b []byte) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: b, EndOfStream: true}}}
}

// requestHeaders are a request's pseudo-headers plus extra.
func requestHeaders(method, path string, extra map[string]string) map[string]string {
	h := map[string]string{":method": method, ":path": path, ":authority": "crm.test", ":scheme": "http"}
	for k, v := range extra {
		h[k] = v
	}
	return h
}

// decisionIDOf is the decision id a header mutation sets.
func decisionIDOf(m *extprocv3.HeaderMutation) string {
	for _, s := range m.GetSetHeaders() {
		if s.GetHeader().GetKey() == pipeline.HeaderDecisionID {
			return string(s.GetHeader().GetRawValue())
		}
	}
	return ""
}

func logCount(c *tt.Capture, id string) int {
	n := 0
	for _, e := range c.Entries() {
		if e.DecisionID == id {
			n++
		}
	}
	return n
}

// waitLogged waits for id's entry: a stream that ends early is recorded as its handler ends.
func waitLogged(t *testing.T, c *tt.Capture, id string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); c.Find(id) == nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("decision %s never logged", id)
		}
	}
}

// sendWrite sends a support agent's phone update through a stream and returns the decision id
// of the encrypted write forwarded to the CRM.
func sendWrite(t *testing.T, send func(*extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse, e *tt.Env, phone string) string {
	t.Helper()
	h := requestHeaders("PATCH", "/api/customers/c-1001", map[string]string{"authorization": "Bearer " + e.Agent(),
		"x-purpose": tt.Support, "x-case-id": "case-7", "content-type": "application/json"})
	if r := send(reqHeadersMsg(h, false)); r.GetImmediateResponse() != nil {
		t.Fatalf("write refused on its headers: %v", r)
	}
	r := send(reqBodyMsg(`{"contact":{"phone":"` + phone + `"}}`))
	if r.GetImmediateResponse() != nil {
		t.Fatalf("write refused: %v", r)
	}
	if nb := r.GetRequestBody().GetResponse().GetBodyMutation().GetBody(); !bytes.Contains(nb, []byte("vault:v")) {
		t.Fatalf("write body not encrypted: %s", nb)
	}
	return decisionIDOf(r.GetRequestBody().GetResponse().GetHeaderMutation())
}

func checkWriteKeysLogged(t *testing.T, c *tt.Capture, id string) {
	t.Helper()
	enf := c.Find(id).Enforcement
	if !slices.Contains(enf.KeyScopes, "contact") || !slices.Contains(enf.FieldsReleased, "contact.phone") {
		t.Errorf("the write was encrypted with the contact key, but the log says key_scopes=%v fields_released=%v", enf.KeyScopes, enf.FieldsReleased)
	}
}

// TestExtProcWriteLogsItsKeysWhateverTheAnswer: the keys released to encrypt a write are in
// its decision log entry (as behind the proxy) when the CRM answers without a body (204 No
// Content, common for PATCH) and when the stream ends before the CRM answers (Envoy resets it:
// the caller went away while the CRM stored the ciphertext): then in its write-ahead intent,
// with no decision record claiming an outcome nobody saw.
func TestExtProcWriteLogsItsKeysWhateverTheAnswer(t *testing.T) {
	capture := &tt.Capture{}
	e := tt.Start(t, tt.Options{Sink: capture})
	client := startExtProc(t, e.Pipeline, e.Transformer)

	t.Run("204 No Content", func(t *testing.T) {
		send := stream(t, client)
		id := sendWrite(t, send, e, "+44 99")
		if r := send(respHeadersMsg(map[string]string{":status": "204"}, true)); r.GetImmediateResponse() != nil {
			t.Fatalf("204 refused: %v", r)
		}
		if capture.Find(id) == nil {
			t.Fatal("not logged before the answer was released")
		}
		checkWriteKeysLogged(t, capture, id)
	})
	t.Run("stream reset", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		st, err := client.Process(ctx)
		if err != nil {
			t.Fatal(err)
		}
		send := func(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
			if err := st.Send(m); err != nil {
				t.Fatal(err)
			}
			r, err := st.Recv()
			if err != nil {
				t.Fatal(err)
			}
			return r
		}
		id := sendWrite(t, send, e, "+44 98")
		cancel()
		// The CRM's answer never came back: its outcome is unknown, so no decision record
		// claims one; the write-ahead intent, logged before the body went on, names the keys
		// and stays unresolved.
		time.Sleep(300 * time.Millisecond)
		if d := capture.Find(id); d != nil {
			t.Fatalf("a decision record (status %d) resolves a write whose outcome nobody saw", d.Enforcement.Status)
		}
		in := capture.FindIntent(id)
		if in == nil || !slices.Contains(in.Enforcement.KeyScopes, "contact") || !slices.Contains(in.Enforcement.FieldsReleased, "contact.phone") {
			t.Fatalf("the intent %+v does not name the write's keys", in)
		}
	})
}

// TestExtProcSecondRequestOnOneStream: one stream carries one HTTP request. A second
// request_headers (Envoy never sends one) is refused undecided (503), and the first request's
// outcome is logged exactly once, whether it was completed or only forwarded to the CRM.
func TestExtProcSecondRequestOnOneStream(t *testing.T) {
	capture := &tt.Capture{}
	e := tt.Start(t, tt.Options{Sink: capture})
	client := startExtProc(t, e.Pipeline, e.Transformer)
	agent := map[string]string{"authorization": "Bearer " + e.Agent(), "x-purpose": tt.Support, "x-case-id": "case-7"}
	stored, err := json.Marshal(e.Stored(t, "c-1001"))
	if err != nil {
		t.Fatal(err)
	}
	refused := func(t *testing.T, r *extprocv3.ProcessingResponse) {
		t.Helper()
		ir := r.GetImmediateResponse()
		if ir == nil || ir.GetStatus().GetCode() != 503 || ir.GetDetails() != envoy.ReasonExtProcInternal {
			t.Fatalf("second request on the stream answered %v, want a 503 %s", r, envoy.ReasonExtProcInternal)
		}
	}

	t.Run("after a completed request", func(t *testing.T) {
		send := stream(t, client)
		r := send(reqHeadersMsg(requestHeaders("GET", "/api/customers/c-1001", agent), true))
		first := decisionIDOf(r.GetRequestHeaders().GetResponse().GetHeaderMutation())
		send(respHeadersMsg(map[string]string{":status": "200", "content-type": "application/json"}, false))
		send(respBodyMsg(stored))
		before := len(capture.Entries())
		// No credentials: decided, it would be a 401 answered but never logged.
		refused(t, send(reqHeadersMsg(requestHeaders("GET", "/api/customers/c-1001", map[string]string{"x-purpose": tt.Support}), true)))
		if n := len(capture.Entries()) - before; n != 0 {
			t.Errorf("%d entries logged for a request that was not decided", n)
		}
		if n := logCount(capture, first); n != 1 {
			t.Errorf("first request logged %d times", n)
		}
	})
	t.Run("after a request forwarded to the CRM", func(t *testing.T) {
		send := stream(t, client)
		r := send(reqHeadersMsg(requestHeaders("GET", "/api/customers/c-1001", agent), true))
		first := decisionIDOf(r.GetRequestHeaders().GetResponse().GetHeaderMutation())
		if first == "" {
			t.Fatalf("first request not allowed: %v", r)
		}
		refused(t, send(reqHeadersMsg(requestHeaders("GET", "/api/customers/c-1001/notes", agent), true)))
		waitLogged(t, capture, first)
		if n := logCount(capture, first); n != 1 {
			t.Errorf("first request logged %d times", n)
		}
	})
}

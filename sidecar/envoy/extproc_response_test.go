package envoy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/consentry/consentry/sidecar/envoy"
	"github.com/consentry/consentry/sidecar/pipeline"
	tt "github.com/consentry/consentry/sidecar/transform/transformtest"
)

// TestExtProcRemovesCRMReservedResponseHeaders: the CRM cannot speak for consentry. Its own
// x-consentry-* response headers (any spelling) are removed on the way to the caller, as the
// proxy drops them, whether the response is transformed or settled on its headers; consentry's
// own decision id is set, not removed.
func TestExtProcRemovesCRMReservedResponseHeaders(t *testing.T) {
	e := tt.Start(t, tt.Options{})
	client := startExtProc(t, e.Pipeline, e.Transformer)
	agent := map[string]string{"authorization": "Bearer " + e.Agent(), "x-purpose": tt.Support, "x-case-id": "case-7"}
	crm := map[string]string{"x-consentry-withheld": "nothing", "x-consentry-fields": "payment.card_number,health.notes",
		"X_Consentry_Purpose": "billing", pipeline.HeaderDecisionID: "forged"}
	for _, c := range []struct {
		name   string
		status string
		eos    bool
	}{{"body follows", "200", false}, {"no body (204)", "204", true}} {
		t.Run(c.name, func(t *testing.T) {
			send := stream(t, client)
			send(reqHeadersMsg(requestHeaders("GET", "/api/customers/c-1001", agent), true))
			h := map[string]string{":status": c.status, "content-type": "application/json"}
			for k, v := range crm {
				h[k] = v
			}
			r := send(respHeadersMsg(h, c.eos))
			mut := r.GetResponseHeaders().GetResponse().GetHeaderMutation()
			for _, k := range []string{"x-consentry-withheld", "x-consentry-fields", "x_consentry_purpose"} {
				if !slices.Contains(mut.GetRemoveHeaders(), k) {
					t.Errorf("the CRM's %s reaches the caller (removed=%v)", k, mut.GetRemoveHeaders())
				}
			}
			if id := decisionIDOf(mut); id == "" || id == "forged" {
				t.Errorf("decision id set to %q", id)
			}
		})
	}
}

// TestExtProcEnvoyLocalReplies: Envoy's own answers when the CRM fails (504 upstream request
// timeout, 503 no healthy upstream; text/plain) carry no record. On a JSON route they become
// the proxy's upstream errors with their status, not 502 response.not_json; recorded with it.
func TestExtProcEnvoyLocalReplies(t *testing.T) {
	capture := &tt.Capture{}
	e := tt.Start(t, tt.Options{Sink: capture})
	client := startExtProc(t, e.Pipeline, e.Transformer)
	agent := map[string]string{"authorization": "Bearer " + e.Agent(), "x-purpose": tt.Support, "x-case-id": "case-7"}
	for _, c := range []struct {
		status uint32
		body   string
		code   string
	}{
		{504, "upstream request timeout", envoy.ReasonUpstreamTimeout},
		{503, "no healthy upstream", envoy.ReasonUpstreamDown},
		{502, "upstream connect error or disconnect/reset before headers", envoy.ReasonUpstreamDown},
		{404, "Not Found", envoy.ReasonUpstreamError},
	} {
		t.Run(c.body, func(t *testing.T) {
			send := stream(t, client)
			r := send(reqHeadersMsg(requestHeaders("GET", "/api/customers/c-1001", agent), true))
			id := decisionIDOf(r.GetRequestHeaders().GetResponse().GetHeaderMutation())
			send(respHeadersMsg(map[string]string{":status": strconv.Itoa(int(c.status)), "content-type": "text/plain"}, false))
			r = send(respBodyMsg([]byte(c.body)))
			ir := r.GetImmediateResponse()
			if ir == nil || uint32(ir.GetStatus().GetCode()) != c.status || ir.GetDetails() != c.code {
				t.Fatalf("answered %v, want %d %s", r, c.status, c.code)
			}
			var doc struct {
				DecisionID string                  `json:"decision_id"`
				Reasons    []struct{ Code string } `json:"reasons"`
			}
			if err := json.Unmarshal(ir.GetBody(), &doc); err != nil || doc.DecisionID != id || len(doc.Reasons) != 1 || doc.Reasons[0].Code != c.code {
				t.Errorf("body %s", ir.GetBody())
			}
			if ent := capture.Find(id); ent == nil || ent.Enforcement.Status != int(c.status) {
				t.Errorf("logged %+v, want status %d", ent, c.status)
			}
		})
	}
}

// TestExtProcBodyAtEnvoyBufferLimit: deploy/envoy buffers bodies up to 8 MiB
// (per_connection_buffer_limit_bytes). A buffered body at that limit comes in one ext_proc
// message, a little larger than the body: the listener's default message limit takes it
// (it was 8 MiB, and the stream failed with ResourceExhausted).
func TestExtProcBodyAtEnvoyBufferLimit(t *testing.T) {
	capture := &tt.Capture{}
	e := tt.Start(t, tt.Options{Sink: capture})
	client := startExtProc(t, e.Pipeline, e.Transformer)
	agent := map[string]string{"authorization": "Bearer " + e.Agent(), "x-purpose": tt.Support, "x-case-id": "case-7"}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := client.Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	exchange := func(m *extprocv3.ProcessingRequest) (*extprocv3.ProcessingResponse, error) {
		if err := st.Send(m); err != nil {
			return nil, err
		}
		return st.Recv()
	}
	r, err := exchange(reqHeadersMsg(requestHeaders("GET", "/api/customers/c-1001/notes", agent), true))
	if err != nil {
		t.Fatal(err)
	}
	id := decisionIDOf(r.GetRequestHeaders().GetResponse().GetHeaderMutation())
	if _, err := exchange(respHeadersMsg(map[string]string{":status": "200", "content-type": "application/json"}, false)); err != nil {
		t.Fatal(err)
	}
	const limit = 8 << 20
	prefix, suffix := `{"items":[],"total":0,"pad":"`, `"}`
	body := []byte(prefix + strings.Repeat("a", limit-len(prefix)-len(suffix)) + suffix)
	r, err = exchange(respBodyMsg(body))
	if err != nil {
		t.Fatalf("a %d-byte body (Envoy's buffer limit) failed the stream: %v", len(body), err)
	}
	if ir := r.GetImmediateResponse(); ir != nil {
		t.Fatalf("refused %d %s", ir.GetStatus().GetCode(), ir.GetBody())
	}
	if b := r.GetResponseBody().GetResponse().GetBodyMutation().GetBody(); b != nil && !bytes.Contains(b, []byte(`"items":[]`)) {
		t.Errorf("body changed to %.200s", b)
	}
	if ent := capture.Find(id); ent == nil || ent.Enforcement.Status != 200 {
		t.Errorf("logged %+v", ent)
	}
}

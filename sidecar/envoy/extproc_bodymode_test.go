package envoy_test

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/consentry/consentry/sidecar/envoy"
	"github.com/consentry/consentry/sidecar/pipeline"
	"github.com/consentry/consentry/sidecar/routes"
	tt "github.com/consentry/consentry/sidecar/transform/transformtest"
	"github.com/consentry/consentry/vaultkeys"
)

// A route map may declare a write on a method other than POST/PUT/PATCH (OData's MERGE, used
// by SAP C4C and Dynamics). Whether a request is a write follows its route's action: its body
// is decided on whole and encrypted before the CRM, and refused when Envoy does not buffer it.
func TestExtProcWriteOnAnyMethodDecidedOnWholeBody(t *testing.T) {
	e := tt.Start(t, tt.Options{})
	rm, err := routes.Parse([]byte(`
unlisted: drop
routes:
  - method: MERGE
    path: /api/customers/{customer_id}
    action: update
    resource: customer
    customer_param: customer_id
    body: json
    fields: [contact.phone]
    passthrough: [id, created_at, updated_at]
`))
	if err != nil {
		t.Fatal(err)
	}
	f := e.Fixture
	p, err := pipeline.New(pipeline.Config{Timeout: 5 * time.Second}, pipeline.Deps{Engine: f.Engine, Routes: rm, Identity: f.Identity, Enrich: f.Enrich, Log: &tt.Capture{}, Logger: f.Logger})
	if err != nil {
		t.Fatal(err)
	}
	client := startExtProc(t, p, e.Transformer)
	const (
		phone = `{"contact":{"phone":"+44 7"}}`
		card  = `{"contact":{"phone":"+44 7"},"payment":{"card_number":"4111111111111111"}}`
	)
	mode := func(m extprocfilterv3.ProcessingMode_BodySendMode) *extprocv3.ProtocolConfiguration {
		return &extprocv3.ProtocolConfiguration{RequestBodyMode: m, ResponseBodyMode: extprocfilterv3.ProcessingMode_BUFFERED}
	}
	const (
		refused   = "refused on headers"
		denied    = "denied on the body"
		encrypted = "encrypted body"
		// Methods are case-sensitive and Envoy forwards them as sent: "merge" is not MERGE.
		badMethod = "refused as an invalid method"
	)
	for _, c := range []struct {
		name     string
		method   string
		protocol *extprocv3.ProtocolConfiguration
		eos      bool // the body message ends the stream (false: request trailers follow)
		body     string
		want     string
	}{
		{"BUFFERED", "MERGE", buffered, true, phone, encrypted},
		{"BUFFERED with request trailers", "MERGE", buffered, false, phone, encrypted},
		{"BUFFERED with request trailers, forbidden field", "MERGE", buffered, false, card, denied},
		{"BUFFERED, forbidden field", "MERGE", buffered, true, card, denied},
		{"STREAMED", "MERGE", mode(extprocfilterv3.ProcessingMode_STREAMED), false, phone, refused},
		{"STREAMED, lowercase method", "merge", mode(extprocfilterv3.ProcessingMode_STREAMED), false, phone, badMethod},
		{"BUFFERED, lowercase method", "merge", buffered, false, phone, badMethod},
		{"BUFFERED_PARTIAL", "MERGE", mode(extprocfilterv3.ProcessingMode_BUFFERED_PARTIAL), true, phone, refused},
		{"NONE", "MERGE", mode(extprocfilterv3.ProcessingMode_NONE), true, phone, refused},
		{"no protocol_config", "MERGE", nil, true, phone, refused},
	} {
		t.Run(c.name, func(t *testing.T) {
			send := stream(t, client)
			h := map[string]string{":method": c.method, ":path": "/api/customers/c-1001", ":authority": "crm.test", ":scheme": "http",
				"content-type": "application/json", "authorization": "Bearer " + e.Agent(), "x-purpose": tt.Support, "x-case-id": "case-7"}
			resp := send(&extprocv3.ProcessingRequest{ProtocolConfig: c.protocol, Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: hdrs(h, false)}})
			ir := resp.GetImmediateResponse()
			if c.want == badMethod {
				if ir == nil || ir.GetStatus().GetCode() != 400 || ir.GetDetails() != "request.method_invalid" {
					t.Fatalf("a lowercase method was let through on its headers: %v", resp)
				}
				return
			}
			if c.want == refused {
				if ir == nil || ir.GetStatus().GetCode() != 503 || !bytes.Contains(ir.GetBody(), []byte(envoy.ReasonBodyNotBuffered)) {
					t.Fatalf("a write whose body is not buffered was let through on its headers: %v", resp)
				}
				return
			}
			if ir != nil || resp.GetRequestHeaders() == nil {
				t.Fatalf("a buffered write was decided before its body: %v", resp)
			}
			resp = send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: []byte(c.body), EndOfStream: c.eos}}})
			ir = resp.GetImmediateResponse()
			if c.want == denied {
				if ir == nil || ir.GetStatus().GetCode() < 400 || bytes.Contains(ir.GetBody(), []byte("4111111111111111")) {
					t.Fatalf("a forbidden field in a write body passed: %v", resp)
				}
				return
			}
			b := resp.GetRequestBody().GetResponse().GetBodyMutation().GetBody()
			var m struct {
				Contact struct {
					Phone string `json:"phone"`
				} `json:"contact"`
			}
			if ir != nil || json.Unmarshal(b, &m) != nil || !vaultkeys.IsCiphertext(m.Contact.Phone) {
				t.Fatalf("write body not encrypted before the CRM: mutation %q, response %v", b, resp)
			}
		})
	}
}

// When protocol_config says Envoy will not buffer the response body, a request whose
// response must be minimized is refused before the CRM runs it (and recorded): with
// response_header_mode SKIP consentry would never see the response at all.
func TestExtProcResponseBodyNotBufferedRefusedBeforeCRM(t *testing.T) {
	capture := &tt.Capture{}
	e := tt.Start(t, tt.Options{Sink: capture})
	client := startExtProc(t, e.Pipeline, e.Transformer)
	respMode := func(m extprocfilterv3.ProcessingMode_BodySendMode) *extprocv3.ProtocolConfiguration {
		return &extprocv3.ProtocolConfiguration{RequestBodyMode: extprocfilterv3.ProcessingMode_BUFFERED, ResponseBodyMode: m}
	}
	headers := func(method, path, tok, purpose, caseID string) map[string]string {
		h := map[string]string{":method": method, ":path": path, ":authority": "crm.test", ":scheme": "http",
			"authorization": "Bearer " + tok, "x-purpose": purpose}
		if caseID != "" {
			h["x-case-id"] = caseID
		}
		if method == "PATCH" {
			h["content-type"] = "application/json"
		}
		return h
	}
	for _, c := range []struct {
		name     string
		protocol *extprocv3.ProtocolConfiguration
		headers  map[string]string
		body     string // a write's buffered body ("" : none)
		status   int    // the immediate response's status (0: none, the request goes on)
		code     string
	}{
		{"read, response NONE", respMode(extprocfilterv3.ProcessingMode_NONE), headers("GET", "/api/customers/c-1001", e.Agent(), tt.Support, "case-7"), "", 502, envoy.ReasonBodyNotBuffered},
		{"read, response STREAMED", respMode(extprocfilterv3.ProcessingMode_STREAMED), headers("GET", "/api/customers/c-1001", e.Agent(), tt.Support, "case-7"), "", 502, envoy.ReasonBodyNotBuffered},
		{"read, response BUFFERED_PARTIAL", respMode(extprocfilterv3.ProcessingMode_BUFFERED_PARTIAL), headers("GET", "/api/customers/c-1001", e.Agent(), tt.Support, "case-7"), "", 502, envoy.ReasonBodyNotBuffered},
		{"write, response NONE", respMode(extprocfilterv3.ProcessingMode_NONE), headers("PATCH", "/api/customers/c-1001", e.Agent(), tt.Support, "case-7"), `{"contact":{"phone":"+44 8"}}`, 502, envoy.ReasonBodyNotBuffered},
		{"a deny stays the decision's", respMode(extprocfilterv3.ProcessingMode_NONE), headers("GET", "/api/customers/c-3003", e.Marketer(), tt.Marketing, ""), "", 451, ""},
		{"read, response BUFFERED", buffered, headers("GET", "/api/customers/c-1001", e.Agent(), tt.Support, "case-7"), "", 0, ""},
		// Without protocol_config the mode is unknown: decided on headers, refused when the
		// response headers come (TestExtProc).
		{"read, no protocol_config", nil, headers("GET", "/api/customers/c-1001", e.Agent(), tt.Support, "case-7"), "", 0, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			send := stream(t, client)
			resp := send(&extprocv3.ProcessingRequest{ProtocolConfig: c.protocol, Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: hdrs(c.headers, c.body == "")}})
			if c.body != "" && resp.GetImmediateResponse() == nil {
				resp = send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: []byte(c.body), EndOfStream: true}}})
			}
			ir := resp.GetImmediateResponse()
			if c.status == 0 {
				if ir != nil {
					t.Fatalf("refused: %v", resp)
				}
				return
			}
			if ir == nil || int(ir.GetStatus().GetCode()) != c.status || !bytes.Contains(ir.GetBody(), []byte(c.code)) {
				t.Fatalf("want an immediate %d %s before the CRM, got %v", c.status, c.code, resp)
			}
			h := map[string]string{}
			applyMutation(h, ir.GetHeaders())
			entry := capture.Find(h[pipeline.HeaderDecisionID])
			if entry == nil || entry.Enforcement.Status != c.status {
				t.Fatalf("not recorded with status %d: %+v", c.status, entry)
			}
		})
	}
}

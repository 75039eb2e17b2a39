package envoy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/consentry/consentry/sidecar/envoy"
	"github.com/consentry/consentry/sidecar/pipeline"
	"github.com/consentry/consentry/sidecar/transform"
	tt "github.com/consentry/consentry/sidecar/transform/transformtest"
	"github.com/consentry/consentry/vaultkeys"
)

// envoySim plays Envoy's ext_proc filter (request headers, buffered request body, response
// headers, buffered response body) against a real gRPC server, and the CRM call in between.
type envoySim struct {
	client   extprocv3.ExternalProcessorClient
	upstream string
	protocol *extprocv3.ProtocolConfiguration
	// trailers sends the buffered request body with end_of_stream false, as Envoy does when
	// request trailers follow (request_trailer_mode SKIP: the trailers are not sent).
	trailers bool
	// respTrailers sends the buffered response body with end_of_stream false, as Envoy does
	// when the CRM's response has trailers.
	respTrailers bool
}

type simResult struct {
	status int
	header map[string]string
	body   []byte
	// crmCalled says whether the request reached the CRM.
	crmCalled bool
}

func startExtProc(t testing.TB, p *pipeline.Pipeline, tr *transform.Transformer) extprocv3.ExternalProcessorClient {
	t.Helper()
	gs, _, err := envoy.NewGRPCServer(envoy.Config{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	envoy.NewExtProc(p, tr, nil).Register(gs)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return extprocv3.NewExternalProcessorClient(conn)
}

func hdrs(kv map[string]string, eos bool) *extprocv3.HttpHeaders {
	hm := &corev3.HeaderMap{}
	keys := make([]string, 0, len(kv))
	for k := range kv {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: k, RawValue: []byte(kv[k])})
	}
	return &extprocv3.HttpHeaders{Headers: hm, EndOfStream: eos}
}

func applyMutation(h map[string]string, m *extprocv3.HeaderMutation) {
	for _, r := range m.GetRemoveHeaders() {
		delete(h, strings.ToLower(r))
	}
	for _, s := range m.GetSetHeaders() {
		h[strings.ToLower(s.GetHeader().GetKey())] = string(s.GetHeader().GetRawValue())
	}
}

func immediateResult(ir *extprocv3.ImmediateResponse, crm bool) simResult {
	h := map[string]string{}
	applyMutation(h, ir.GetHeaders())
	return simResult{status: int(ir.GetStatus().GetCode()), header: h, body: ir.GetBody(), crmCalled: crm}
}

func (s *envoySim) do(t *testing.T, method, path string, reqHeaders map[string]string, body string) simResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := s.client.Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer st.CloseSend()
	h := map[string]string{":method": method, ":path": path, ":authority": "crm.test", ":scheme": "http"}
	if body != "" {
		h["content-type"] = "application/json"
	}
	for k, v := range reqHeaders {
		h[strings.ToLower(k)] = v
	}
	exchange := func(req *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
		if err := st.Send(req); err != nil {
			t.Fatal(err)
		}
		resp, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	resp := exchange(&extprocv3.ProcessingRequest{ProtocolConfig: s.protocol,
		Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: hdrs(h, body == "")}})
	if ir := resp.GetImmediateResponse(); ir != nil {
		return immediateResult(ir, false)
	}
	applyMutation(h, resp.GetRequestHeaders().GetResponse().GetHeaderMutation())
	reqBody := []byte(body)
	if body != "" {
		resp = exchange(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: reqBody, EndOfStream: !s.trailers}}})
		if ir := resp.GetImmediateResponse(); ir != nil {
			return immediateResult(ir, false)
		}
		cr := resp.GetRequestBody().GetResponse()
		applyMutation(h, cr.GetHeaderMutation())
		if b := cr.GetBodyMutation().GetBody(); b != nil {
			reqBody = b
		}
	}
	// The CRM call Envoy would make.
	req, _ := http.NewRequest(method, s.upstream+path, bytes.NewReader(reqBody))
	for k, v := range h {
		if !strings.HasPrefix(k, ":") && k != "content-length" {
			req.Header.Set(k, v)
		}
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	upBody, _ := io.ReadAll(res.Body)
	res.Body.Close()
	rh := map[string]string{":status": strconv.Itoa(res.StatusCode)}
	for k := range res.Header {
		rh[strings.ToLower(k)] = res.Header.Get(k)
	}
	resp = exchange(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: hdrs(rh, len(upBody) == 0)}})
	if ir := resp.GetImmediateResponse(); ir != nil {
		return immediateResult(ir, true)
	}
	applyMutation(rh, resp.GetResponseHeaders().GetResponse().GetHeaderMutation())
	out := upBody
	if len(upBody) > 0 {
		resp = exchange(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: upBody, EndOfStream: !s.respTrailers}}})
		if ir := resp.GetImmediateResponse(); ir != nil {
			return immediateResult(ir, true)
		}
		cr := resp.GetResponseBody().GetResponse()
		applyMutation(rh, cr.GetHeaderMutation())
		if b := cr.GetBodyMutation().GetBody(); b != nil {
			out = b
		}
	}
	status, _ := strconv.Atoi(rh[":status"])
	return simResult{status: status, header: rh, body: out, crmCalled: true}
}

var buffered = &extprocv3.ProtocolConfiguration{RequestBodyMode: extprocfilterv3.ProcessingMode_BUFFERED, ResponseBodyMode: extprocfilterv3.ProcessingMode_BUFFERED}

func TestExtProc(t *testing.T) {
	capture := &tt.Capture{}
	e := tt.Start(t, tt.Options{ListCustomers: 10, Sink: capture})
	sim := &envoySim{client: startExtProc(t, e.Pipeline, e.Transformer), upstream: e.CRM, protocol: buffered}
	ada := e.Plain["c-1001"]
	auth := func(tok, purpose, caseID string) map[string]string {
		h := map[string]string{"authorization": "Bearer " + tok, "x-purpose": purpose}
		if caseID != "" {
			h["x-case-id"] = caseID
		}
		return h
	}

	t.Run("support read decrypts, masks and drops", func(t *testing.T) {
		r := sim.do(t, "GET", "/api/customers/c-1001", auth(e.Agent(), tt.Support, "case-7"), "")
		if r.status != 200 {
			t.Fatalf("%d %s", r.status, r.body)
		}
		var m map[string]any
		if err := json.Unmarshal(r.body, &m); err != nil {
			t.Fatal(err)
		}
		if m["contact"].(map[string]any)["email"] != ada.Contact.Email || m["date_of_birth"] != "1815" || m["payment"] != nil && len(m["payment"].(map[string]any)) > 0 {
			t.Fatalf("body %s", r.body)
		}
		if bytes.Contains(r.body, []byte("vault:v")) {
			t.Fatal("ciphertext passed")
		}
		enf := capture.Find(r.header[pipeline.HeaderDecisionID]).Enforcement
		if enf.Status != 200 || !slices.Contains(enf.FieldsDropped, "payment.card_number") || !slices.Equal(enf.KeyScopes, []string{"contact", "identity"}) {
			t.Errorf("logged %+v", enf)
		}
	})

	t.Run("deny is an immediate response and never reaches the CRM", func(t *testing.T) {
		r := sim.do(t, "GET", "/api/customers/c-3003", auth(e.Marketer(), tt.Marketing, ""), "")
		if r.status != 451 || r.crmCalled || !bytes.Contains(r.body, []byte("consent.")) {
			t.Fatalf("%d crm=%v %s", r.status, r.crmCalled, r.body)
		}
		if capture.Find(r.header[pipeline.HeaderDecisionID]) == nil {
			t.Error("deny not logged")
		}
	})

	t.Run("list filtered per record, same as the proxy", func(t *testing.T) {
		r := sim.do(t, "GET", "/api/customers?page_size=100", auth(e.Marketer(), tt.Marketing, ""), "")
		var page struct{ Items []map[string]any }
		if err := json.Unmarshal(r.body, &page); err != nil {
			t.Fatalf("%d %s", r.status, r.body)
		}
		if len(page.Items) != 6 { // c-1001 and l-000, l-002, ... l-008
			t.Fatalf("%d records: %s", len(page.Items), r.body)
		}
		enf := capture.Find(r.header[pipeline.HeaderDecisionID]).Enforcement
		if enf.RecordsReturned != 6 || enf.RecordsFiltered != 7 {
			t.Errorf("logged %+v", enf)
		}
	})

	t.Run("write body encrypted before the CRM", func(t *testing.T) {
		r := sim.do(t, "PATCH", "/api/customers/c-1001", auth(e.Agent(), tt.Support, "case-7"), `{"contact":{"phone":"+44 1"}}`)
		if r.status != 200 {
			t.Fatalf("%d %s", r.status, r.body)
		}
		if p, _ := e.Stored(t, "c-1001")["contact"].(map[string]any)["phone"].(string); !vaultkeys.IsCiphertext(p) {
			t.Fatalf("stored %q", p)
		}
		var m map[string]any
		_ = json.Unmarshal(r.body, &m)
		if m["contact"].(map[string]any)["phone"] != "+44 1" {
			t.Errorf("response %s", r.body)
		}
	})

	t.Run("write of a forbidden field is 422 before the CRM", func(t *testing.T) {
		r := sim.do(t, "PATCH", "/api/customers/c-1001", auth(e.Agent(), tt.Support, "case-7"), `{"payment":{"card_number":"1"}}`)
		if r.status != 422 || r.crmCalled || !bytes.Contains(r.body, []byte("field.write_not_allowed")) {
			t.Fatalf("%d crm=%v %s", r.status, r.crmCalled, r.body)
		}
	})

	t.Run("response body not buffered fails closed", func(t *testing.T) {
		s2 := &envoySim{client: sim.client, upstream: e.CRM, protocol: &extprocv3.ProtocolConfiguration{RequestBodyMode: extprocfilterv3.ProcessingMode_BUFFERED}}
		r := s2.do(t, "GET", "/api/customers/c-1001", auth(e.Agent(), tt.Support, "case-7"), "")
		if r.status != 502 || !bytes.Contains(r.body, []byte(envoy.ReasonBodyNotBuffered)) || bytes.Contains(r.body, []byte("example.test")) {
			t.Fatalf("%d %s", r.status, r.body)
		}
	})

	t.Run("a buffered body followed by trailers is decided before the CRM", func(t *testing.T) {
		s2 := &envoySim{client: sim.client, upstream: e.CRM, protocol: buffered, trailers: true}
		r := s2.do(t, "PATCH", "/api/customers/c-1001", auth(e.Agent(), tt.Support, "case-7"), `{"payment":{"card_number":"4111111111111111"}}`)
		if r.status != 422 || r.crmCalled {
			t.Fatalf("forbidden field: %d crm=%v %s", r.status, r.crmCalled, r.body)
		}
		r = s2.do(t, "PATCH", "/api/customers/c-1001", map[string]string{"x-purpose": tt.Support}, `{"contact":{"phone":"+44 2"}}`)
		if r.status != 401 || r.crmCalled {
			t.Fatalf("no credentials: %d crm=%v %s", r.status, r.crmCalled, r.body)
		}
		r = s2.do(t, "PATCH", "/api/customers/c-1001", auth(e.Agent(), tt.Support, "case-7"), `{"contact":{"phone":"+44 3"}}`)
		if r.status != 200 {
			t.Fatalf("allowed write: %d %s", r.status, r.body)
		}
		if p, _ := e.Stored(t, "c-1001")["contact"].(map[string]any)["phone"].(string); !vaultkeys.IsCiphertext(p) {
			t.Fatalf("stored %q", p)
		}
	})

	t.Run("a buffered response body followed by trailers is enforced", func(t *testing.T) {
		s2 := &envoySim{client: sim.client, upstream: e.CRM, protocol: buffered, respTrailers: true}
		r := s2.do(t, "GET", "/api/customers/c-1001", auth(e.Agent(), tt.Support, "case-7"), "")
		if r.status != 200 || bytes.Contains(r.body, []byte("vault:v")) || !bytes.Contains(r.body, []byte(ada.Contact.Email)) {
			t.Fatalf("%d %s", r.status, r.body)
		}
		var m map[string]any
		if err := json.Unmarshal(r.body, &m); err != nil {
			t.Fatal(err)
		}
		if p, _ := m["payment"].(map[string]any); len(p) > 0 {
			t.Fatalf("payment released: %s", r.body)
		}
		if enf := capture.Find(r.header[pipeline.HeaderDecisionID]).Enforcement; !slices.Contains(enf.FieldsDropped, "payment.card_number") {
			t.Errorf("logged %+v", enf)
		}
	})

	t.Run("without protocol_config bodies are not trusted to be buffered", func(t *testing.T) {
		s2 := &envoySim{client: sim.client, upstream: e.CRM}
		r := s2.do(t, "GET", "/api/customers/c-1001", auth(e.Agent(), tt.Support, "case-7"), "")
		if r.status != 502 || !bytes.Contains(r.body, []byte(envoy.ReasonBodyNotBuffered)) {
			t.Fatalf("read: %d %s", r.status, r.body)
		}
		r = s2.do(t, "PATCH", "/api/customers/c-1001", auth(e.Agent(), tt.Support, "case-7"), `{"contact":{"phone":"+44 5"}}`)
		if r.status != 503 || r.crmCalled || !bytes.Contains(r.body, []byte(envoy.ReasonBodyNotBuffered)) {
			t.Fatalf("write: %d crm=%v %s", r.status, r.crmCalled, r.body)
		}
		r = s2.do(t, "GET", "/api/customers/c-3003", auth(e.Marketer(), tt.Marketing, ""), "")
		if r.status != 451 || r.crmCalled {
			t.Fatalf("a deny on headers still works: %d crm=%v", r.status, r.crmCalled)
		}
	})

	t.Run("body after the enforced one is cleared, body before its headers refused", func(t *testing.T) {
		h := map[string]string{":method": "GET", ":path": "/api/customers/c-1001", ":authority": "crm.test", ":scheme": "http"}
		for k, v := range auth(e.Agent(), tt.Support, "case-7") {
			h[k] = v
		}
		body := func(b string, eos bool) *extprocv3.ProcessingRequest {
			return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: []byte(b), EndOfStream: eos}}}
		}
		run := func(msgs ...*extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
			send := stream(t, sim.client)
			var resp *extprocv3.ProcessingResponse
			for _, m := range msgs {
				resp = send(m)
			}
			return resp
		}
		reqH := &extprocv3.ProcessingRequest{ProtocolConfig: buffered, Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: hdrs(h, true)}}
		respH := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: hdrs(map[string]string{":status": "200", "content-type": "application/json"}, false)}}
		resp := run(reqH, respH, body(`{"id":"c-1001","name":"Ada"}`, false), body(`,"payment":{"card_number":"4111111111111111"}}`, true))
		if !resp.GetResponseBody().GetResponse().GetBodyMutation().GetClearBody() {
			t.Fatalf("a second body message passed: %v", resp)
		}
		resp = run(reqH, body(`{"payment":{"card_number":"4111111111111111"}}`, true))
		if ir := resp.GetImmediateResponse(); ir == nil || ir.GetStatus().GetCode() != 503 {
			t.Fatalf("a body before the response headers: %v", resp)
		}
		// A lowercase method is refused before its body: Envoy forwards it as sent, and the
		// CRM need not run "patch" as the PATCH it would have been decided as.
		w := map[string]string{":method": "patch", ":path": "/api/customers/c-1001", ":authority": "crm.test", ":scheme": "http", "content-type": "application/json"}
		for k, v := range auth(e.Agent(), tt.Support, "case-7") {
			w[k] = v
		}
		resp = run(&extprocv3.ProcessingRequest{ProtocolConfig: buffered, Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: hdrs(w, false)}})
		if ir := resp.GetImmediateResponse(); ir == nil || ir.GetStatus().GetCode() != 400 || ir.GetDetails() != "request.method_invalid" {
			t.Fatalf("lowercase patch: %v", resp)
		}
	})

	t.Run("ranges and validators never reach the CRM or the caller", func(t *testing.T) {
		send := stream(t, sim.client)
		h := map[string]string{":method": "GET", ":path": "/api/customers/c-1001", ":authority": "crm.test", ":scheme": "http",
			"range": "bytes=53-70", "if_range": "x", "if-none-match": `"abc"`, "accept": "application/json", "accept-encoding": "gzip, br"}
		for k, v := range auth(e.Agent(), tt.Support, "case-7") {
			h[k] = v
		}
		resp := send(&extprocv3.ProcessingRequest{ProtocolConfig: buffered, Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: hdrs(h, true)}})
		removed := resp.GetRequestHeaders().GetResponse().GetHeaderMutation().GetRemoveHeaders()
		for _, k := range []string{"range", "if_range", "if-none-match"} {
			if !slices.Contains(removed, k) {
				t.Errorf("%s not removed before the CRM: %v", k, removed)
			}
		}
		if slices.Contains(removed, "accept") {
			t.Error("accept removed")
		}
		// A compressed answer could not be minimized: the CRM is asked for an identity encoding.
		identity := false
		for _, o := range resp.GetRequestHeaders().GetResponse().GetHeaderMutation().GetSetHeaders() {
			if o.GetHeader().GetKey() == "accept-encoding" && string(o.GetHeader().GetRawValue()) == "identity" &&
				o.GetAppendAction() == corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
				identity = true
			}
		}
		if !identity {
			t.Errorf("accept-encoding not set to identity: %v", resp.GetRequestHeaders().GetResponse().GetHeaderMutation().GetSetHeaders())
		}
		resp = send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: hdrs(map[string]string{
			":status": "206", "content-type": "application/json", "content-range": "bytes 53-70/200", "etag": `"v1"`, "digest": "sha-256=x"}, false)}})
		removed = resp.GetResponseHeaders().GetResponse().GetHeaderMutation().GetRemoveHeaders()
		for _, k := range []string{"content-length", "content-range", "etag", "digest"} {
			if !slices.Contains(removed, k) {
				t.Errorf("the CRM's %s would reach the caller: %v", k, removed)
			}
		}
		resp = send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: []byte(`"4111111111111111"`), EndOfStream: true}}})
		if ir := resp.GetImmediateResponse(); ir == nil || ir.GetStatus().GetCode() != 502 || !bytes.Contains(ir.GetBody(), []byte("response.partial")) {
			t.Fatalf("a partial response: %v", resp)
		}
	})

	t.Run("a write with a streamed request body is refused", func(t *testing.T) {
		for _, mode := range []extprocfilterv3.ProcessingMode_BodySendMode{extprocfilterv3.ProcessingMode_STREAMED, extprocfilterv3.ProcessingMode_BUFFERED_PARTIAL, extprocfilterv3.ProcessingMode_NONE} {
			s2 := &envoySim{client: sim.client, upstream: e.CRM, protocol: &extprocv3.ProtocolConfiguration{RequestBodyMode: mode, ResponseBodyMode: extprocfilterv3.ProcessingMode_BUFFERED}}
			r := s2.do(t, "PATCH", "/api/customers/c-1001", auth(e.Agent(), tt.Support, "case-7"), `{"contact":{"phone":"+44 4"}}`)
			if r.status != 503 || r.crmCalled || !bytes.Contains(r.body, []byte(envoy.ReasonBodyNotBuffered)) {
				t.Fatalf("%s: %d crm=%v %s", mode, r.status, r.crmCalled, r.body)
			}
		}
	})

	t.Run("nothing passes before a decision", func(t *testing.T) {
		h := map[string]string{":method": "PATCH", ":path": "/api/customers/c-1001", ":authority": "crm.test", ":scheme": "http"}
		for _, next := range []*extprocv3.ProcessingRequest{
			{Request: &extprocv3.ProcessingRequest_RequestTrailers{RequestTrailers: &extprocv3.HttpTrailers{}}},
			{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: hdrs(map[string]string{":status": "200"}, true)}},
		} {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			st, err := sim.client.Process(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for i, m := range []*extprocv3.ProcessingRequest{
				{ProtocolConfig: buffered, Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: hdrs(h, false)}}, next,
			} {
				if err := st.Send(m); err != nil {
					t.Fatal(err)
				}
				resp, err := st.Recv()
				if err != nil {
					t.Fatal(err)
				}
				if ir := resp.GetImmediateResponse(); (i == 1) != (ir != nil) || i == 1 && ir.GetStatus().GetCode() != 503 {
					t.Fatalf("%T, message %d: %v", next.GetRequest(), i, resp)
				}
			}
			cancel()
		}
	})

	t.Run("caller's reserved headers removed", func(t *testing.T) {
		h := auth(e.Agent(), tt.Support, "case-7")
		h["x-consentry-fields"] = "payment.card_number"
		r := sim.do(t, "GET", "/api/customers/c-1001/notes", h, "")
		if r.status != 200 || !bytes.Contains(r.body, []byte("called about the invoice")) {
			t.Fatalf("%d %s", r.status, r.body)
		}
		in := capture.Find(r.header[pipeline.HeaderDecisionID]).Input
		if _, ok := in.Request.Headers["x-consentry-fields"]; ok {
			t.Error("reserved header reached the input")
		}
	})
	_ = fmt.Sprint
}

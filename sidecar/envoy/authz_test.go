package envoy

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/consentry/consentry/sidecar/audit"
	"github.com/consentry/consentry/sidecar/pipeline"
	"github.com/consentry/consentry/sidecar/pipeline/pipelinetest"
)

var fx *pipelinetest.Fixture

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "envoy-test")
	if err != nil {
		panic(err)
	}
	fx, err = pipelinetest.New(dir, pipelinetest.Options{})
	if err != nil {
		panic(err)
	}
	code := m.Run()
	_ = fx.Close()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

const (
	support   = "essential.service.operations.support"
	marketing = "marketing.communications.email"
)

// serve starts an ext_authz server on a free loopback port and returns a connected client.
func serve(t testing.TB, cfg Config, checker Checker) authv3.AuthorizationClient {
	t.Helper()
	cfg.Listen = "127.0.0.1:0"
	s, err := New(cfg, checker, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ServeListener(ctx, ln) }()
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cc.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return authv3.NewAuthorizationClient(cc)
}

// checkRequest builds what Envoy sends: headers map (lowercase, repeated values joined).
func checkRequest(method, path string, headers map[string]string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "10.1.2.3", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 40000}}}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "req-42", Method: method, Path: path, Host: "crm.internal", Scheme: "http", Protocol: "HTTP/1.1", Headers: headers,
		}},
	}}
}

func call(t *testing.T, c authv3.AuthorizationClient, req *authv3.CheckRequest) *authv3.CheckResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.Check(ctx, req)
	if err != nil {
		t.Fatalf("Check returned a gRPC error (must always answer): %v", err)
	}
	return resp
}

type denied struct {
	status int
	body   struct {
		DecisionID string `json:"decision_id"`
		Reasons    []struct{ Code, Message string }
	}
	headers map[string]string
}

func asDenied(t *testing.T, resp *authv3.CheckResponse) *denied {
	t.Helper()
	d := resp.GetDeniedResponse()
	if d == nil || codes.Code(resp.GetStatus().GetCode()) == codes.OK {
		t.Fatalf("not denied: %v", resp)
	}
	out := &denied{status: int(d.GetStatus().GetCode()), headers: map[string]string{}}
	for _, h := range d.GetHeaders() {
		out.headers[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	if err := json.Unmarshal([]byte(d.GetBody()), &out.body); err != nil {
		t.Fatalf("deny body %q: %v", d.GetBody(), err)
	}
	if out.body.DecisionID == "" || out.headers[pipeline.HeaderDecisionID] != out.body.DecisionID || out.headers["content-type"] != "application/json" {
		t.Fatalf("deny without decision id: %+v", out)
	}
	if resp.GetDynamicMetadata().GetFields()["decision_id"].GetStringValue() != out.body.DecisionID {
		t.Fatalf("dynamic metadata: %v", resp.GetDynamicMetadata())
	}
	return out
}

func (d *denied) codes() []string {
	var out []string
	for _, r := range d.body.Reasons {
		out = append(out, r.Code)
	}
	return out
}

func TestAllowOverGRPC(t *testing.T) {
	c := serve(t, Config{}, fx.Pipeline)
	resp := call(t, c, checkRequest("GET", "/api/customers/c-1001?expand=notes", map[string]string{
		"authorization":           "Bearer " + fx.Agent(),
		"x-purpose":               support,
		"x-case-id":               "case-7",
		"x-consentry-decision-id": "spoofed",
		"x-consentry-trusted":     "yes",
		"x-real-ip":               "6.6.6.6",
		"x-forwarded-host":        "evil.example",
		":path":                   "/api/customers/c-1001?expand=notes",
	}))
	ok := resp.GetOkResponse()
	if codes.Code(resp.GetStatus().GetCode()) != codes.OK || ok == nil {
		t.Fatalf("not allowed: %v", resp)
	}
	set := map[string]string{}
	for _, h := range ok.GetHeaders() {
		if h.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
			t.Errorf("header %s is appended, not overwritten (spoofable)", h.GetHeader().GetKey())
		}
		set[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	id := set[pipeline.HeaderDecisionID]
	if id == "" || id == "spoofed" || set[pipeline.HeaderPurpose] != support || !strings.Contains(set[pipeline.HeaderFields], "contact.email") || strings.Contains(set[pipeline.HeaderFields], "payment.card_number") {
		t.Fatalf("upstream headers %v", set)
	}
	// Reserved headers, and client-address headers a caller could pose as another address with.
	if !slices.Equal(ok.GetHeadersToRemove(), []string{"x-consentry-trusted", "x-forwarded-host", "x-real-ip"}) {
		t.Fatalf("headers to remove %v", ok.GetHeadersToRemove())
	}
	md := resp.GetDynamicMetadata().GetFields()
	if md["decision_id"].GetStringValue() != id || !md["allow"].GetBoolValue() || md["fields"].GetStructValue().GetFields()["payment.card_number"].GetStringValue() != "deny" || md["route"].GetStringValue() != "GET /api/customers/{customer_id}" {
		t.Fatalf("metadata %v", md)
	}
	if len(ok.GetResponseHeadersToAdd()) != 1 || ok.GetResponseHeadersToAdd()[0].GetHeader().GetValue() != id {
		t.Fatalf("response headers %v", ok.GetResponseHeadersToAdd())
	}
}

func TestDenialsOverGRPC(t *testing.T) {
	c := serve(t, Config{}, fx.Pipeline)
	agent := "Bearer " + fx.Agent()
	mkt := "Bearer " + fx.Token("emp-30", "employee", []string{"marketing"}, nil)
	tests := []struct {
		name   string
		req    *authv3.CheckRequest
		status int
		code   string
		rpc    codes.Code
	}{
		{"no credential", checkRequest("GET", "/api/customers/c-1001", map[string]string{"x-purpose": support}), 401, "identity.credential_missing", codes.Unauthenticated},
		{"consent withdrawn", checkRequest("GET", "/api/customers/c-3003", map[string]string{"authorization": mkt, "x-purpose": marketing}), 451, "consent.withdrawn", codes.PermissionDenied},
		{"unknown route", checkRequest("GET", "/admin", map[string]string{"authorization": agent}), 403, "route.unknown", codes.PermissionDenied},
		// CVE-2026-26205: "//admin" must not be parsed as a host with path "/".
		{"double slash is a path", checkRequest("GET", "//admin", map[string]string{"authorization": agent}), 403, "route.unknown", codes.PermissionDenied},
		// CVE-2021-29492.
		{"encoded slash", checkRequest("GET", "/api/customers%2fc-1001", map[string]string{"authorization": agent}), 400, "request.path_encoded_separator", codes.PermissionDenied},
		// CVE-2021-32777: Envoy joins repeated headers with ","; joined purposes are ambiguous.
		{"joined purposes", checkRequest("GET", "/api/customers/c-1001", map[string]string{"authorization": agent, "x-purpose": support + "," + marketing, "x-case-id": "case-7"}), 400, "request.header_ambiguous", codes.PermissionDenied},
		{"list without response phase", checkRequest("GET", "/api/customers?page=1", map[string]string{"authorization": mkt, "x-purpose": marketing}), 403, "obligation.unsupported", codes.PermissionDenied},
		{"missing method", checkRequest("", "/api/customers", nil), 400, "request.method_invalid", codes.PermissionDenied},
		// Envoy forwards the method as sent: "get" is not decided as GET.
		{"lower-case method", checkRequest("get", "/api/customers/c-1001", map[string]string{"authorization": agent, "x-purpose": support, "x-case-id": "case-7"}), 400, "request.method_invalid", codes.PermissionDenied},
		{"empty request", &authv3.CheckRequest{}, 400, "request.method_invalid", codes.PermissionDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := call(t, c, tt.req)
			d := asDenied(t, resp)
			if d.status != tt.status || !slices.Contains(d.codes(), tt.code) || codes.Code(resp.GetStatus().GetCode()) != tt.rpc {
				t.Fatalf("status %d codes %v rpc %v; want %d %s %v", d.status, d.codes(), resp.GetStatus().GetCode(), tt.status, tt.code, tt.rpc)
			}
		})
	}
}

// headerMap builds Envoy's encode_raw_headers form: one entry per header line.
func headerMap(req *authv3.CheckRequest, kv ...string) *authv3.CheckRequest {
	hm := &corev3.HeaderMap{}
	for i := 0; i+1 < len(kv); i += 2 {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: kv[i], RawValue: []byte(kv[i+1])})
	}
	req.Attributes.Request.Http.Headers = nil
	req.Attributes.Request.Http.HeaderMap = hm
	return req
}

func TestRawHeaderMap(t *testing.T) {
	c := serve(t, Config{}, fx.Pipeline)
	agent := "Bearer " + fx.Agent()
	// CVE-2021-32777: with every value visible, the second x-purpose is not silently dropped.
	d := asDenied(t, call(t, c, headerMap(checkRequest("GET", "/api/customers/c-1001", nil),
		"authorization", agent, "x-purpose", support, "x-purpose", marketing, "x-case-id", "case-7")))
	if d.status != 400 || d.codes()[0] != "request.header_ambiguous" {
		t.Fatalf("repeated purpose: %d %v", d.status, d.codes())
	}
	// CVE-2023-27488: a non-UTF-8 value is a 400 deny, not a malformed message or a pass.
	d = asDenied(t, call(t, c, headerMap(checkRequest("GET", "/api/customers/c-1001", nil),
		"authorization", agent, "x-purpose", "sup\xffport", "x-case-id", "case-7")))
	if d.status != 400 || d.codes()[0] != "request.header_invalid_utf8" {
		t.Fatalf("non-utf8: %d %v", d.status, d.codes())
	}
	resp := call(t, c, headerMap(checkRequest("GET", "/api/customers/c-1001", nil),
		"authorization", agent, "x-purpose", support, "x-case-id", "case-7", "accept", "a/b", "accept", "c/d"))
	if resp.GetOkResponse() == nil {
		t.Fatalf("raw header map request denied: %v", resp)
	}
}

func TestBodies(t *testing.T) {
	c := serve(t, Config{}, fx.Pipeline)
	h := map[string]string{"authorization": "Bearer " + fx.Agent(), "x-purpose": support, "x-case-id": "case-7", "content-type": "application/json"}
	withBody := func(body string, extra map[string]string) *authv3.CheckRequest {
		hh := map[string]string{}
		for k, v := range h {
			hh[k] = v
		}
		for k, v := range extra {
			hh[k] = v
		}
		r := checkRequest("PATCH", "/api/customers/c-1001", hh)
		r.Attributes.Request.Http.RawBody = []byte(body)
		return r
	}
	if resp := call(t, c, withBody(`{"contact":{"email":"new@example.com"}}`, map[string]string{"content-length": "38"})); resp.GetOkResponse() == nil {
		t.Fatalf("allowed write denied: %v", resp.GetDeniedResponse().GetBody())
	}
	d := asDenied(t, call(t, c, withBody(`{"payment":{"card_number":"4111"}}`, nil)))
	if d.status != 422 || d.codes()[0] != "field.write_not_allowed" {
		t.Fatalf("forbidden write: %d %v", d.status, d.codes())
	}
	// A truncated body is not trusted: every field the route accepts is checked.
	d = asDenied(t, call(t, c, withBody(`{"contact":{"email":"new@exa`, map[string]string{"x-envoy-auth-partial-body": "true"})))
	if d.status != 422 {
		t.Fatalf("partial body: %d %v", d.status, d.codes())
	}
	// No body sent although the request has one (with_request_body off): same.
	d = asDenied(t, call(t, c, withBody("", map[string]string{"content-length": "120"})))
	if d.status != 422 {
		t.Fatalf("absent body: %d %v", d.status, d.codes())
	}
	// HTTP/2 makes content-length optional: a write that declares no length may still stream
	// a body, so it is not an empty write.
	h2 := withBody("", nil)
	h2.Attributes.Request.Http.Protocol = "HTTP/2"
	if d = asDenied(t, call(t, c, h2)); d.status != 422 {
		t.Fatalf("HTTP/2 write of unknown length: %d %v", d.status, d.codes())
	}
	if resp := call(t, c, withBody("", map[string]string{"content-length": "0"})); resp.GetOkResponse() == nil {
		t.Fatalf("an empty write (content-length: 0) denied: %v", resp.GetDeniedResponse().GetBody())
	}
	// A repeated key is refused: the proxy's transformer sees every occurrence, a map only the last.
	d = asDenied(t, call(t, c, withBody(`{"payment":{"card_number":"4111"},"payment":{}}`, nil)))
	if d.status != 400 || d.codes()[0] != "request.body_invalid" {
		t.Fatalf("repeated key: %d %v", d.status, d.codes())
	}
	// A JSON body sent as a form reaches a form-reading CRM as fields never checked.
	d = asDenied(t, call(t, c, withBody(`{"name":"Ann&payment[card_number]=4111&x="}`, map[string]string{"content-type": "application/x-www-form-urlencoded"})))
	if d.status != 415 || d.codes()[0] != "request.media_type" {
		t.Fatalf("form content type: %d %v", d.status, d.codes())
	}
}

func TestResponsePhaseDelegatesListFiltering(t *testing.T) {
	c := serve(t, Config{ResponsePhase: true}, fx.Pipeline)
	mkt := "Bearer " + fx.Token("emp-30", "employee", []string{"marketing"}, nil)
	resp := call(t, c, checkRequest("GET", "/api/customers?page=1", map[string]string{"authorization": mkt, "x-purpose": marketing}))
	if resp.GetOkResponse() == nil {
		t.Fatalf("list with ext_proc response phase denied: %s", resp.GetDeniedResponse().GetBody())
	}
}

type failingSink struct{}

func (failingSink) Append(context.Context, *audit.Entry) error { return errors.New("disk full") }

func TestDecisionLogDownDenies(t *testing.T) {
	f, err := pipelinetest.New(t.TempDir(), pipelinetest.Options{Sink: failingSink{}})
	if err != nil {
		t.Fatal(err)
	}
	c := serve(t, Config{}, f.Pipeline)
	d := asDenied(t, call(t, c, checkRequest("GET", "/api/customers/c-1001", map[string]string{"authorization": "Bearer " + f.Agent(), "x-purpose": support, "x-case-id": "case-7"})))
	if d.status != 503 || d.codes()[0] != pipeline.ReasonAuditUnavailable {
		t.Fatalf("decision log down: %d %v", d.status, d.codes())
	}
}

type panicking struct{}

func (panicking) Check(context.Context, *pipeline.Request) *pipeline.Outcome { panic("boom") }
func (panicking) Record(context.Context, *pipeline.Outcome, audit.Enforcement) error {
	return nil
}

func TestPanicIsADenyNotAnError(t *testing.T) {
	c := serve(t, Config{}, panicking{})
	d := asDeniedNoMeta(t, call(t, c, checkRequest("GET", "/", nil)))
	if d != 503 {
		t.Fatalf("status %d", d)
	}
}

func asDeniedNoMeta(t *testing.T, resp *authv3.CheckResponse) int {
	t.Helper()
	if resp.GetDeniedResponse() == nil {
		t.Fatalf("not denied: %v", resp)
	}
	return int(resp.GetDeniedResponse().GetStatus().GetCode())
}

func TestRequestFromCheck(t *testing.T) {
	r := RequestFromCheck(checkRequest("POST", "/x", map[string]string{"content-length": "0"}))
	if r.FrontDoor != FrontDoor || r.ID != "req-42" || r.Source.Address != "10.1.2.3:40000" || !r.BodyComplete || r.Body != nil {
		t.Fatalf("%+v", r)
	}
	r = RequestFromCheck(nil)
	if r.Method != "" || r.Target != "" {
		t.Fatalf("nil request: %+v", r)
	}
}

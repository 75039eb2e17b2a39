package pipeline_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/consentry/consentry/sidecar/audit"
	"github.com/consentry/consentry/sidecar/decision"
	"github.com/consentry/consentry/sidecar/engine"
	"github.com/consentry/consentry/sidecar/enrich"
	"github.com/consentry/consentry/sidecar/enrich/static"
	"github.com/consentry/consentry/sidecar/input"
	"github.com/consentry/consentry/sidecar/pipeline"
	"github.com/consentry/consentry/sidecar/pipeline/pipelinetest"
	"github.com/consentry/consentry/sidecar/routes"
)

var fx *pipelinetest.Fixture

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pipeline-test")
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
	billing   = "essential.service.payment_processing"
)

type hdr = map[string][]string

func request(method, target string, h hdr) *pipeline.Request {
	return &pipeline.Request{FrontDoor: "test", ID: "req-1", Method: method, Target: target, Host: "crm.test", Headers: h, Source: input.Source{Address: "10.0.0.1:5555"}}
}

func bearer(tok string) []string { return []string{"Bearer " + tok} }

func TestReasonCodes(t *testing.T) {
	agent := fx.Agent()
	lead := fx.Token("emp-5", "employee", []string{"support_lead"}, nil)
	mkt := fx.Token("emp-30", "employee", []string{"marketing"}, nil)
	expired := fx.Token("emp-17", "employee", []string{"support_agent"}, map[string]any{"exp": time.Now().Add(-time.Hour).Unix()})
	tests := []struct {
		name     string
		req      *pipeline.Request
		allow    bool
		status   int
		code     string // expected among the reasons
		mutate   func(*pipeline.Request)
		fulfil   []string
		wantPath string
	}{
		{name: "support read allowed", req: request("GET", "/api/customers/c-1001", hdr{"Authorization": bearer(agent), "X-Purpose": {support}, "X-Case-Id": {"case-7"}}), allow: true, status: 200},
		// CVE-2026-26205 class: "//api/..." is a path, normalized, not a host.
		{name: "leading double slash", req: request("GET", "//api//customers/c-1001", hdr{"authorization": bearer(agent), "x-purpose": {support}, "x-case-id": {"case-7"}}), allow: true, status: 200, wantPath: "/api/customers/c-1001"},
		// CVE-2021-29492 class.
		{name: "encoded slash", req: request("GET", "/api/customers%2Fc-1001", hdr{"authorization": bearer(agent), "x-purpose": {support}}), status: 400, code: "request.path_encoded_separator"},
		{name: "dot segments above root", req: request("GET", "/../api/customers/c-1001", hdr{"authorization": bearer(agent)}), status: 400, code: "request.path_non_canonical"},
		// CVE-2021-32777 class: two purposes are ambiguous, not "the last one".
		{name: "repeated purpose header", req: request("GET", "/api/customers/c-1001", hdr{"authorization": bearer(agent), "x-purpose": {support, marketing}, "x-case-id": {"case-7"}}), status: 400, code: "request.header_ambiguous"},
		{name: "comma-joined purpose", req: request("GET", "/api/customers/c-1001", hdr{"authorization": bearer(agent), "x-purpose": {support + "," + marketing}, "x-case-id": {"case-7"}}), status: 400, code: "request.header_ambiguous"},
		// CVE-2023-27488 class.
		{name: "non utf8 header", req: request("GET", "/api/customers/c-1001", hdr{"authorization": bearer(agent), "x-purpose": {"support\xc3"}}), status: 400, code: "request.header_invalid_utf8"},
		{name: "bad method", req: request("G ET", "/api/customers", hdr{}), status: 400, code: "request.method_invalid"},
		{name: "no credential", req: request("GET", "/api/customers/c-1001", hdr{"x-purpose": {support}}), status: 401, code: "identity.credential_missing"},
		{name: "expired token", req: request("GET", "/api/customers/c-1001", hdr{"authorization": bearer(expired), "x-purpose": {support}}), status: 401, code: "identity.token_expired"},
		{name: "two authorization headers", req: request("GET", "/api/customers/c-1001", hdr{"authorization": {"Bearer " + agent, "Bearer " + mkt}}), status: 401, code: "identity.credential_ambiguous"},
		{name: "unknown route unauthenticated is 401", req: request("GET", "/api/admin", hdr{}), status: 401, code: "identity.credential_missing"},
		{name: "unknown route", req: request("GET", "/api/admin", hdr{"authorization": bearer(agent)}), status: 403, code: "route.unknown"},
		{name: "unknown method on known path", req: request("PUT", "/api/customers/c-1001", hdr{"authorization": bearer(agent)}), status: 403, code: "route.unknown"},
		{name: "no purpose", req: request("GET", "/api/customers/c-1001", hdr{"authorization": bearer(agent), "x-case-id": {"case-7"}}), status: 403, code: "purpose.missing"},
		{name: "unknown purpose", req: request("GET", "/api/customers/c-1001", hdr{"authorization": bearer(agent), "x-purpose": {"spying"}}), status: 403, code: "purpose.unknown"},
		{name: "role not allowed for purpose", req: request("GET", "/api/customers/c-1001", hdr{"authorization": bearer(agent), "x-purpose": {marketing}}), status: 403, code: "role.purpose_not_allowed"},
		{name: "case missing", req: request("GET", "/api/customers/c-1001", hdr{"authorization": bearer(agent), "x-purpose": {support}}), status: 403, code: "case.missing"},
		{name: "case closed", req: request("GET", "/api/customers/c-1001", hdr{"authorization": bearer(agent), "x-purpose": {support}, "x-case-id": {"case-8"}}), status: 403, code: "case.closed"},
		{name: "case not assigned", req: request("GET", "/api/customers/c-3003", hdr{"authorization": bearer(agent), "x-purpose": {support}, "x-case-id": {"case-9"}}), status: 403, code: "case.not_assigned"},
		{name: "case of another customer", req: request("GET", "/api/customers/c-3003", hdr{"authorization": bearer(agent), "x-purpose": {support}, "x-case-id": {"case-7"}}), status: 403, code: "case.customer_mismatch"},
		{name: "case route binds the case's customer", req: request("GET", "/api/cases/case-7", hdr{"authorization": bearer(agent), "x-purpose": {support}}), allow: true, status: 200},
		{name: "case route of someone else's case", req: request("GET", "/api/cases/case-9", hdr{"authorization": bearer(agent), "x-purpose": {support}}), status: 403, code: "case.not_assigned"},
		// Without the case's customer no record check could run: never served to anyone.
		{name: "case route of a case consentry does not know", req: request("GET", "/api/cases/case-404", hdr{"authorization": bearer(agent), "x-purpose": {support}}), status: 403, code: "case.not_found"},
		{name: "case header contradicts path", req: request("GET", "/api/cases/case-7", hdr{"authorization": bearer(agent), "x-purpose": {support}, "x-case-id": {"case-8"}}), status: 400, code: "request.case_mismatch"},
		{name: "consent withdrawn", req: request("GET", "/api/customers/c-3003", hdr{"authorization": bearer(mkt), "x-purpose": {marketing}}), status: 451, code: "consent.withdrawn"},
		{name: "customer erased", req: request("GET", "/api/customers/c-2002", hdr{"authorization": bearer(mkt), "x-purpose": {marketing}}), status: 451, code: "customer.erased"},
		{name: "unknown customer", req: request("GET", "/api/customers/c-9999", hdr{"authorization": bearer(agent), "x-purpose": {support}, "x-case-id": {"case-7"}}), status: 403, code: "customer.unknown"},
		// ext_authz-style doors cannot drop plaintext fields the purpose does not allow.
		{name: "plaintext field needs response phase", req: request("GET", "/api/customers/c-1001", hdr{"authorization": bearer(mkt), "x-purpose": {marketing}}), status: 403, code: "obligation.unsupported"},
		{name: "response phase fulfils minimization", req: request("GET", "/api/customers/c-1001", hdr{"authorization": bearer(mkt), "x-purpose": {marketing}}), fulfil: []string{"minimize_fields"}, allow: true, status: 200},
		{name: "list needs record filtering", req: request("GET", "/api/customers?q=a", hdr{"authorization": bearer(mkt), "x-purpose": {marketing}}), fulfil: []string{"minimize_fields"}, status: 403, code: "obligation.unsupported"},
		{name: "list with a response phase", req: request("GET", "/api/customers?q=a", hdr{"authorization": bearer(mkt), "x-purpose": {marketing}}), fulfil: []string{"minimize_fields", "filter_records"}, allow: true, status: 200},
		{name: "write of a field the purpose forbids", req: request("PATCH", "/api/customers/c-1001", hdr{"authorization": bearer(agent), "x-purpose": {support}, "x-case-id": {"case-7"}, "content-type": {"application/json"}}),
			mutate: func(r *pipeline.Request) {
				r.Body, r.BodyComplete = []byte(`{"payment":{"card_number":"4111111111111111"}}`), true
			}, status: 422, code: "field.write_not_allowed"},
		{name: "write of allowed fields", req: request("PATCH", "/api/customers/c-1001", hdr{"authorization": bearer(agent), "x-purpose": {support}, "x-case-id": {"case-7"}, "content-type": {"application/json; charset=utf-8"}}),
			mutate: func(r *pipeline.Request) {
				r.Body, r.BodyComplete = []byte(`{"contact":{"email":"a@b.example"},"name":"Ann"}`), true
			}, allow: true, status: 200},
		{name: "write without the body assumes every field", req: request("PATCH", "/api/customers/c-1001", hdr{"authorization": bearer(agent), "x-purpose": {support}, "x-case-id": {"case-7"}, "content-type": {"application/json"}}), status: 422, code: "field.write_not_allowed"},
		{name: "write of an unknown field", req: request("PATCH", "/api/customers/c-1001", hdr{"authorization": bearer(agent), "x-purpose": {support}, "x-case-id": {"case-7"}, "content-type": {"application/json"}}),
			mutate: func(r *pipeline.Request) { r.Body, r.BodyComplete = []byte(`{"is_admin":true}`), true }, status: 422, code: "field.write_not_allowed"},
		{name: "body not json", req: request("PATCH", "/api/customers/c-1001", hdr{"authorization": bearer(agent), "x-purpose": {support}, "x-case-id": {"case-7"}, "content-type": {"application/json"}}),
			mutate: func(r *pipeline.Request) { r.Body, r.BodyComplete = []byte(`name=x`), true }, status: 400, code: "request.body_invalid"},
		// A JSON body the CRM would read as a form: payment[card_number] unchecked.
		{name: "json body sent as a form", req: request("PATCH", "/api/customers/c-1001", hdr{"authorization": bearer(agent), "x-purpose": {support}, "x-case-id": {"case-7"}, "content-type": {"application/x-www-form-urlencoded"}}),
			mutate: func(r *pipeline.Request) {
				r.Body, r.BodyComplete = []byte(`{"name":"Ann&payment[card_number]=4111111111111111&x="}`), true
			}, status: 415, code: "request.media_type"},
		{name: "write body without a content type", req: request("PATCH", "/api/customers/c-1001", hdr{"authorization": bearer(agent), "x-purpose": {support}, "x-case-id": {"case-7"}}),
			mutate: func(r *pipeline.Request) { r.Body, r.BodyComplete = []byte(`{"name":"Ann"}`), true }, status: 415, code: "request.media_type"},
		{name: "write of unknown length without a content type", req: request("PATCH", "/api/customers/c-1001", hdr{"authorization": bearer(agent), "x-purpose": {support}, "x-case-id": {"case-7"}}), status: 415, code: "request.media_type"},
		{name: "two content types", req: request("PATCH", "/api/customers/c-1001", hdr{"authorization": bearer(agent), "x-purpose": {support}, "x-case-id": {"case-7"}, "content-type": {"application/json", "text/plain"}}),
			mutate: func(r *pipeline.Request) { r.Body, r.BodyComplete = []byte(`{"name":"Ann"}`), true }, status: 400, code: "request.header_ambiguous"},
		{name: "a +json media type is JSON", req: request("PATCH", "/api/customers/c-1001", hdr{"authorization": bearer(agent), "x-purpose": {support}, "x-case-id": {"case-7"}, "content-type": {"application/merge-patch+json"}}),
			mutate: func(r *pipeline.Request) { r.Body, r.BodyComplete = []byte(`{"name":"Ann"}`), true }, allow: true, status: 200},
		{name: "an empty write needs no content type", req: request("PATCH", "/api/customers/c-1001", hdr{"authorization": bearer(agent), "x-purpose": {support}, "x-case-id": {"case-7"}}),
			mutate: func(r *pipeline.Request) { r.Body, r.BodyComplete = nil, true }, allow: true, status: 200},
		// Go keeps the last of two keys; a first-wins CRM would write the phone.
		{name: "repeated key", req: request("PATCH", "/api/customers/c-1001", hdr{"authorization": bearer(agent), "x-purpose": {support}, "x-case-id": {"case-7"}, "content-type": {"application/json"}}),
			mutate: func(r *pipeline.Request) {
				r.Body, r.BodyComplete = []byte(`{"contact":{"phone":"+1 555"},"contact":{"email":"a@example.com"}}`), true
			}, status: 400, code: "request.body_invalid"},
		{name: "repeated key deep in an array", req: request("PATCH", "/api/customers/c-1001", hdr{"authorization": bearer(agent), "x-purpose": {support}, "x-case-id": {"case-7"}, "content-type": {"application/json"}}),
			mutate: func(r *pipeline.Request) {
				r.Body, r.BodyComplete = []byte(`{"name":"A","contact":{"x":[1,{"a":1,"b":[{}],"a":2}]}}`), true
			}, status: 400, code: "request.body_invalid"},
		{name: "same key in sibling objects is fine", req: request("PATCH", "/api/customers/c-1001", hdr{"authorization": bearer(agent), "x-purpose": {support}, "x-case-id": {"case-7"}, "content-type": {"application/json"}}),
			mutate: func(r *pipeline.Request) {
				r.Body, r.BodyComplete = []byte(`{"name":"A","contact":{"email":"a@example.com"},"x":{"name":"B","contact":[{"email":1},{"email":2}]}}`), true
			}, status: 422, code: "field.write_not_allowed"},
		{name: "note body maps through the prefix", req: request("POST", "/api/customers/c-1001/notes", hdr{"authorization": bearer(agent), "x-purpose": {support}, "x-case-id": {"case-7"}, "content-type": {"application/json"}}),
			mutate: func(r *pipeline.Request) { r.Body, r.BodyComplete = []byte(`{"body":"called back"}`), true }, allow: true, status: 200},
		{name: "break glass used", req: request("GET", "/api/customers/c-1001", hdr{"authorization": bearer(lead), "x-purpose": {support}, "x-break-glass": {"customer on the phone, system down"}}), allow: true, status: 200, code: "break_glass.used"},
		{name: "break glass not permitted", req: request("GET", "/api/customers/c-1001", hdr{"authorization": bearer(agent), "x-purpose": {support}, "x-break-glass": {"customer on the phone, system down"}}), status: 403, code: "break_glass.not_permitted"},
		{name: "mtls service", req: &pipeline.Request{FrontDoor: "test", Method: "GET", Target: "/api/customers/c-1001", Headers: hdr{"x-purpose": {billing}}, Source: input.Source{Principal: fx.SpiffeID}}, fulfil: []string{"minimize_fields"}, allow: true, status: 200},
		{name: "unknown mtls principal", req: &pipeline.Request{FrontDoor: "test", Method: "GET", Target: "/api/customers/c-1001", Headers: hdr{"x-purpose": {billing}}, Source: input.Source{Principal: "spiffe://demo.test/ns/x/sa/y"}}, status: 401, code: "identity.principal_unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.mutate != nil {
				tt.mutate(tt.req)
			}
			tt.req.CanFulfil = tt.fulfil
			out := fx.Pipeline.Check(context.Background(), tt.req)
			codes := out.Decision.ReasonCodes()
			if out.Allowed() != tt.allow || out.Status != tt.status || (tt.code != "" && !slices.Contains(codes, tt.code)) {
				t.Fatalf("allow=%v status=%d reasons=%v err=%v; want allow=%v status=%d code %q", out.Allowed(), out.Status, out.Decision.Reasons, out.Err, tt.allow, tt.status, tt.code)
			}
			if out.DecisionID == "" || out.Decision.ID != out.DecisionID || out.ResponseHeaders[pipeline.HeaderDecisionID] != out.DecisionID {
				t.Fatalf("decision id not propagated: %+v", out)
			}
			if tt.wantPath != "" && out.Input.Request.Path != tt.wantPath {
				t.Fatalf("path = %q, want %q", out.Input.Request.Path, tt.wantPath)
			}
			if !tt.allow {
				var body struct {
					DecisionID string `json:"decision_id"`
					Reasons    []struct{ Code, Message string }
				}
				if err := json.Unmarshal(out.Body, &body); err != nil || body.DecisionID != out.DecisionID || len(body.Reasons) == 0 {
					t.Fatalf("deny body %s: %v", out.Body, err)
				}
				if out.UpstreamHeaders != nil {
					t.Fatal("upstream headers on a deny")
				}
			}
			if err := fx.Pipeline.Record(context.Background(), out, audit.Enforcement{}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestAllowHeadersAndStripping(t *testing.T) {
	out := fx.Pipeline.Check(context.Background(), request("GET", "/api/customers/c-1001", hdr{
		"Authorization":           bearer(fx.Agent()),
		"Cookie":                  {"session=secret"},
		"X-Purpose":               {support},
		"X-Case-Id":               {"case-7"},
		"X-Consentry-Fields":      {"payment.card_number"},
		"X-Consentry-Decision-Id": {"forged"},
		"Accept":                  {"application/json", "text/plain"},
	}))
	if !out.Allowed() {
		t.Fatalf("denied: %v", out.Decision.Reasons)
	}
	h := out.Input.Request.Headers
	for _, gone := range []string{"authorization", "cookie", "x-consentry-fields", "x-consentry-decision-id"} {
		if _, ok := h[gone]; ok {
			t.Errorf("%s reached the policy input", gone)
		}
	}
	if !slices.Equal(h["accept"], []string{"application/json", "text/plain"}) {
		t.Errorf("multi-value header: %v", h["accept"])
	}
	if !slices.Equal(out.RemoveHeaders, []string{"x-consentry-decision-id", "x-consentry-fields"}) {
		t.Errorf("remove = %v", out.RemoveHeaders)
	}
	up := out.UpstreamHeaders
	if up[pipeline.HeaderDecisionID] != out.DecisionID || up[pipeline.HeaderPurpose] != support || strings.Contains(up[pipeline.HeaderFields], "payment.card_number") || !strings.Contains(up[pipeline.HeaderFields], "contact.email") {
		t.Errorf("upstream headers %v", up)
	}
	if out.Input.Subject.ID != "emp-17" || out.Input.Resource.CustomerID != "c-1001" || out.Input.Enrichment.Case == nil {
		t.Errorf("input %+v", out.Input)
	}
}

// failingSink is a decision log whose storage is down.
type failingSink struct{}

func (failingSink) Append(context.Context, *audit.Entry) error { return errors.New("disk full") }

func TestAuditUnavailableDenies(t *testing.T) {
	p, err := pipeline.New(slowCI, pipeline.Deps{Engine: fx.Engine, Routes: mustRoutes(t), Identity: fx.Identity, Enrich: brokenEnrich{}, Log: failingSink{}})
	if err != nil {
		t.Fatal(err)
	}
	out := p.CheckAndRecord(context.Background(), request("GET", "/api/customers/c-1001", hdr{"authorization": bearer(fx.Agent()), "x-purpose": {support}, "x-case-id": {"case-7"}}))
	if out.Allowed() || out.Status != 503 || out.Decision.Reasons[0].Code != pipeline.ReasonAuditUnavailable || out.UpstreamHeaders != nil {
		t.Fatalf("outcome %+v", out.Decision)
	}
}

// brokenEnrich is a state store that is down.
type brokenEnrich struct{}

func (brokenEnrich) Enrich(context.Context, enrich.Query) (input.Enrichment, error) {
	return input.Enrichment{}, errors.New("connection refused")
}
func (brokenEnrich) EnrichBatch(context.Context, enrich.Query, []string) (map[string]input.Enrichment, error) {
	return nil, errors.New("connection refused")
}

func mustRoutes(t *testing.T) *routes.Map {
	m, err := routes.Load(pipelinetest.RepoRoot() + "/deploy/routes/democrm.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestEnrichmentOutageDenies(t *testing.T) {
	p, err := pipeline.New(slowCI, pipeline.Deps{Engine: fx.Engine, Routes: mustRoutes(t), Identity: fx.Identity, Enrich: brokenEnrich{}, Log: fx.Sink})
	if err != nil {
		t.Fatal(err)
	}
	out := p.Check(context.Background(), request("GET", "/api/customers/c-1001", hdr{"authorization": bearer(fx.Agent()), "x-purpose": {support}, "x-case-id": {"case-7"}}))
	if out.Allowed() || out.Status != 503 || !slices.Contains(out.Decision.ReasonCodes(), "state.unavailable") {
		t.Fatalf("outcome %d %v", out.Status, out.Decision.Reasons)
	}
}

func TestEngineNotReadyAndPublicRoutes(t *testing.T) {
	rm, err := routes.Parse([]byte(`
routes:
  - {method: GET, path: /health, public: true}
  - {method: GET, path: "/api/customers/{customer_id}", action: read, resource: customer, customer_param: customer_id, fields: [id]}
`))
	if err != nil {
		t.Fatal(err)
	}
	p, err := pipeline.New(pipeline.Config{UnknownRouteStatus: 404, Timeout: slowCI.Timeout}, pipeline.Deps{Engine: engine.New(engine.Config{Timeout: slowCI.Timeout}, nil), Routes: rm, Identity: fx.Identity, Enrich: brokenEnrich{}, Log: fx.Sink})
	if err != nil {
		t.Fatal(err)
	}
	out := p.Check(context.Background(), request("GET", "/health", nil))
	if !out.Allowed() || out.Decision.Reasons[0].Code != pipeline.ReasonRoutePublic {
		t.Fatalf("public: %+v", out.Decision)
	}
	out = p.Check(context.Background(), request("GET", "/api/customers/c-1", hdr{"authorization": bearer(fx.Agent()), "x-purpose": {support}}))
	if out.Allowed() || out.Status != 503 || out.Decision.Reasons[0].Code != "engine.not_ready" {
		t.Fatalf("not ready: %d %+v", out.Status, out.Decision.Reasons)
	}
	out = p.Check(context.Background(), request("GET", "/nope", hdr{"authorization": bearer(fx.Agent())}))
	if out.Status != 404 || out.Decision.Reasons[0].Code != pipeline.ReasonRouteUnknown {
		t.Fatalf("unknown route status: %d", out.Status)
	}
}

func TestCancelledRequestIsStillLogged(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	out := fx.Pipeline.CheckAndRecord(ctx, request("GET", "/api/customers/c-1001", hdr{"authorization": bearer(fx.Agent()), "x-purpose": {support}, "x-case-id": {"case-7"}}))
	if out.Allowed() || out.Status != 503 {
		t.Fatalf("cancelled request: %d %v", out.Status, out.Decision.Reasons)
	}
	if !logged(t, out.DecisionID) {
		t.Fatal("cancelled request not in the decision log")
	}
}

func TestNilRequestAndDecisionIDs(t *testing.T) {
	out := fx.Pipeline.Check(context.Background(), nil)
	if out.Allowed() || out.Status != 400 || out.Input == nil {
		t.Fatalf("nil request: %+v", out)
	}
	ids := make([]string, 200)
	for i := range ids {
		ids[i] = pipeline.NewID(time.Unix(1700000000, int64(i)*int64(time.Millisecond)))
	}
	if !sort.StringsAreSorted(ids) {
		t.Fatal("ids not sortable by time")
	}
	seen := map[string]bool{}
	for i := 0; i < 10000; i++ {
		id := pipeline.NewID(time.Now())
		if len(id) != 26 || seen[id] {
			t.Fatalf("bad or duplicate id %q", id)
		}
		seen[id] = true
	}
}

func logged(t *testing.T, id string) bool {
	t.Helper()
	f, err := os.Open(fx.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var ev struct {
			DecisionID string          `json:"decision_id"`
			Input      json.RawMessage `json:"input"`
		}
		if json.Unmarshal(sc.Bytes(), &ev) == nil && ev.DecisionID == id {
			if strings.Contains(string(ev.Input), "Bearer") {
				t.Fatal("credential in the decision log")
			}
			return true
		}
	}
	return false
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []pipeline.Config{
		{UnknownRouteStatus: 500},
		{Headers: pipeline.HeaderConfig{Purpose: "x-consentry-purpose"}},
	} {
		if _, err := pipeline.New(c, pipeline.Deps{Engine: fx.Engine, Routes: mustRoutes(t), Identity: fx.Identity, Enrich: brokenEnrich{}, Log: fx.Sink}); err == nil {
			t.Errorf("config %+v accepted", c)
		}
	}
	if _, err := pipeline.New(slowCI, pipeline.Deps{Engine: fx.Engine, Routes: mustRoutes(t), Identity: fx.Identity, Enrich: brokenEnrich{}}); err == nil {
		t.Error("pipeline without a decision log accepted")
	}
}

func TestDecisionCache(t *testing.T) {
	// One token for all three requests, as a client sends: the key includes the verified
	// claims, and a token minted a second later has other iat/exp claims (a different input).
	tok := bearer(fx.Agent())
	h := func(reqID string) hdr {
		return hdr{"authorization": tok, "x-purpose": {support}, "x-case-id": {"case-7"}, "x-request-id": {reqID}}
	}
	first := fx.Pipeline.Check(context.Background(), request("GET", "/api/customers/c-1001/notes", h("a")))
	second := fx.Pipeline.Check(context.Background(), request("GET", "/api/customers/c-1001/notes", h("b")))
	if !first.Allowed() || !second.Allowed() || second.Metrics["decision_cache_hit"] != 1 || second.DecisionID == first.DecisionID || second.Decision.ID != second.DecisionID {
		t.Fatalf("second identical request: allow=%v metrics=%v", second.Allowed(), second.Metrics)
	}
	// A hit hands out its own copy.
	second.Decision.Fields["note.body"] = decision.Field{Outcome: "deny"}
	third := fx.Pipeline.Check(context.Background(), request("GET", "/api/customers/c-1001/notes", h("c")))
	if third.Decision.Fields["note.body"].Outcome != "allow" {
		t.Fatal("a caller's change leaked into the cache")
	}
}

func TestDecisionCacheSeesConsentChanges(t *testing.T) {
	path := t.TempDir() + "/state.yaml"
	if err := os.WriteFile(path, []byte(pipelinetest.State), 0o600); err != nil {
		t.Fatal(err)
	}
	enr, err := static.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	p, err := pipeline.New(slowCI, pipeline.Deps{Engine: fx.Engine, Routes: mustRoutes(t), Identity: fx.Identity, Enrich: enr, Log: fx.Sink})
	if err != nil {
		t.Fatal(err)
	}
	mkt := bearer(fx.Token("emp-30", "employee", []string{"marketing"}, nil))
	req := func() *pipeline.Request {
		r := request("GET", "/api/customers/c-1001", hdr{"authorization": mkt, "x-purpose": {marketing}})
		r.CanFulfil = []string{pipeline.ObligationMinimizeFields}
		return r
	}
	for i := 0; i < 2; i++ {
		if out := p.Check(context.Background(), req()); !out.Allowed() {
			t.Fatalf("granted consent denied: %v", out.Decision.Reasons)
		}
	}
	withdrawn := strings.Replace(pipelinetest.State, "{customer_id: c-1001, purpose: marketing.communications.email, status: granted", "{customer_id: c-1001, purpose: marketing.communications.email, status: withdrawn", 1)
	if err := os.WriteFile(path, []byte(withdrawn), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := enr.Reload(); err != nil {
		t.Fatal(err)
	}
	out := p.Check(context.Background(), req())
	if out.Allowed() || out.Status != 451 || out.Metrics["decision_cache_hit"] == 1 {
		t.Fatalf("withdrawal not applied at once: allow=%v status=%d", out.Allowed(), out.Status)
	}
}

func TestDecideRecords(t *testing.T) {
	out := listOutcome(t)
	d, err := fx.Pipeline.DecideRecords(context.Background(), out, []string{"c-1001", "c-3003", "c-2002", "c-1001", "nobody"})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Records) != 4 || !d.Records["c-1001"].Allow || d.Records["c-3003"].Allow || d.Records["c-2002"].Allow || d.Records["nobody"].Allow {
		t.Fatalf("records %+v", d.Records)
	}
	if d.Records["c-1001"].Fields["contact.email"].Outcome != "allow" || d.Records["c-1001"].Fields["health.notes"].Outcome == "allow" {
		t.Fatalf("record fields %+v", d.Records["c-1001"].Fields)
	}
	// A state outage denies every record.
	p, err := pipeline.New(slowCI, pipeline.Deps{Engine: fx.Engine, Routes: mustRoutes(t), Identity: fx.Identity, Enrich: brokenEnrich{}, Log: fx.Sink})
	if err != nil {
		t.Fatal(err)
	}
	d, _ = p.DecideRecords(context.Background(), out, []string{"c-1001"})
	if d.Records["c-1001"].Allow {
		t.Fatal("record allowed without its state")
	}
	if _, err := p.DecideRecords(context.Background(), &pipeline.Outcome{}, nil); err == nil {
		t.Fatal("records decided for a denied request")
	}
}

func TestDecisionCacheBurstEvaluatesOnce(t *testing.T) {
	p, err := fx.WithConfig(pipeline.Config{})
	if err != nil {
		t.Fatal(err)
	}
	h := hdr{"authorization": bearer(fx.Agent()), "x-purpose": {support}, "x-case-id": {"case-7"}}
	const n = 24
	evals := make(chan bool, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			out := p.Check(context.Background(), request("GET", "/api/customers/c-1001/notes", h))
			if !out.Allowed() {
				t.Error(out.Decision.Reasons)
			}
			evals <- out.Metrics["decision_cache_hit"] != 1
		}()
	}
	close(start)
	wg.Wait()
	close(evals)
	count := 0
	for e := range evals {
		if e {
			count++
		}
	}
	if count != 1 {
		t.Fatalf("%d evaluations for %d identical concurrent requests, want 1", count, n)
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	deps := pipeline.Deps{Engine: fx.Engine, Routes: mustRoutes(t), Identity: fx.Identity, Enrich: fx.Enrich, Log: fx.Sink, Metrics: reg}
	p1, err := pipeline.New(slowCI, deps)
	if err != nil {
		t.Fatal(err)
	}
	// A second front door in the same process shares the collectors.
	p2, err := pipeline.New(slowCI, deps)
	if err != nil {
		t.Fatal(err)
	}
	p1.Check(context.Background(), request("GET", "/nope", hdr{}))
	p2.Check(context.Background(), request("GET", "/nope", hdr{}))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var denials float64
	for _, mf := range mfs {
		if mf.GetName() == "consentry_decisions_total" {
			for _, m := range mf.GetMetric() {
				denials += m.GetCounter().GetValue()
			}
		}
	}
	if denials != 2 {
		t.Fatalf("consentry_decisions_total = %v, want 2", denials)
	}
}

// slowCI gives requests a generous deadline: under -race on a loaded 2-core machine an
// evaluation can exceed the 50ms production default, and these tests are about behaviour, not
// speed (the benchmarks measure that).
var slowCI = pipeline.Config{Timeout: 5 * time.Second}

// TestDeniedBeforeEnrichmentLogsAnEmptyConsentList: a decision denied before enrichment (no
// credential here) still logs input.enrichment.consents as an array, as input.json says.
func TestDeniedBeforeEnrichmentLogsAnEmptyConsentList(t *testing.T) {
	for _, req := range []*pipeline.Request{
		request("GET", "/api/customers/c-1001", hdr{"x-purpose": {support}}),
		request("GET", "/%2f", hdr{}),
		nil,
	} {
		out := fx.Pipeline.Check(context.Background(), req)
		if out.Allowed() {
			t.Fatal("allowed")
		}
		raw, err := json.Marshal(out.Input)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(raw), `"consents":[]`) {
			t.Errorf("logged input %s", raw)
		}
	}
}

package transform_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/consentry/consentry/sidecar/decision"
	"github.com/consentry/consentry/sidecar/input"
	"github.com/consentry/consentry/sidecar/pipeline"
	"github.com/consentry/consentry/sidecar/pipeline/pipelinetest"
	"github.com/consentry/consentry/sidecar/transform"
)

var fx *pipelinetest.Fixture

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "transform-test")
	if err != nil {
		panic(err)
	}
	if fx, err = pipelinetest.New(dir, pipelinetest.Options{}); err != nil {
		panic(err)
	}
	code := m.Run()
	_ = fx.Close()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

func check(t *testing.T, method, target, tok, purpose, caseID string) *pipeline.Outcome {
	t.Helper()
	h := map[string][]string{"authorization": {"Bearer " + tok}, "x-purpose": {purpose}}
	if caseID != "" {
		h["x-case-id"] = []string{caseID}
	}
	out := fx.Pipeline.Check(context.Background(), &pipeline.Request{FrontDoor: "test", Method: method, Target: target, Headers: h,
		Source: input.Source{Address: "127.0.0.1:1"}, CanFulfil: []string{pipeline.ObligationFilterRecords, pipeline.ObligationMinimizeFields}})
	if !out.Allowed() {
		t.Fatalf("%s %s denied: %v", method, target, out.Decision.Reasons)
	}
	return out
}

type failingDecider struct{}

func (failingDecider) DecidePage(context.Context, *pipeline.Outcome, []string) (*pipeline.Page, error) {
	return &pipeline.Page{Decision: decision.Deny(503, "state.unavailable", "enrichment down")}, errors.New("enrichment down")
}

func TestResponseFailClosed(t *testing.T) {
	tr, err := transform.New(transform.Config{MaxBodyBytes: 4096}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	mkt := fx.Token("emp-30", "employee", []string{"marketing"}, nil)
	list := check(t, "GET", "/api/customers", mkt, "marketing.communications.email", "")
	read := check(t, "GET", "/api/customers/c-1001", fx.Agent(), "essential.service.operations.support", "case-7")
	notes := check(t, "GET", "/api/customers/c-1001/notes", fx.Agent(), "essential.service.operations.support", "case-7")
	tests := []struct {
		name   string
		out    *pipeline.Outcome
		rd     transform.RecordDecider
		resp   transform.Response
		status int
		code   string
	}{
		{"records undecided", list, failingDecider{}, transform.Response{Status: 200, ContentType: "application/json", Body: []byte(`{"items":[{"id":"c-1001","name":"A"}]}`)}, 502, transform.ReasonRecordsUndecided},
		{"records not an array", list, fx.Pipeline, transform.Response{Status: 200, ContentType: "application/json", Body: []byte(`{"items":{"id":"c-1001"}}`)}, 502, transform.ReasonShape},
		{"record path twice", list, fx.Pipeline, transform.Response{Status: 200, ContentType: "application/json", Body: []byte(`{"items":[],"items":[{"id":"c-1001"}]}`)}, 502, transform.ReasonShape},
		{"invalid json", read, nil, transform.Response{Status: 200, ContentType: "application/json", Body: []byte(`{"name":"A",`)}, 502, transform.ReasonInvalidJSON},
		{"not json", read, nil, transform.Response{Status: 200, ContentType: "text/plain", Body: []byte(`name=A`)}, 502, transform.ReasonNotJSON},
		{"compressed", read, nil, transform.Response{Status: 200, ContentType: "application/json", ContentEncoding: "gzip", Body: []byte{0x1f, 0x8b}}, 502, transform.ReasonEncoded},
		{"too large", read, nil, transform.Response{Status: 200, ContentType: "application/json", Body: []byte(`{"name":"` + strings.Repeat("a", 5000) + `"}`)}, 502, transform.ReasonTooLarge},
		{"null records are an empty list", list, fx.Pipeline, transform.Response{Status: 200, ContentType: "application/json", Body: []byte(`{"items":null,"total":0}`)}, 200, ""},
		{"error document passes minimized", read, nil, transform.Response{Status: 404, ContentType: "application/json", Body: []byte(`{"error":"not found"}`)}, 404, ""},
		{"empty body", read, nil, transform.Response{Status: 204}, 204, ""},
		{"records not at the record path: a bare array", list, fx.Pipeline, transform.Response{Status: 200, ContentType: "application/json", Body: []byte(`[{"id":"c-3003","health":{"notes":"x"}}]`)}, 502, transform.ReasonShape},
		{"records not at the record path: another envelope", list, fx.Pipeline, transform.Response{Status: 200, ContentType: "application/json", Body: []byte(`{"data":[{"id":"c-3003","health":{"notes":"x"}}]}`)}, 502, transform.ReasonShape},
		{"records not at the record path: one object", list, fx.Pipeline, transform.Response{Status: 200, ContentType: "application/json", Body: []byte(`{"id":"c-3003","health":{"notes":"x"}}`)}, 502, transform.ReasonShape},
		{"JSON lines of envelopes on a record_path route", notes, fx.Pipeline, transform.Response{Status: 200, ContentType: "application/x-ndjson", Body: []byte(`{"items":[{"id":"n1","customer_id":"c-1001","body":"SECRET NOTE"}]}` + "\n")}, 502, transform.ReasonShape},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := tr.Response(context.Background(), tc.rd, tc.out, tc.resp)
			if res.Status != tc.status || (tc.code != "" && !strings.Contains(string(res.Body), tc.code)) {
				t.Fatalf("status %d body %s", res.Status, res.Body)
			}
			if tc.code != "" && (strings.Contains(string(res.Body), "c-1001") || res.Enforcement.Status != 502) {
				t.Fatalf("replaced body leaks or not logged: %s %+v", res.Body, res.Enforcement)
			}
		})
	}
}

func TestListWithoutKeys(t *testing.T) {
	tr, _ := transform.New(transform.Config{}, nil, nil)
	mkt := fx.Token("emp-30", "employee", []string{"marketing"}, nil)
	out := check(t, "GET", "/api/customers", mkt, "marketing.communications.email", "")
	body := `{"items":[{"id":"c-1001","name":"A","contact":{"email":"vault:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","phone":"p"},"payment":{"card_number":"4111"}},` +
		`{"id":"c-3003","name":"B"},{"name":"no id"},{"id":"c-1001","id":"c-3003","name":"two ids"},{"id":"c-4004"},"not an object"],"page":1,"total":6}`
	res := tr.Response(context.Background(), fx.Pipeline, out, transform.Response{Status: 200, ContentType: "application/json; charset=utf-8", Body: []byte(body)})
	want := `{"items":[{"id":"c-1001","name":"A","contact":{"email":null},"payment":{}}],"page":1,"total":6}`
	if string(res.Body) != want {
		t.Fatalf("got  %s\nwant %s", res.Body, want)
	}
	enf := res.Enforcement
	if enf.RecordsReturned != 1 || enf.RecordsFiltered != 5 || len(enf.Withheld) != 1 || res.Headers[transform.HeaderWithheld] != "contact.email" {
		t.Fatalf("%+v %v", enf, res.Headers)
	}
}

// TestErrorResponsesKeepTheRecordRules: an error status does not lift the record path and the
// per-record filter - a 500 carrying the page is filtered like a 200 - while an error document
// without records keeps its message (TestListErrorDocumentCarriesNoRecords).
func TestErrorResponsesKeepTheRecordRules(t *testing.T) {
	tr, _ := transform.New(transform.Config{}, nil, nil)
	mkt := fx.Token("emp-30", "employee", []string{"marketing"}, nil)
	out := check(t, "GET", "/api/customers", mkt, "marketing.communications.email", "")
	page := `{"items":[{"id":"c-1001","name":"A","payment":{"card_number":"4111"}},{"id":"c-3003","name":"B"}]}`
	for _, status := range []int{200, 409, 500} {
		res := tr.Response(context.Background(), fx.Pipeline, out, transform.Response{Status: status, ContentType: "application/json", Body: []byte(page)})
		if res.Status != status || strings.Contains(string(res.Body), "c-3003") || strings.Contains(string(res.Body), "4111") {
			t.Errorf("status %d: %d %s", status, res.Status, res.Body)
		}
	}
	res := tr.Response(context.Background(), fx.Pipeline, out, transform.Response{Status: 503, ContentType: "application/json", Body: []byte(`{"error":"maintenance"}`)})
	if res.Status != 503 || !strings.Contains(string(res.Body), "maintenance") {
		t.Errorf("error document: %d %s", res.Status, res.Body)
	}
}

// pageDenied is the real record decider with the request-level outcome turned to a deny, as a
// policy that refuses the page at response time while allowing records would answer.
type pageDenied struct{}

func (pageDenied) DecidePage(ctx context.Context, out *pipeline.Outcome, ids []string) (*pipeline.Page, error) {
	pg, err := fx.Pipeline.DecidePage(ctx, out, ids)
	if err != nil {
		return nil, err
	}
	pg.Decision.Allow = false
	return pg, nil
}

func TestPageDeniedAtResponseTime(t *testing.T) {
	tr, _ := transform.New(transform.Config{}, nil, nil)
	mkt := fx.Token("emp-30", "employee", []string{"marketing"}, nil)
	out := check(t, "GET", "/api/customers", mkt, "marketing.communications.email", "")
	res := tr.Response(context.Background(), pageDenied{}, out, transform.Response{Status: 200, ContentType: "application/json",
		Body: []byte(`{"items":[{"id":"c-1001","name":"A"}],"total":1}`)})
	if strings.Contains(string(res.Body), "c-1001") || res.Enforcement.RecordsReturned != 0 || res.Enforcement.RecordsFiltered != 1 {
		t.Fatalf("%d %s %+v", res.Status, res.Body, res.Enforcement)
	}
}

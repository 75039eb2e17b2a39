package transform_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/consentry/consentry/sidecar/pipeline"
	"github.com/consentry/consentry/sidecar/routes"
	"github.com/consentry/consentry/sidecar/transform"
)

// TestListErrorDocumentCarriesNoRecords: on a per-record route the page's decision is no
// customer's, so a non-2xx document keeps only scalar message members that are not record
// fields; objects and arrays (records under any name) and record fields are dropped and
// logged. Records at the record_path are filtered per record like a success. c-3003 has
// withdrawn marketing consent, so the page decision (which allows contact.email) must not
// serve their email. Single-record routes keep the request's decision: it is that customer's.
func TestListErrorDocumentCarriesNoRecords(t *testing.T) {
	tr, err := transform.New(transform.Config{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	mkt := fx.Token("emp-30", "employee", []string{"marketing"}, nil)
	list := check(t, "GET", "/api/customers", mkt, "marketing.communications.email", "")
	cases := check(t, "GET", "/api/cases", mkt, "marketing.communications.email", "")
	nested := withRoute(list, func(r *routes.Route) { r.RecordPath = "data.items" })
	read := check(t, "GET", "/api/customers/c-1001", fx.Agent(), "essential.service.operations.support", "case-7")
	const problem = `{"type":"https://crm.example/conflict","title":"Conflict","status":409,"detail":"the customer was changed meanwhile","instance":"/api/customers"}`
	tests := []struct {
		name    string
		out     *pipeline.Outcome
		status  int
		body    string
		want    string
		dropped []string // fields.dropped, exactly
		changed bool
	}{
		{"record-shaped problem document", list, 409,
			`{"error":"conflict","id":"c-3003","name":"Withdrawn Person","contact":{"email":"w@example.test"},"health":{"notes":"secret-health"}}`,
			`{"error":"conflict"}`, []string{"contact.email", "health.notes", "id", "name"}, true},
		{"records under an unlisted member", list, 409,
			`{"error":"conflict","records":[{"id":"c-3003","contact":{"email":"w@example.test"},"health":{"notes":"secret-health"}}]}`,
			`{"error":"conflict"}`, []string{"records"}, true},
		{"plain problem document keeps its message", list, 409, problem, problem, nil, false},
		{"a flattened echo of a nested field", list, 409,
			`{"email":"w@example.test","card_number":"4111","detail":"duplicate"}`,
			`{"detail":"duplicate"}`, []string{"card_number", "email"}, true},
		{"record field first, message last", list, 500,
			`{"contact":"w@example.test","meta":{"trace":"t1"},"detail":"boom"}`,
			`{"detail":"boom"}`, []string{"contact", "meta"}, true},
		{"ciphertext in a message member is withheld", list, 500,
			`{"detail":"` + testCiphertext + `","status":500}`, `{"detail":null,"status":500}`, nil, true},
		{"a document that is an array is emptied", list, 500,
			`[{"id":"c-3003","contact":{"email":"w@example.test"}}]`, `[]`, []string{"$"}, true},
		{"a bare message", list, 502, `"upstream timeout"`, `"upstream timeout"`, nil, false},
		{"records path holds an object", list, 409,
			`{"items":{"id":"c-3003","name":"W"},"error":"conflict"}`, `{"error":"conflict"}`, []string{"items"}, true},
		{"error with the page: records filtered, envelope minimized", list, 500,
			`{"items":[{"id":"c-1001","name":"A"},{"id":"c-3003","name":"B"}],"error":"partial","records":[{"id":"c-3003","health":{"notes":"x"}}],"name":"W","total":2}`,
			`{"items":[{"id":"c-1001","name":"A"}],"error":"partial","total":2}`, []string{"name", "records"}, true},
		{"nested record path: the path is kept, its siblings minimized", nested, 500,
			`{"data":{"extra":[{"id":"c-3003"}],"items":[{"id":"c-1001","name":"A"},{"id":"c-3003","name":"B"}],"page":1},"error":"partial"}`,
			`{"data":{"items":[{"id":"c-1001","name":"A"}],"page":1},"error":"partial"}`, []string{"data.extra"}, true},
		{"customer id field on a route without fields", cases, 409,
			`{"error":"conflict","customer_id":"c-3003","case":{"id":"k1"}}`, `{"error":"conflict"}`, []string{"case", "customer_id"}, true},
		{"2xx list envelope unaffected", list, 200,
			`{"items":[{"id":"c-1001","name":"A"}],"meta":{"q":"x"},"page":1,"total":1}`,
			`{"items":[{"id":"c-1001","name":"A"}],"meta":{"q":"x"},"page":1,"total":1}`, nil, false},
		// The request's decision is c-1001's own (support: contact.email allowed, health
		// dropped): the error document is minimized with it, as before.
		{"single-record route keeps the request's decision", read, 409,
			`{"error":"conflict","id":"c-1001","contact":{"email":"a@example.test"},"health":{"notes":"h"}}`,
			`{"error":"conflict","id":"c-1001","contact":{"email":"a@example.test"},"health":{}}`, []string{"health.notes"}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := tr.Response(context.Background(), fx.Pipeline, tc.out, transform.Response{Status: tc.status, ContentType: "application/problem+json", Body: []byte(tc.body)})
			if res.Status != tc.status || string(res.Body) != tc.want || res.Changed != tc.changed {
				t.Fatalf("got  %d %s (changed %v)\nwant %d %s", res.Status, res.Body, res.Changed, tc.status, tc.want)
			}
			if !slices.Equal(res.Enforcement.FieldsDropped, tc.dropped) {
				t.Errorf("fields dropped %v, want %v", res.Enforcement.FieldsDropped, tc.dropped)
			}
			if tc.out != read && tc.status >= 300 {
				for _, leak := range []string{"w@example.test", "secret-health", "c-3003", "vault:v1:"} {
					if strings.Contains(string(res.Body), leak) {
						t.Errorf("%q served: %s", leak, res.Body)
					}
				}
			}
		})
	}
}

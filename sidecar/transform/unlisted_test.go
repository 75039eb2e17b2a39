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

// TestUnlistedMembers: on a drop route a response serves only what the route map lists (its
// fields, passthrough members and envelope); on a pass route (the default) what it does not
// list passes as before, ciphertext excepted.
func TestUnlistedMembers(t *testing.T) {
	tr, err := transform.New(transform.Config{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	mkt := fx.Token("emp-30", "employee", []string{"marketing"}, nil)
	list := check(t, "GET", "/api/customers", mkt, "marketing.communications.email", "")
	read := check(t, "GET", "/api/customers/c-1001", fx.Agent(), "essential.service.operations.support", "case-7")
	notes := check(t, "GET", "/api/customers/c-1001/notes", fx.Agent(), "essential.service.operations.support", "case-7")
	drop := func(pass []string, env []string) func(r *routes.Route) {
		return func(r *routes.Route) { r.Unlisted, r.Passthrough, r.Envelope = routes.UnlistedDrop, pass, env }
	}
	tests := []struct {
		name        string
		out         *pipeline.Outcome
		status      int
		body, want  string
		wantDropped []string
	}{
		{
			name: "pass route: unlisted members served",
			out:  read, status: 200,
			body: `{"id":"c-1001","name":"A","ssn":"123-45-6789","contact":{"email":"a@x","fax":"555"}}`,
			want: `{"id":"c-1001","name":"A","ssn":"123-45-6789","contact":{"email":"a@x","fax":"555"}}`,
		},
		{
			name: "drop route: a member the CRM added is not served",
			out:  withRoute(read, drop(nil, nil)), status: 200,
			body:        `{"id":"c-1001","name":"A","ssn":"123-45-6789","contact":{"email":"a@x","fax":"555"},"extra":{"score":9}}`,
			want:        `{"id":"c-1001","name":"A","contact":{"email":"a@x"}}`,
			wantDropped: []string{"contact.fax", "extra", "ssn"},
		},
		{
			name: "drop route: passthrough members served, ciphertext in them withheld",
			out:  withRoute(read, drop([]string{"version", "meta.etag"}, nil)), status: 200,
			body: `{"id":"c-1001","version":7,"meta":{"etag":"vault:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","owner":"emp-1"}}`,
			want: `{"id":"c-1001","version":7,"meta":{"etag":null}}`, wantDropped: []string{"meta.owner"},
		},
		{
			name: "drop route: a scalar where an object is listed is not served",
			out:  withRoute(read, drop(nil, nil)), status: 200,
			body: `{"id":"c-1001","contact":"a@x","payment":["4111"]}`,
			want: `{"id":"c-1001","payment":[null]}`, wantDropped: []string{"contact", "payment"},
		},
		{
			name: "drop route: an allowed field's own members are its value",
			out:  withRoute(read, drop(nil, nil)), status: 200,
			body: `{"id":"c-1001","address":{"street":"1 Main","city":"X"}}`,
			want: `{"id":"c-1001","address":{"street":"1 Main","city":"X"}}`,
		},
		{
			name: "drop route: an error document keeps its message, not its objects",
			out:  withRoute(read, drop(nil, nil)), status: 409,
			body: `{"error":"conflict","detail":"stale","record":{"ssn":"1"}}`,
			want: `{"error":"conflict","detail":"stale"}`, wantDropped: []string{"record"},
		},
		{
			name: "drop route: an error document's members named like a record's are no message",
			out:  withRoute(read, drop(nil, nil)), status: 409,
			body: `{"error":"conflict","payment":"4111 1111 1111 1111","card_number":"4111 1111 1111 1111","health":"HIV+","id":"c-1001"}`,
			want: `{"error":"conflict","id":"c-1001"}`, wantDropped: []string{"card_number", "health", "payment"},
		},
		{
			name: "drop route: list envelope keeps only its listed members",
			out:  withRoute(list, drop([]string{"version"}, []string{"page", "total"})), status: 200,
			body:        `{"items":[{"id":"c-1001","name":"A","version":3,"tier":"gold"}],"page":1,"total":1,"query":{"q":"Ann"},"debug":"sql"}`,
			want:        `{"items":[{"id":"c-1001","name":"A","version":3}],"page":1,"total":1}`,
			wantDropped: []string{"debug", "query", "tier"},
		},
		{
			name: "drop route: a nested envelope member is served, its siblings are not",
			out:  withRoute(list, drop(nil, []string{"total", "meta.cursor"})), status: 200,
			body: `{"items":[],"total":0,"meta":{"cursor":"abc","debug":"sql"},"other":{"cursor":"x"}}`,
			want: `{"items":[],"total":0,"meta":{"cursor":"abc"}}`, wantDropped: []string{"meta.debug", "other"},
		},
		{
			name: "drop route: a customer's notes serve only the note body and passthrough",
			out:  withRoute(notes, drop([]string{"id", "created_at"}, []string{"total"})), status: 200,
			body:        `{"items":[{"id":"n1","customer_id":"c-1001","body":"hi","author":"emp-9","created_at":"2020"}],"total":1,"next":"x"}`,
			want:        `{"items":[{"id":"n1","body":"hi","created_at":"2020"}],"total":1}`,
			wantDropped: []string{"author", "customer_id", "next"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := tr.Response(context.Background(), fx.Pipeline, tc.out, transform.Response{Status: tc.status, ContentType: "application/json", Body: []byte(tc.body)})
			if res.Status != tc.status || string(res.Body) != tc.want {
				t.Fatalf("status %d\ngot  %s\nwant %s", res.Status, res.Body, tc.want)
			}
			for _, d := range tc.wantDropped {
				if !slices.Contains(res.Enforcement.FieldsDropped, d) {
					t.Errorf("fields_dropped %v lacks %q", res.Enforcement.FieldsDropped, d)
				}
			}
			if strings.Contains(string(res.Body), "vault:v1") {
				t.Errorf("ciphertext served: %s", res.Body)
			}
		})
	}
}

// TestErrorArrayAtEmptyRecordPath: a non-2xx answer that is itself the record array (a list
// route whose record_path is "") is filtered per record like a 2xx; the error-document rule
// also removing the whole array made overlapping edits, and the transformer panicked.
func TestErrorArrayAtEmptyRecordPath(t *testing.T) {
	tr, err := transform.New(transform.Config{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	mkt := fx.Token("emp-30", "employee", []string{"marketing"}, nil)
	list := withRoute(check(t, "GET", "/api/customers", mkt, "marketing.communications.email", ""), func(r *routes.Route) { r.RecordPath = "" })
	res := tr.Response(context.Background(), fx.Pipeline, list, transform.Response{Status: 404, ContentType: "application/json",
		Body: []byte(`[{"id":"c-1001","name":"A"},{"id":"c-3003","name":"Withdrawn"}]`)})
	if strings.Contains(string(res.Body), "Withdrawn") || !strings.Contains(string(res.Body), "c-1001") || res.Status != 404 {
		t.Fatalf("%d %s", res.Status, res.Body)
	}
}

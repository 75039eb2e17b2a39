package routes

import (
	"encoding/json"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func demo(t *testing.T) *Map {
	t.Helper()
	m, err := Load("../../deploy/routes/democrm.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestDemoMap(t *testing.T) {
	m := demo(t)
	tests := []struct {
		method, path, route string
		params              map[string]string
		customer, caseID    string
	}{
		{"GET", "/api/customers", "GET /api/customers", nil, "", ""},
		{"GET", "/api/customers/c-1", "GET /api/customers/{customer_id}", map[string]string{"customer_id": "c-1"}, "c-1", ""},
		{"HEAD", "/api/customers/c-1", "GET /api/customers/{customer_id}", map[string]string{"customer_id": "c-1"}, "c-1", ""},
		{"PATCH", "/api/customers/c-1", "PATCH /api/customers/{customer_id}", map[string]string{"customer_id": "c-1"}, "c-1", ""},
		{"GET", "/api/customers/c-1/notes", "GET /api/customers/{customer_id}/notes", map[string]string{"customer_id": "c-1"}, "c-1", ""},
		{"GET", "/api/cases/k-9", "GET /api/cases/{case_id}", map[string]string{"case_id": "k-9"}, "", "k-9"},
		{"GET", "/api/export", "GET /api/export", nil, "", ""},
		{"GET", "/api/cases", "GET /api/cases", nil, "", ""},
	}
	for _, tt := range tests {
		mt, ok := m.Match(tt.method, tt.path)
		if !ok {
			t.Errorf("%s %s: no match", tt.method, tt.path)
			continue
		}
		if mt.Route.Name() != tt.route || !reflect.DeepEqual(mt.Params, tt.params) || mt.CustomerID() != tt.customer || mt.CaseID() != tt.caseID {
			t.Errorf("%s %s: got %s %v customer=%q case=%q", tt.method, tt.path, mt.Route.Name(), mt.Params, mt.CustomerID(), mt.CaseID())
		}
	}
	for _, miss := range [][2]string{{"GET", "/api"}, {"PUT", "/api/customers/c-1"}, {"GET", "/api/customers/c-1/notes/n-1"}, {"POST", "/api/export"}, {"OPTIONS", "/api/customers"}} {
		if mt, ok := m.Match(miss[0], miss[1]); ok {
			t.Errorf("%v matched %s", miss, mt.Route.Name())
		}
	}
	r, _ := m.Match("POST", "/api/customers")
	if r.Route.Body != BodyJSON || r.Route.Action != "create" {
		t.Errorf("POST /api/customers: body %q action %q", r.Route.Body, r.Route.Action)
	}
	// Response-side enforcement needs to find the records of every list-shaped response.
	for _, rp := range []struct{ method, path, recordPath, idField string }{
		{"GET", "/api/customers", "items", "id"},
		{"GET", "/api/customers/c-1/notes", "items", "id"},
		{"GET", "/api/cases", "items", "customer_id"},
		{"GET", "/api/export", "items", "id"},
	} {
		mt, _ := m.Match(rp.method, rp.path)
		if mt.Route.RecordPath != rp.recordPath || mt.Route.CustomerIDField != rp.idField {
			t.Errorf("%s %s: record_path %q customer_id_field %q", rp.method, rp.path, mt.Route.RecordPath, mt.Route.CustomerIDField)
		}
	}
	if r, _ := m.Match("POST", "/api/customers"); !slices.Contains(r.Route.Fields, "id") {
		t.Error("POST /api/customers must accept id: keys for a new customer's fields are the customer's")
	}
}

func TestDemoFieldsInCatalogue(t *testing.T) {
	raw, err := os.ReadFile("../../policies/data/consentry/catalog/data.json")
	if err != nil {
		t.Fatal(err)
	}
	var cat struct {
		Fields map[string]any `json:"fields"`
	}
	if err := json.Unmarshal(raw, &cat); err != nil {
		t.Fatal(err)
	}
	for _, r := range demo(t).Routes() {
		for _, f := range r.Fields {
			if _, ok := cat.Fields[f]; !ok {
				t.Errorf("%s: field %q is not in the catalogue", r.Name(), f)
			}
		}
	}
}

func TestLiteralBeatsParam(t *testing.T) {
	m, err := Parse([]byte(`
routes:
  - {method: GET, path: "/api/customers/{customer_id}", action: read, resource: customer, customer_param: customer_id}
  - {method: GET, path: /api/customers/export, action: export, resource: export}
  - {method: GET, path: /health, public: true}
`))
	if err != nil {
		t.Fatal(err)
	}
	if mt, _ := m.Match("GET", "/api/customers/export"); mt.Route.Action != "export" {
		t.Fatalf("got %s", mt.Route.Name())
	}
	if mt, _ := m.Match("GET", "/api/customers/c-2"); mt.Route.Action != "read" {
		t.Fatalf("got %s", mt.Route.Name())
	}
	if mt, ok := m.Match("GET", "/health"); !ok || !mt.Route.Public {
		t.Fatal("public route not matched")
	}
}

func TestInvalidMaps(t *testing.T) {
	tests := []struct{ name, yaml, want string }{
		{"empty", `routes: []`, "no routes"},
		{"unknown key", `routes: [{method: GET, path: /a, action: read, resource: x, customer_parm: id}]`, "customer_parm"},
		{"bad action", `routes: [{method: GET, path: /a, action: peek, resource: x}]`, "action"},
		{"no resource", `routes: [{method: GET, path: /a, action: read}]`, "resource"},
		{"customer param not in path", `routes: [{method: GET, path: /a, action: read, resource: x, customer_param: id}]`, "customer_param"},
		{"partial param", `routes: [{method: GET, path: "/a/x{id}", action: read, resource: x}]`, "whole-segment"},
		{"dup param", `routes: [{method: GET, path: "/a/{id}/{id}", action: read, resource: x}]`, "twice"},
		{"relative", `routes: [{method: GET, path: a, action: read, resource: x}]`, "start with /"},
		{"ambiguous", `routes: [{method: GET, path: "/a/{x}", action: read, resource: x}, {method: GET, path: "/a/{y}", action: read, resource: x}]`, "ambiguous"},
		{"bad body", `routes: [{method: POST, path: /a, action: create, resource: x, body: xml}]`, "body"},
		{"bad unlisted", `routes: [{method: GET, path: /a, action: read, resource: x, unlisted: hide}]`, "unlisted"},
		{"bad map unlisted", "unlisted: keep\nroutes: [{method: GET, path: /a, action: read, resource: x}]", "unlisted"},
		{"passthrough is a field", `routes: [{method: GET, path: /a, action: read, resource: x, fields: [contact.email], passthrough: [contact.email]}]`, "overlaps the field"},
		{"passthrough holds a field", `routes: [{method: GET, path: /a, action: read, resource: x, fields: [contact.email], passthrough: [contact]}]`, "overlaps the field"},
		{"passthrough inside a field", `routes: [{method: GET, path: /a, action: read, resource: x, fields: [address], passthrough: [address.street]}]`, "overlaps the field"},
		{"passthrough is a prefixed field", `routes: [{method: GET, path: /a, action: read, resource: x, field_prefix: "note.", fields: [note.body], passthrough: [body]}]`, "overlaps the field"},
		{"passthrough empty segment", `routes: [{method: GET, path: /a, action: read, resource: x, passthrough: [meta..x]}]`, "dotted member path"},
		{"envelope without records", `routes: [{method: GET, path: /a, action: read, resource: x, envelope: [total]}]`, "record_path"},
		{"list route bound to a customer", `routes: [{method: GET, path: "/a/{id}/household", action: list, resource: customer, list: true, customer_param: id, record_path: items}]`, "cannot be bound to one customer"},
		{"list route bound to a case", `routes: [{method: GET, path: "/cases/{c}/customers", action: list, resource: customer, list: true, case_param: c, record_path: items}]`, "cannot be bound to one customer"},
		{"list route read", `routes: [{method: GET, path: /search, action: read, resource: customer, list: true, record_path: items}]`, "action list or export"},
		{"drop with body any", "unlisted: drop\nroutes: [{method: GET, path: /a, action: read, resource: x, body: any}]", "body: any"},
		// Only a JSON body is checked and encrypted on the way to the CRM: the reviewer's
		// route forwarded a plaintext card number.
		{"update with body none", `routes: [{method: PUT, path: "/api/customers/{customer_id}/payment", action: update, resource: customer, customer_param: customer_id, fields: [payment.card_number], body: none}]`, `body: "none" on a route with action update`},
		{"create with body any", `routes: [{method: POST, path: /api/customers, action: create, resource: customer, fields: [contact.email], body: any}]`, `body: "any" on a route with action create`},
		{"envelope is the records", `routes: [{method: GET, path: /a, action: list, resource: x, list: true, record_path: data.items, envelope: [data]}]`, "overlaps record_path"},
	}
	for _, tt := range tests {
		_, err := Parse([]byte(tt.yaml))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err %v, want %q", tt.name, err, tt.want)
		}
	}
}

// TestWriteRoutesDefaultToJSON: a create/update route without body is json whatever its
// method (OData's MERGE), so its body is checked and encrypted; other routes keep their
// method's default.
func TestWriteRoutesDefaultToJSON(t *testing.T) {
	m, err := Parse([]byte(`routes:
  - {method: MERGE, path: "/api/customers/{id}", action: update, resource: customer, customer_param: id, fields: [contact.email]}
  - {method: POST, path: "/api/customers/{id}/erase", action: erase, resource: customer, customer_param: id}
  - {method: DELETE, path: "/api/customers/{id}", action: delete, resource: customer, customer_param: id}
  - {method: POST, path: /upload, public: true, action: create, body: any}
`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ method, path, body string }{
		{"MERGE", "/api/customers/c-1", BodyJSON},
		{"POST", "/api/customers/c-1/erase", BodyJSON},
		{"DELETE", "/api/customers/c-1", BodyNone},
		{"POST", "/upload", BodyAny},
	} {
		mt, ok := m.Match(tc.method, tc.path)
		if !ok || mt.Route.Body != tc.body {
			t.Errorf("%s %s: body %q, want %q", tc.method, tc.path, mt.Route.Body, tc.body)
		}
	}
}

func TestFromValue(t *testing.T) {
	var v any
	if err := json.Unmarshal([]byte(`{"routes":[{"method":"GET","path":"/api/customers/{id}","action":"read","resource":"customer","customer_param":"id","fields":["name"]}]}`), &v); err != nil {
		t.Fatal(err)
	}
	m, err := FromValue(v)
	if err != nil {
		t.Fatal(err)
	}
	mt, ok := m.Match("GET", "/api/customers/x")
	if !ok || mt.CustomerID() != "x" || !slices.Equal(mt.Route.Fields, []string{"name"}) {
		t.Fatalf("got %+v", mt)
	}
	if _, err := FromValue(v.(map[string]any)["routes"]); err != nil {
		t.Fatalf("list form: %v", err)
	}
	// The file's form keeps its top-level unlisted, and a typo there is an error, not a pass.
	for raw, want := range map[string]string{
		`{"unlisted":"drop","routes":[{"method":"GET","path":"/a","action":"read","resource":"x"},{"method":"GET","path":"/b","action":"read","resource":"x","unlisted":"pass"}]}`: "drop pass",
		`{"unlisted":"keep","routes":[{"method":"GET","path":"/a","action":"read","resource":"x"}]}`:                                                                               "error",
		`{"unlistd":"drop","routes":[{"method":"GET","path":"/a","action":"read","resource":"x"}]}`:                                                                                "error",
	} {
		var v any
		if err := json.Unmarshal([]byte(raw), &v); err != nil {
			t.Fatal(err)
		}
		m, err := FromValue(v)
		got := "error"
		if err == nil {
			got = m.Routes()[0].Unlisted
			if len(m.Routes()) > 1 {
				got += " " + m.Routes()[1].Unlisted
			}
		}
		if got != want {
			t.Errorf("%s: got %q (%v), want %q", raw, got, err, want)
		}
	}
}

func TestUnlistedDefaultsToPass(t *testing.T) {
	m, err := Parse([]byte(`routes: [{method: GET, path: /a, action: read, resource: x}]`))
	if err != nil {
		t.Fatal(err)
	}
	if u := m.Routes()[0].Unlisted; u != UnlistedPass {
		t.Fatalf("unlisted %q, want pass", u)
	}
}

// TestRedact: segments no route has as a literal at their position are hidden, whatever
// they hold; an empty map hides every segment.
func TestRedact(t *testing.T) {
	m, err := Parse([]byte(`routes:
  - {method: GET, path: "/api/customers/{customer_id}", action: read, resource: customer, customer_param: customer_id}
  - {method: GET, path: "/api/customers/{customer_id}/notes", action: read, resource: note, customer_param: customer_id}
`))
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		"/api/customers/c-1001%00":         "/api/customers/*",
		"/api/customers/c-1001/notes":      "/api/customers/*/notes",
		"/api/customer/c-1001":             "/api/*/*",
		"/api/customers/notes/c-1001":      "/api/customers/*/*",
		"/api/customers/c-1001/notes/x/..": "/api/customers/*/notes/*/*",
		"//api":                            "//*",
		"/":                                "/",
	} {
		if got := m.Redact(path); got != want {
			t.Errorf("Redact(%q) = %q, want %q", path, got, want)
		}
	}
	var h Holder
	if got := h.Redact("/api/customers/c-1"); got != "/*/*/*" {
		t.Errorf("empty holder: %q", got)
	}
}

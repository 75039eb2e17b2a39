package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const demoRoutes = "../../deploy/routes/democrm.yaml"

// TestRoutesCheck: `routes check` validates a map (exit 5 when it does not load) and, given a
// sample response, names the members the map does not list, which --fail-on-drop turns into
// exit 1 for CI; a response the response phase would refuse is exit 1 too.
func TestRoutesCheck(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	bad := write("bad.yaml", "routes: [{method: GET, path: /a, action: read, resource: x, unlisted: hide}]")
	typo := write("typo.yaml", "routes: [{method: GET, path: \"/a/{id}\", action: read, resource: customer, customer_param: id, fields: [nmae]}]")
	catalog := "../../policies/data/consentry/catalog/data.json"
	extra := write("extra.json", `{"id":"c-1","name":"Ann","contact":{"email":"a@x","fax":"1"},"ssn":"123"}`)
	listed := write("listed.json", `{"id":"c-1","name":"Ann","contact":{"email":"a@x"},"created_at":"2020"}`)
	page := write("page.json", `{"items":[{"id":"c-1","name":"Ann","tier":"gold"}],"page":1,"total":1,"debug":"sql"}`)
	notJSON := write("page.txt", `name=Ann`)
	tests := []struct {
		name     string
		args     []string
		stdin    string
		code     int
		out, err string
	}{
		{"valid map", []string{"routes", "check", demoRoutes}, "", ExitOK, "10 routes, valid", ""},
		{"invalid map", []string{"routes", "check", bad}, "", ExitConfig, "", "unlisted"},
		{"field the catalogue does not know", []string{"routes", "check", typo, "--catalog", catalog}, "", ExitConfig, "", `"nmae"`},
		{"shipped map against the catalogue", []string{"routes", "check", demoRoutes, "--catalog", catalog}, "", ExitOK, "10 routes, valid", ""},
		{"missing catalogue", []string{"routes", "check", demoRoutes, "--catalog", "/nonexistent/data.json"}, "", ExitConfig, "", "--catalog"},
		{"request without response", []string{"routes", "check", demoRoutes, "--request", "GET /api/customers/c-1"}, "", ExitUsage, "", "go together"},
		{"unknown route", []string{"routes", "check", demoRoutes, "--request", "GET /api/admin", "--response", listed}, "", ExitUsage, "", "route.unknown"},
		{"members not listed", []string{"routes", "check", demoRoutes, "--request", "GET /api/customers/c-1", "--response", extra}, "", ExitOK, "contact.fax, ssn", ""},
		{"members not listed fail", []string{"routes", "check", demoRoutes, "--request", "GET /api/customers/c-1", "--response", extra, "--fail-on-drop"}, "", ExitFailure, "", "2 member(s)"},
		{"every member listed", []string{"routes", "check", demoRoutes, "--request", "GET /api/customers/c-1", "--response", listed, "--fail-on-drop"}, "", ExitOK, "nothing is dropped", ""},
		{"list envelope and records, from stdin", []string{"routes", "check", demoRoutes, "--request", "GET /api/customers?page=1", "--response", "-"}, mustRead(t, page), ExitOK, "debug, tier", ""},
		{"refused response", []string{"routes", "check", demoRoutes, "--request", "GET /api/customers/c-1", "--response", notJSON, "--content-type", "text/plain"}, "", ExitFailure, "refused", "refuses"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := run(t, tt.stdin, tt.args...)
			if code != tt.code || !strings.Contains(out, tt.out) || !strings.Contains(errOut, tt.err) {
				t.Fatalf("exit %d (want %d)\nstdout: %s\nstderr: %s", code, tt.code, out, errOut)
			}
		})
	}
	code, out, _ := run(t, "", "routes", "check", demoRoutes, "--request", "GET /api/customers/c-1", "--response", extra, "--json")
	var rep routesCheckReport
	if code != ExitOK || json.Unmarshal([]byte(out), &rep) != nil || rep.Request == nil ||
		strings.Join(rep.Request.Dropped, ",") != "contact.fax,ssn" || strings.Contains(string(rep.Request.Body), "ssn") {
		t.Fatalf("--json: exit %d %s", code, out)
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestRoutesCheckNamesPlaintextPersonalFields: the personal-data fields a map carries without a
// key_scope are named, since crypto-erasure leaves them readable in the CRM's backups; the
// record id, system fields and encrypted fields are not.
func TestRoutesCheckNamesPlaintextPersonalFields(t *testing.T) {
	dir := t.TempDir()
	m := filepath.Join(dir, "map.yaml")
	cat := filepath.Join(dir, "catalog.json")
	if err := os.WriteFile(m, []byte(`routes:
  - {method: GET, path: "/a/{id}", action: read, resource: customer, customer_param: id, fields: [id, name, contact.email, created_at]}
  - {method: GET, path: "/a/{id}/notes", action: read, resource: note, customer_param: id, fields: [id, notes, name]}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cat, []byte(`{"fields": {
  "id": {"category": "user.unique_id"}, "name": {"category": "user.name"},
  "contact.email": {"category": "user.contact.email", "key_scope": "contact"},
  "notes": {"category": "user.content.private"}, "created_at": {"category": "system.operations"}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := run(t, "", "routes", "check", m, "--catalog", cat, "--json")
	var rep routesCheckReport
	if code != ExitOK || json.Unmarshal([]byte(out), &rep) != nil {
		t.Fatalf("exit %d %s %s", code, out, errOut)
	}
	if got := strings.Join(rep.PlaintextPersonalFields, ","); got != "name,notes" {
		t.Fatalf("plaintext_personal_fields = %q, want name,notes", got)
	}
	code, out, _ = run(t, "", "routes", "check", m, "--catalog", cat)
	if code != ExitOK || !strings.Contains(out, "crypto-erasure does not reach it, docs/key-model.md): name, notes") {
		t.Fatalf("exit %d %s", code, out)
	}
}

package e2e_test

import (
	"context"
	"strings"
	"testing"

	"github.com/consentry/consentry/sidecar/demo"
)

// testShippedRouteMapServesTheCRM: the demo CRM's route map says unlisted: drop, so a member it
// forgot would silently vanish from the CRM's answers. Each route's non-personal members
// (passthrough and envelope) must still arrive through the proxy, from the real CRM.
func testShippedRouteMapServesTheCRM(t *testing.T, s *demo.Stack) {
	ctx := context.Background()
	agent := func(path string) demo.Request {
		return demo.Request{As: demo.Agent, Method: "GET", Path: path, Purpose: demo.PurposeSupport, Case: "case-1"}
	}
	tests := []struct {
		name      string
		req       demo.Request
		envelope  []string // top-level members
		record    []string // members of the record (items[0] on a record_path route, else the document)
		atRecords bool
	}{
		{"customer", agent("/api/customers/c-000001"), nil, []string{"id", "name", "contact", "created_at"}, false},
		{"customer's notes", agent("/api/customers/c-000001/notes"), []string{"items", "total"}, []string{"id", "customer_id", "body", "author", "created_at"}, true},
		{"case", agent("/api/cases/case-1"), nil, []string{"id", "customer_id", "subject", "status", "assignees", "created_at"}, false},
		{"customer search", demo.Request{As: demo.Marketer, Method: "GET", Path: "/api/customers?page_size=5", Purpose: demo.PurposeMarketing}, []string{"items", "page", "page_size", "total"}, []string{"id"}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := s.Do(ctx, tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if r.Status != 200 || r.JSON == nil {
				t.Fatalf("%d %s", r.Status, r.Body)
			}
			for _, k := range tc.envelope {
				if _, ok := r.JSON[k]; !ok {
					t.Errorf("envelope member %q dropped: %s", k, r.Body)
				}
			}
			rec := r.JSON
			if tc.atRecords {
				items, _ := r.JSON["items"].([]any)
				if len(items) == 0 {
					t.Fatalf("no records: %s", r.Body)
				}
				rec, _ = items[0].(map[string]any)
			}
			for _, k := range tc.record {
				if _, ok := rec[k]; !ok {
					t.Errorf("record member %q dropped: %s", k, r.Body)
				}
			}
			// Encrypted members (a note's body among them) arrive decrypted, never as ciphertext.
			if strings.Contains(string(r.Body), "vault:v") {
				t.Errorf("ciphertext served: %s", r.Body)
			}
		})
	}
}

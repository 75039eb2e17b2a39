package consent

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestPastRetentionNeedsConfirmation: a retention deadline in the past was accepted
// silently, and with state.retention_erasure on the next sweep crypto-shreds the customer
// irrevocably (a typo: 2025 for 2035). PUT /v1/customers/{id} now refuses one more than the
// clock skew margin in the past with 400 customer.retention_in_past unless the body confirms
// it ("retention_in_past": "confirm"); nothing is stored then.
func TestPastRetentionNeedsConfirmation(t *testing.T) {
	s := openStore(t, testConfig(t, "sqlite"), Options{})
	cl := serveAdmin(t, s)
	now := time.Now().UTC()
	past := now.AddDate(-10, 0, 0)
	cases := []struct {
		name string
		body map[string]any
		code string // "" = stored
	}{
		{"past", map[string]any{"retention_until": past}, "customer.retention_in_past"},
		{"past, unclear confirmation", map[string]any{"retention_until": past, "retention_in_past": "yes"}, "customer.retention_in_past"},
		{"within the clock skew", map[string]any{"retention_until": now.Add(-time.Minute)}, ""},
		{"future", map[string]any{"retention_until": now.AddDate(10, 0, 0)}, ""},
		{"none", map[string]any{"retention_until": nil}, ""},
		{"past, confirmed", map[string]any{"retention_until": past, "retention_in_past": "confirm"}, ""},
	}
	for i, tc := range cases {
		id := fmt.Sprintf("C-ret-%d", i)
		err := cl.Do("PUT", "/customers/"+id, tc.body, nil)
		if CodeOf(err) != tc.code {
			t.Fatalf("%s: %v, want %q", tc.name, err, tc.code)
		}
		_, gerr := s.Customer(context.Background(), id)
		if stored := gerr == nil; stored != (tc.code == "") {
			t.Fatalf("%s: stored %v (%v)", tc.name, stored, gerr)
		}
	}
}

// TestAdminContentTypeIsParsed: the admin API's JSON bodies were checked with a prefix
// match on the Content-Type, so application/jsonx (or application/json-patch+json) passed.
// The media type is now parsed: application/json, any case, with parameters.
func TestAdminContentTypeIsParsed(t *testing.T) {
	s := openStore(t, testConfig(t, "sqlite"), Options{})
	cl := serveAdmin(t, s)
	for ctype, want := range map[string]int{
		"application/jsonx":                    http.StatusUnsupportedMediaType,
		"application/json-patch+json":          http.StatusUnsupportedMediaType,
		"application/json;;":                   http.StatusUnsupportedMediaType,
		"text/plain":                           http.StatusUnsupportedMediaType,
		"":                                     http.StatusUnsupportedMediaType,
		"application/json":                     http.StatusOK,
		"Application/JSON; charset=utf-8":      http.StatusOK,
		"application/json ; charset=\"utf-8\"": http.StatusOK,
	} {
		req, err := http.NewRequest("PUT", cl.BaseURL+"/v1/customers/C-ct", strings.NewReader(`{"retention_until": null}`))
		if err != nil {
			t.Fatal(err)
		}
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		req.Header.Set("Authorization", "Bearer "+cl.Token)
		resp, err := cl.HTTP.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("Content-Type %q: %d, want %d", ctype, resp.StatusCode, want)
		}
	}
}

// TestCaseAssigneesAreBounded: PUT /v1/cases took any number of assignees (200,000 were
// stored and copied into every decision on the case). At most MaxCaseAssignees now.
func TestCaseAssigneesAreBounded(t *testing.T) {
	s := openStore(t, testConfig(t, "sqlite"), Options{})
	cl := serveAdmin(t, s)
	names := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("emp-%d", i)
		}
		return out
	}
	if err := cl.Do("PUT", "/cases/K-big", map[string]any{"customer_id": "C-1", "assignees": names(MaxCaseAssignees + 1)}, nil); CodeOf(err) != "case.too_many_assignees" {
		t.Fatalf("%d assignees: %v", MaxCaseAssignees+1, err)
	}
	var c Case
	if err := cl.Do("PUT", "/cases/K-big", map[string]any{"customer_id": "C-1", "assignees": names(MaxCaseAssignees)}, &c); err != nil || len(c.Assignees) != MaxCaseAssignees {
		t.Fatalf("%d assignees: %v", MaxCaseAssignees, err)
	}
}

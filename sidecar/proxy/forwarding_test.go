package proxy_test

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/consentry/consentry/sidecar/pipeline"
	"github.com/consentry/consentry/sidecar/proxy"
	tt "github.com/consentry/consentry/sidecar/transform/transformtest"
)

// TestOtherSpellingsOfDecisionHeadersRefused: the pipeline decides on X-Purpose, but a PHP,
// WSGI or Rack CRM maps X_Purpose to the same variable and may read that one instead. A
// request carrying an underscore spelling of a header the decision reads (purpose, case,
// break-glass justification; whatever names are configured) is refused as ambiguous, like two
// purposes, before the CRM, and logged as that deny.
func TestOtherSpellingsOfDecisionHeadersRefused(t *testing.T) {
	f := newFixture(t)
	var calls atomic.Int64
	up := echo(t)
	counting := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { calls.Add(1); next.ServeHTTP(w, r) })
	}
	up.Config.Handler = counting(up.Config.Handler)
	url := startProxy(t, proxy.Config{Upstream: up.URL}, f.fx.Pipeline, f.tr)
	custom, err := f.fx.WithConfigAndLog(pipeline.Config{Headers: pipeline.HeaderConfig{Purpose: "x-data-purpose"}}, f.capture)
	if err != nil {
		t.Fatal(err)
	}
	customURL := startProxy(t, proxy.Config{Upstream: up.URL}, custom, f.tr)
	agent := f.fx.Agent()
	for _, c := range []struct {
		name, url, purposeHeader string
		extra                    map[string]string
	}{
		{"second purpose spelled with _", url, "X-Purpose", map[string]string{"X-Case-Id": "case-7", "X_Purpose": tt.Marketing}},
		{"second case spelled with _", url, "X-Purpose", map[string]string{"X-Case-Id": "case-7", "X_Case_Id": "case-8"}},
		{"break-glass spelled with _", url, "X-Purpose", map[string]string{"X-Case-Id": "case-7", "X_Break_Glass": "patient in danger"}},
		{"configured purpose header spelled with _", customURL, "X-Data-Purpose", map[string]string{"X-Case-Id": "case-7", "X_Data_Purpose": tt.Marketing}},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := map[string]string{c.purposeHeader: tt.Support}
			for k, v := range c.extra {
				h[k] = v
			}
			before := calls.Load()
			r := do(t, "GET", c.url+"/api/customers/c-1001", agent, "", "", "", h)
			if r.status != 400 || !strings.Contains(string(r.body), pipeline.ReasonHeaderAmbiguous) || calls.Load() != before {
				t.Fatalf("%d %s (CRM called: %v)", r.status, r.body, calls.Load() != before)
			}
			e := f.capture.Find(r.header.Get(pipeline.HeaderDecisionID))
			if e == nil || e.Decision.Allow || e.Decision.Reasons[0].Code != pipeline.ReasonHeaderAmbiguous || e.Enforcement.Status != 400 {
				t.Fatalf("not logged as the deny it was: %+v", e)
			}
		})
	}
	if r := do(t, "GET", url+"/api/customers/c-1001", agent, tt.Support, "case-7", "", nil); r.status != 200 {
		t.Fatalf("hyphen spellings only: %d %s", r.status, r.body)
	}
	if r := do(t, "GET", customURL+"/api/customers/c-1001", agent, "", "case-7", "", map[string]string{"X-Data-Purpose": tt.Support}); r.status != 200 {
		t.Fatalf("configured purpose header: %d %s", r.status, r.body)
	}
}

// TestCallerForwardingHeadersNeverReachTheCRM: every caller-supplied X-Forwarded-* and
// X-Original-* (and X-Envoy-Original-Path) is removed, in either spelling, not only the ones
// the proxy sets itself: a CRM behind nginx auth_request or Traefik forward-auth reads
// X-Forwarded-Uri / X-Original-URI / X-Forwarded-Method as the request it serves.
func TestCallerForwardingHeadersNeverReachTheCRM(t *testing.T) {
	f := newFixture(t)
	up := echo(t)
	url := startProxy(t, proxy.Config{Upstream: up.URL}, f.fx.Pipeline, f.tr)
	forged := map[string]string{
		"X-Marker":                "m",
		"X-Forwarded-Uri":         "/api/export",
		"X-Forwarded-Path":        "/api/export",
		"X-Forwarded-Method":      "DELETE",
		"X-Forwarded-Scheme":      "https",
		"X-Forwarded-Ssl":         "on",
		"X-Forwarded-Client-Cert": "Hash=forged;URI=spiffe://evil",
		"X_Forwarded_Uri":         "/api/export",
		"X-Original-Method":       "DELETE",
		"X-Original-URI":          "/api/export",
		"X_Original_Host":         "evil.example",
		"X-Envoy-Original-Path":   "/api/export",
		"X-Forwarded-Proto":       "https",
	}
	r := do(t, "GET", url+"/api/customers/c-1001", f.fx.Agent(), tt.Support, "case-7", "", forged)
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	seen := r.json(t)["seen"].(map[string]any)
	for k, v := range seen {
		lk := strings.ReplaceAll(k, "_", "-")
		switch {
		case lk == "x-forwarded-for" || lk == "x-forwarded-host":
			// the proxy's own
		case lk == "x-forwarded-proto":
			if v != "http" {
				t.Errorf("the CRM saw the caller's %s: %v", k, v)
			}
		case strings.HasPrefix(lk, "x-forwarded-") || strings.HasPrefix(lk, "x-original-") || lk == "x-envoy-original-path":
			t.Errorf("the CRM saw the caller's %s: %v", k, v)
		}
	}
	if seen["x-forwarded-for"] != "127.0.0.1" || seen["x-forwarded-host"] == nil || seen["x-marker"] != "m" {
		t.Errorf("seen %v", seen)
	}
}

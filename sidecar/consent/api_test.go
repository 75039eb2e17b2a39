package consent

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/admin"
	"github.com/consentry/consentry/sidecar/enrich"
	"github.com/prometheus/client_golang/prometheus"
)

// serveAdmin runs a real admin server with the store mounted on a loopback port.
func serveAdmin(t *testing.T, s *Store) *Client {
	t.Helper()
	srv := admin.New(admin.Config{Token: "admin-secret"}, prometheus.NewRegistry())
	s.Mount(srv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = srv.ServeListener(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	// The CLI's client allows 5 minutes; an import part under -race on a loaded CI machine
	// took over 10 s (TestImportFailsPartWay), so the tests allow 2.
	return &Client{BaseURL: "http://" + ln.Addr().String(), Token: "admin-secret", HTTP: &http.Client{Timeout: 2 * time.Minute}}
}

func TestAdminAPI(t *testing.T) {
	for _, backend := range testBackends {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			testAdminAPI(t, backend)
		})
	}
}

func testAdminAPI(t *testing.T, backend string) {
	s := openStore(t, testConfig(t, backend), Options{})
	cl := serveAdmin(t, s)
	exp := time.Now().Add(90 * 24 * time.Hour).UTC().Truncate(time.Second)
	in := grantInput("cust-api", "marketing.communications.email")
	in.ExpiresAt, in.EventID = &exp, "api-1"
	var res Result
	if err := cl.Do("POST", "/consents", in, &res); err != nil {
		t.Fatal(err)
	}
	if res.Event.RecordedBy != "admin-token" || res.Current.Status != KindGranted {
		t.Fatalf("grant answer %+v", res)
	}
	if e, _ := s.Enrich(context.Background(), enrich.Query{CustomerID: "cust-api"}); len(e.Consents) != 1 {
		t.Fatalf("grant through the API not in the view: %+v", e)
	}
	// Bad input: clear 4xx {error:{code,message}}.
	past := time.Now().Add(-time.Hour)
	pastIn := grantInput("cust-api", "analytics.reporting")
	pastIn.ExpiresAt = &past
	cases := []struct {
		name   string
		method string
		path   string
		body   any
		status int
		code   string
	}{
		{"unknown purpose", "POST", "/consents", grantInput("cust-api", "marketing.telepathy"), 400, "consent.unknown_purpose"},
		{"expiry in the past", "POST", "/consents", pastIn, 400, "consent.expiry_in_past"},
		{"malformed customer id", "POST", "/consents", grantInput("a b", "analytics.reporting"), 400, "invalid.customer_id"},
		{"duplicate event", "POST", "/consents", in, 409, "consent.duplicate_event"},
		{"unknown field", "POST", "/consents", map[string]any{"customer_id": "c", "purpose": "analytics.reporting", "notice_hsh": "x"}, 400, "invalid.json"},
		{"wrong type", "POST", "/consents", map[string]any{"customer_id": 7}, 400, "invalid.json"},
		{"bad time", "POST", "/consents", map[string]any{"customer_id": "c", "expires_at": "tomorrow"}, 400, "invalid.json"},
		{"withdraw unknown purpose", "POST", "/consents/withdrawals", ConsentInput{CustomerID: "c", Purpose: "x.y"}, 400, "consent.unknown_purpose"},
		{"unknown customer", "GET", "/customers/nobody", nil, 404, "customer.not_found"},
		{"malformed path id", "GET", "/customers/%2e%2e", nil, 400, "invalid.customer_id"},
		{"case bad status", "PUT", "/cases/C-1", map[string]any{"customer_id": "cust-api", "status": "maybe"}, 400, "case.invalid_status"},
		{"unknown case", "GET", "/cases/C-404", nil, 404, "case.not_found"},
		{"agreement unbounded", "PUT", "/agreements/proc", map[string]any{"purposes": []string{"third_party_sharing"}, "categories": []string{"user.name"}}, 400, "agreement.unbounded"},
		{"import empty", "POST", "/consents/import", strings.NewReader(""), 400, "import.empty"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := cl.Do(tc.method, tc.path, tc.body, nil)
			var e *Error
			if !errors.As(err, &e) || e.Status != tc.status || e.Code != tc.code || e.Message == "" {
				t.Fatalf("got %v, want %d %s", err, tc.status, tc.code)
			}
		})
	}
	// Unauthenticated calls are refused.
	anon := *cl
	anon.Token = ""
	if err := anon.Do("GET", "/customers/cust-api", nil, nil); CodeOf(err) != "admin.unauthenticated" {
		t.Fatalf("anonymous: %v", err)
	}
	// Case, agreement, customer round trips.
	var c Case
	if err := cl.Do("PUT", "/cases/C-1", map[string]any{"customer_id": "cust-api", "assignees": []string{"alice"}}, &c); err != nil || c.Status != "open" {
		t.Fatalf("put case %+v %v", c, err)
	}
	if err := cl.Do("GET", "/cases/C-1", nil, &c); err != nil || c.Assignees[0] != "alice" {
		t.Fatalf("get case %+v %v", c, err)
	}
	until := time.Now().Add(24 * time.Hour)
	var a Agreement
	if err := cl.Do("PUT", "/agreements/proc", map[string]any{"purposes": []string{"third_party_sharing"}, "categories": []string{"user.name"}, "valid_until": until}, &a); err != nil {
		t.Fatal(err)
	}
	if err := cl.Do("GET", "/agreements/proc", nil, &a); err != nil || a.Purposes[0] != "third_party_sharing" {
		t.Fatalf("get agreement %+v %v", a, err)
	}
	var cust Customer
	if err := cl.Do("PUT", "/customers/cust-api", map[string]any{"retention_until": until}, &cust); err != nil || cust.RetentionUntil == nil {
		t.Fatalf("put customer %+v %v", cust, err)
	}
	if err := cl.Do("POST", "/consents/withdrawals", ConsentInput{CustomerID: "cust-api", Purpose: "marketing.communications.email", Reason: "asked by phone"}, &res); err != nil {
		t.Fatal(err)
	}
	var h struct{ Events []Event }
	if err := cl.Do("GET", "/customers/cust-api/consents/history", nil, &h); err != nil || len(h.Events) != 2 || h.Events[1].Reason != "asked by phone" {
		t.Fatalf("history %+v %v", h, err)
	}
	var v CustomerView
	if err := cl.Do("GET", "/customers/cust-api", nil, &v); err != nil || v.Consents[0].Status != KindWithdrawn || v.Customer.RetentionUntil == nil {
		t.Fatalf("customer view %+v %v", v, err)
	}
	var ps struct{ Purposes []string }
	if err := cl.Do("GET", "/purposes", nil, &ps); err != nil || len(ps.Purposes) < 5 {
		t.Fatalf("purposes %+v %v", ps, err)
	}
	// Readiness and status are registered.
	resp, err := http.Get(cl.BaseURL + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// Not ready overall (no policy in this test server) is fine; the state check must not fail.
	if err := s.Ready(context.Background()); err != nil {
		t.Fatalf("ready: %v", err)
	}
}

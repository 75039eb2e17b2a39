package e2e_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/demo"
	"github.com/consentry/consentry/sidecar/envoy/envoytest"
)

// startStack runs the demo stack (real Vault, democrm, consentry processes) on free ports with a
// small customer base.
func startStack(t *testing.T, o demo.Options) *demo.Stack {
	t.Helper()
	o.Dir = t.TempDir()
	o.Bin = binDir
	if o.Customers == 0 {
		o.Customers = 120
	}
	o.Proxy, o.Admin, o.GRPC = freeAddr(t), freeAddr(t), freeAddr(t)
	if o.CRM == "" {
		o.CRM = freeAddr(t)
	}
	var progress bytes.Buffer
	o.Progress = &progress
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s, err := demo.Start(ctx, o)
	if err != nil {
		t.Fatalf("stack: %v\n%s", err, progress.String())
	}
	t.Cleanup(s.Close)
	t.Logf("stack up:\n%s", progress.String())
	return s
}

// TestPrinciplesEndToEnd walks the demo tour against real processes: each step asserts one
// principle (need-to-know, per-record consent filtering, processor agreements, customer
// rights, break-glass, crypto-shredding that defeats backups, verifiable audit trail). Then it
// checks the ext_authz gRPC door of the same sidecar with a real gRPC client.
func TestPrinciplesEndToEnd(t *testing.T) {
	s := startStack(t, demo.Options{})
	t.Run("ext_authz gRPC", func(t *testing.T) { testExtAuthz(t, s) })
	t.Run("ext_proc gRPC", func(t *testing.T) { testExtProc(t, s) })
	t.Run("shipped route map", func(t *testing.T) { testShippedRouteMapServesTheCRM(t, s) })
	t.Run("tour", func(t *testing.T) {
		var out bytes.Buffer
		tour := &demo.Tour{S: s, Out: &out}
		err := tour.Run(context.Background())
		if err != nil {
			t.Fatalf("%v\n--- tour output ---\n%s\n--- consentry log ---\n%s", err, out.String(), s.Consentry.Log(4000))
		}
		t.Log(out.String())
	})
}

func testExtAuthz(t *testing.T, s *demo.Stack) {
	tok, err := s.Token(demo.Agent)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		path    string
		headers map[string]string
		allow   bool
		reason  string
	}{
		{"assigned case", "/api/customers/c-000001", map[string]string{"x-case-id": "case-1"}, true, ""},
		{"no case", "/api/customers/c-000001", nil, false, "case.missing"},
		{"encoded slash bypass attempt", "/api/customers%2Fc-000001", map[string]string{"x-case-id": "case-1"}, false, "request.path_encoded_separator"},
		{"unknown route", "/api/admin/dump", nil, false, "route.unknown"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := map[string]string{"authorization": "Bearer " + tok, "x-purpose": demo.PurposeSupport}
			for k, v := range tc.headers {
				h[k] = v
			}
			resp := envoytest.Check(t, s.GRPCAddr, "GET", tc.path, h)
			if envoytest.Allowed(resp) != tc.allow {
				t.Fatalf("allowed=%v want %v: %v", envoytest.Allowed(resp), tc.allow, resp)
			}
			if tc.reason != "" && !strings.Contains(resp.GetDeniedResponse().GetBody(), tc.reason) {
				t.Errorf("deny body %s lacks %s", resp.GetDeniedResponse().GetBody(), tc.reason)
			}
		})
	}
}

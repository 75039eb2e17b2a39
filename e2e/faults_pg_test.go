package e2e_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/consentry/consentry/e2e/harness"
	"github.com/consentry/consentry/sidecar/auditlog"
	"github.com/consentry/consentry/sidecar/envoy/envoytest"
	"github.com/consentry/consentry/sidecar/identity/identitytest"
)

// TestFaultPostgresStopped: the sidecar's PostgreSQL vanishes (every connection dropped, the
// port closed). Readiness goes down, admin writes fail with a clear error instead of hanging,
// decisions keep coming from the last consistent view and are all logged, an unauthenticated
// caller still gets 401; when the database is back the sidecar is ready again and writes work.
func TestFaultPostgresStopped(t *testing.T) {
	ctx := context.Background()
	schema := pgSchema(t, "e2e_pgfault")
	u, err := url.Parse(pgURL())
	if err != nil {
		t.Fatal(err)
	}
	fwd, err := harness.NewTCPProxy(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fwd.Cut)
	u.Host = fwd.Addr
	dir := t.TempDir()
	is, err := identitytest.New("https://idp.e2e", "consentry")
	if err != nil {
		t.Fatal(err)
	}
	jwks, err := is.WriteJWKS(dir)
	if err != nil {
		t.Fatal(err)
	}
	r := startPGReplica(t, dir, is.Name, jwks, "pgfault", u.String(), schema)
	admin := func(method, path, body string) (int, string) {
		ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, method, "http://"+r.admin+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer e2e-admin")
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v (an admin call must answer, not hang)", method, path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	ready := func() bool {
		resp, err := http.Get("http://" + r.admin + "/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}
	claims := is.Claims("emp-17")
	claims["subject_type"], claims["roles"] = "employee", []any{"support_agent"}
	tok, err := is.Sign(jose.ES256, claims)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	check := func(auth string) bool {
		h := map[string]string{"x-purpose": "essential.service.operations.support", "x-case-id": "case-77"}
		if auth != "" {
			h["authorization"] = auth
		}
		resp := envoytest.Check(t, r.grpc, "GET", "/api/customers/c-770001", h)
		if id := resp.GetDynamicMetadata().GetFields()["decision_id"].GetStringValue(); id != "" {
			ids = append(ids, id)
		}
		if auth == "" && resp.GetDeniedResponse().GetStatus().GetCode() != 401 {
			t.Errorf("unauthenticated: want 401, got %v", resp.GetDeniedResponse().GetStatus())
		}
		return envoytest.Allowed(resp)
	}
	if code, b := admin("PUT", "/v1/customers/c-770001", `{"retention_until": "2035-01-01T00:00:00Z"}`); code/100 != 2 {
		t.Fatalf("%d %s", code, b)
	}
	if code, b := admin("PUT", "/v1/cases/case-77", `{"customer_id": "c-770001", "assignees": ["emp-17"]}`); code/100 != 2 {
		t.Fatalf("%d %s", code, b)
	}
	if !check("Bearer " + tok) {
		t.Fatal("allowed before the fault")
	}

	fwd.Cut()
	deadline := time.Now().Add(10 * time.Second)
	for ready() {
		if time.Now().After(deadline) {
			t.Fatal("readiness stayed up with the database gone")
		}
		time.Sleep(100 * time.Millisecond)
	}
	code, body := admin("PUT", "/v1/cases/case-77", `{"customer_id": "c-770001", "assignees": ["emp-17"], "status": "closed"}`)
	if code < 500 || !strings.Contains(body, `"code"`) {
		t.Errorf("a write with the database gone must fail with a coded 5xx error, got %d %s", code, body)
	}
	if !check("Bearer " + tok) {
		t.Error("the last consistent state must keep serving decisions (the failed close did not happen)")
	}
	check("")

	if err := fwd.Restore(); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(30 * time.Second)
	for !ready() {
		if time.Now().After(deadline) {
			t.Fatal("not ready again after the database came back")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if code, b := admin("PUT", "/v1/cases/case-77", `{"customer_id": "c-770001", "assignees": ["emp-17"], "status": "closed"}`); code/100 != 2 {
		t.Fatalf("write after recovery: %d %s", code, b)
	}
	if check("Bearer " + tok) {
		t.Error("the case closed after recovery must deny")
	}
	if err := r.proc.Stop(); err != nil {
		t.Fatal(err)
	}
	logged := map[string]bool{}
	if err := auditlog.ScanEvents(dir+"/pgfault-decisions", func(ev *auditlog.Event, _ []byte) error {
		logged[ev.DecisionID] = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if !logged[id] {
			t.Errorf("decision %s answered but not logged", id)
		}
	}
	if len(ids) < 4 {
		t.Errorf("expected decision ids in ext_authz metadata, got %d", len(ids))
	}
}

package e2e_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/jackc/pgx/v5"

	"github.com/consentry/consentry/e2e/harness"
	"github.com/consentry/consentry/sidecar/envoy/envoytest"
	"github.com/consentry/consentry/sidecar/identity/identitytest"
)

// startPGReplica runs `consentry run` with PostgreSQL state (schema) and the ext_authz door.
func startPGReplica(t *testing.T, dir, issuer, jwks, name, url, schema string) *replica {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	r := &replica{admin: freeAddr(t), grpc: freeAddr(t)}
	cfg := fmt.Sprintf(`
policy: {dir: %[1]s/policies, require_signatures: false}
admin: {listen: %[2]s, token: e2e-admin}
identity:
  issuers: [{issuer: %[3]s, audiences: [consentry], jwks_file: %[4]s}]
routes: {file: %[1]s/deploy/routes/democrm.yaml}
state:
  backend: postgres
  postgres: {url: %[5]q, schema: %[6]s}
decision_log: {dir: %[7]s/%[8]s-decisions}
envoy: {listen: %[9]s, response_phase: true}
`, root, r.admin, issuer, jwks, url, schema, dir, name, r.grpc)
	path := filepath.Join(dir, name+".yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	r.proc, err = harness.Start(name, dir, filepath.Join(binDir, "consentry"), []string{"run", "--config", path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.proc.Stop() })
	if err := r.proc.WaitHTTP(context.Background(), "http://"+r.admin+"/ready", 60*time.Second); err != nil {
		t.Fatal(err)
	}
	return r
}

// pgSchema names a fresh schema on the machine's PostgreSQL (required: make test starts one
// when none answers) and drops it when the test ends.
func pgSchema(t *testing.T, prefix string) string {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), pgURL())
	if err != nil {
		t.Fatalf("PostgreSQL at %s is required (make test starts one): %v", pgURL(), err)
	}
	schema := fmt.Sprintf("%s_%d", prefix, time.Now().UnixNano())
	t.Cleanup(func() {
		_, _ = conn.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+schema+" CASCADE")
		conn.Close(context.Background())
	})
	return schema
}

func pgURL() string {
	if u := os.Getenv("CONSENTRY_PG_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

type replica struct {
	proc  *harness.Proc
	admin string
	grpc  string
}

// TestReplicasShareStateWithinOneSecond runs two consentry processes on one PostgreSQL schema:
// a case opened through one replica's admin API changes the other replica's ext_authz answer
// within a second, a consent granted on one and withdrawn on the other is followed by both
// within a second, and closing the case on the second changes the first's answer.
func TestReplicasShareStateWithinOneSecond(t *testing.T) {
	schema := pgSchema(t, "e2e_replicas")
	dir := t.TempDir()
	is, err := identitytest.New("https://idp.e2e", "consentry")
	if err != nil {
		t.Fatal(err)
	}
	jwks, err := is.WriteJWKS(dir)
	if err != nil {
		t.Fatal(err)
	}
	start := func(name string) *replica { return startPGReplica(t, dir, is.Name, jwks, name, pgURL(), schema) }
	a, b := start("replica-a"), start("replica-b")

	claims := is.Claims("emp-17")
	claims["subject_type"], claims["roles"] = "employee", []any{"support_agent"}
	tok, err := is.Sign(jose.ES256, claims)
	if err != nil {
		t.Fatal(err)
	}
	allowed := func(r *replica) (bool, string) {
		resp := envoytest.Check(t, r.grpc, "GET", "/api/customers/c-900001",
			map[string]string{"authorization": "Bearer " + tok, "x-purpose": "essential.service.operations.support", "x-case-id": "case-900"})
		return envoytest.Allowed(resp), resp.GetDeniedResponse().GetBody()
	}
	admin := func(r *replica, method, path, body string) {
		req, _ := http.NewRequest(method, "http://"+r.admin+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer e2e-admin")
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
		}
	}
	// waitFor polls r until its answer is want and returns how long that took.
	waitFor := func(r *replica, want bool) time.Duration {
		t0 := time.Now()
		for {
			got, body := allowed(r)
			if got == want {
				return time.Since(t0)
			}
			if time.Since(t0) > 5*time.Second {
				t.Fatalf("replica did not converge to allowed=%v within 5s (last: %s)", want, body)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	admin(a, "PUT", "/v1/customers/c-900001", `{"retention_until": "2035-01-01T00:00:00Z"}`)
	if ok, _ := allowed(b); ok {
		t.Fatal("allowed before any case exists")
	}
	admin(a, "PUT", "/v1/cases/case-900", `{"customer_id": "c-900001", "assignees": ["emp-17"], "status": "open", "purpose": "essential.service.operations.support"}`)
	if d := waitFor(b, true); d > time.Second {
		t.Errorf("case opened on replica A took %s to reach replica B (want <= 1s)", d)
	} else {
		t.Logf("A -> B: %s", d)
	}
	// A marketer's access follows the customer's consent: granted on A, withdrawn on B.
	mclaims := is.Claims("mkt-40")
	mclaims["subject_type"], mclaims["roles"] = "employee", []any{"marketing"}
	mtok, err := is.Sign(jose.ES256, mclaims)
	if err != nil {
		t.Fatal(err)
	}
	var lastDeny string
	marketing := func(r *replica) bool {
		resp := envoytest.Check(t, r.grpc, "GET", "/api/customers/c-900001",
			map[string]string{"authorization": "Bearer " + mtok, "x-purpose": "marketing.communications.email"})
		lastDeny = resp.GetDeniedResponse().GetBody()
		return envoytest.Allowed(resp)
	}
	waitMarketing := func(r *replica, want bool) time.Duration {
		t0 := time.Now()
		for marketing(r) != want {
			if time.Since(t0) > 5*time.Second {
				t.Fatalf("marketing access did not converge to %v within 5s (last deny: %s)", want, lastDeny)
			}
			time.Sleep(10 * time.Millisecond)
		}
		return time.Since(t0)
	}
	admin(a, "POST", "/v1/consents", `{"customer_id": "c-900001", "purpose": "marketing.communications.email", "notice_version": "2026-03", "notice_hash": "sha256:9f2c1a5b8e7d6c4f3a2b1e0d9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b", "channel": "web"}`)
	if d := waitMarketing(b, true); d > time.Second {
		t.Errorf("consent granted on A took %s to reach B", d)
	}
	admin(b, "POST", "/v1/consents/withdrawals", `{"customer_id": "c-900001", "purpose": "marketing.communications.email", "channel": "email-footer"}`)
	if d := waitMarketing(a, false); d > time.Second {
		t.Errorf("consent withdrawn on B took %s to reach A (want <= 1s)", d)
	} else {
		t.Logf("withdrawal B -> A: %s", d)
	}

	var body bytes.Buffer
	body.WriteString(`{"customer_id": "c-900001", "assignees": ["emp-17"], "status": "closed"}`)
	admin(b, "PUT", "/v1/cases/case-900", body.String())
	if d := waitFor(a, false); d > time.Second {
		t.Errorf("case closed on replica B took %s to reach replica A (want <= 1s)", d)
	} else {
		t.Logf("B -> A: %s", d)
	}
}

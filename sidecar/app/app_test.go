package app_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/go-jose/go-jose/v4"

	"github.com/consentry/consentry/sidecar/app"
	"github.com/consentry/consentry/sidecar/auditlog"
	"github.com/consentry/consentry/sidecar/config"
	"github.com/consentry/consentry/sidecar/consent"
	"github.com/consentry/consentry/sidecar/engine"
	"github.com/consentry/consentry/sidecar/envoy/envoytest"
	"github.com/consentry/consentry/sidecar/identity/identitytest"
	"github.com/consentry/consentry/sidecar/pipeline/pipelinetest"
)

const support = "essential.service.operations.support"

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

type sidecar struct {
	app    *app.App
	admin  string
	grpc   string
	dir    string
	issuer *identitytest.Issuer
	stop   func()
}

// start assembles and runs a sidecar with the real policy library, the demo CRM route map, a
// SQLite state store, the hash-chained decision log and the ext_authz gRPC listener.
func start(t *testing.T, extra string) *sidecar {
	t.Helper()
	root := pipelinetest.RepoRoot()
	dir := t.TempDir()
	is, err := identitytest.New("https://idp.consentry.test", "consentry")
	if err != nil {
		t.Fatal(err)
	}
	jwks, err := is.WriteJWKS(dir)
	if err != nil {
		t.Fatal(err)
	}
	s := &sidecar{admin: freeAddr(t), grpc: freeAddr(t), dir: dir, issuer: is}
	yaml := fmt.Sprintf(`
policy:
  dir: %[1]s/policies
  require_signatures: false
engine:
  timeout: 5s
admin:
  listen: %[2]s
  token: test-admin-token
identity:
  issuers:
    - issuer: %[3]s
      audiences: [consentry]
      jwks_file: %[4]s
routes:
  file: %[1]s/deploy/routes/democrm.yaml
pipeline:
  timeout: 5s
state:
  data_dir: %[5]s/state
  purposes_file: %[1]s/policies/data/consentry/catalog/data.json
decision_log:
  dir: %[5]s/decisions
envoy:
  listen: %[6]s
  response_phase: true   # the shipped route map drops unlisted members: only a response phase can
%[7]s`, root, s.admin, is.Name, jwks, dir, s.grpc, extra)
	cfg, err := config.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	a, err := app.New(context.Background(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	s.app = a
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var stopped bool
	s.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}
	t.Cleanup(s.stop)
	waitReady(t, "http://"+s.admin+"/ready")
	return s
}

func waitReady(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
			last = string(b)
		} else {
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("sidecar not ready: %s", last)
}

func (s *sidecar) token(t *testing.T, sub, typ string, roles ...string) string {
	t.Helper()
	c := s.issuer.Claims(sub)
	c["subject_type"] = typ
	r := make([]any, len(roles))
	for i, x := range roles {
		r[i] = x
	}
	c["roles"] = r
	tok, err := s.issuer.Sign(jose.ES256, c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (s *sidecar) check(t *testing.T, method, path string, headers map[string]string) *authv3.CheckResponse {
	t.Helper()
	return envoytest.Check(t, s.grpc, method, path, headers)
}

// TestAssembledSidecarDecidesAndAudits runs the whole assembly: state written through the
// store changes what ext_authz answers, and every decision is in a verifiable log.
func TestAssembledSidecarDecidesAndAudits(t *testing.T) {
	s := start(t, "")
	ctx := context.Background()
	st := s.app.State
	if st == nil || s.app.Pipeline == nil || s.app.Decisions == nil || s.app.Envoy == nil {
		t.Fatalf("assembly incomplete: %+v", s.app)
	}
	future := time.Now().Add(365 * 24 * time.Hour)
	if _, err := st.PutCustomer(ctx, consent.Customer{ID: "c-000001", RetentionUntil: &future}); err != nil {
		t.Fatal(err)
	}
	// Through the admin API, followed by other admin requests: Fiber reuses request buffers,
	// and a route parameter kept as a map key must not be overwritten by the next request.
	s.admin_(t, "PUT", "/v1/cases/case-1", `{"customer_id": "c-000001", "assignees": ["emp-17"], "purpose": "`+support+`"}`)
	for i := 0; i < 5; i++ {
		s.admin_(t, "PUT", fmt.Sprintf("/v1/cases/zz-%d", i), `{"customer_id": "c-000009", "assignees": ["emp-99"]}`)
	}
	agent := "Bearer " + s.token(t, "emp-17", "employee", "support_agent")
	other := "Bearer " + s.token(t, "emp-23", "employee", "support_agent")
	cases := []struct {
		name    string
		headers map[string]string
		allow   bool
		code    string
	}{
		{"assigned case", map[string]string{"authorization": agent, "x-purpose": support, "x-case-id": "case-1"}, true, ""},
		{"no case", map[string]string{"authorization": agent, "x-purpose": support}, false, "case.missing"},
		{"case of someone else", map[string]string{"authorization": other, "x-purpose": support, "x-case-id": "case-1"}, false, "case.not_assigned"},
		{"no credentials", map[string]string{"x-purpose": support}, false, "identity.credential_missing"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := s.check(t, "GET", "/api/customers/c-000001", tc.headers)
			allowed := envoytest.Allowed(resp)
			if allowed != tc.allow {
				t.Fatalf("allowed=%v, want %v: %v", allowed, tc.allow, resp)
			}
			if tc.code != "" && !strings.Contains(resp.GetDeniedResponse().GetBody(), tc.code) {
				t.Errorf("deny body %q lacks %s", resp.GetDeniedResponse().GetBody(), tc.code)
			}
		})
	}
	// Closing the case takes effect on the next request (no restart, no cache staleness).
	if _, err := st.PutCase(ctx, consent.Case{ID: "case-1", CustomerID: "c-000001", Assignees: []string{"emp-17"}, Status: consent.CaseClosed}); err != nil {
		t.Fatal(err)
	}
	resp := s.check(t, "GET", "/api/customers/c-000001", map[string]string{"authorization": agent, "x-purpose": support, "x-case-id": "case-1"})
	if !strings.Contains(resp.GetDeniedResponse().GetBody(), "case.closed") {
		t.Fatalf("closed case must deny: %v", resp)
	}

	metrics := get(t, "http://"+s.admin+"/metrics")
	for _, m := range []string{"consentry_engine_evaluations_running 0", "consentry_engine_evaluations_waiting 0", "consentry_decisions_total"} {
		if !strings.Contains(metrics, m) {
			t.Errorf("/metrics lacks %q", m)
		}
	}

	status := get(t, "http://"+s.admin+"/status")
	for _, section := range []string{`"policy"`, `"state"`, `"decision_log"`} {
		if !strings.Contains(status, section) {
			t.Errorf("/status lacks %s: %s", section, status)
		}
	}

	s.stop()
	pub, err := auditlog.LoadPublicKey(filepath.Join(s.dir, "decisions.keys", "signing.pub"))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := auditlog.Verify(filepath.Join(s.dir, "decisions"), auditlog.VerifyOptions{
		PublicKeys: map[string]ed25519.PublicKey{auditlog.KeyIDOf(pub): pub}, RequireSealed: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.ProblemCount != 0 || rep.Decisions != len(cases)+1 {
		t.Fatalf("log: %d decisions (want %d), problems %+v", rep.Decisions, len(cases)+1, rep.Problems)
	}
}

func (s *sidecar) admin_(t *testing.T, method, path, body string) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+s.admin+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer test-admin-token")
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

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestConfigErrorsNameTheSection: a broken section fails assembly with its key, not later.
func TestConfigErrorsNameTheSection(t *testing.T) {
	root := pipelinetest.RepoRoot()
	dir := t.TempDir()
	cases := []struct{ name, yaml, want string }{
		{"routes missing", "identity: {}\n", "routes:"},
		{"both state and enrichment", "routes: {file: " + root + "/deploy/routes/democrm.yaml}\nstate: {data_dir: " + dir + "/s}\nenrichment: {file: x.yaml}\n", "enrichment:"},
		{"policy does not compile", "", "rego_parse_error"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pol := root + "/policies"
			if tc.name == "policy does not compile" {
				pol = t.TempDir()
				if err := os.WriteFile(filepath.Join(pol, "x.rego"), []byte("package consentry\ndecision := {"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			y := fmt.Sprintf("policy: {dir: %s, require_signatures: false}\ndecision_log: {dir: %s/log-%d}\n%s", pol, dir, time.Now().UnixNano(), tc.yaml)
			if !strings.Contains(tc.yaml, "state:") {
				y += fmt.Sprintf("state: {data_dir: %s/state-%d}\n", dir, time.Now().UnixNano())
			}
			cfg, err := config.Parse("t.yaml", []byte(y))
			if err != nil {
				t.Fatal(err)
			}
			_, err = app.New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want error containing %q, got %v", tc.want, err)
			}
			// `consentry run` exits with 3 (policies do not compile) on a compile error.
			var ce *engine.CompileError
			if isCompile := errors.As(err, &ce); isCompile != (tc.name == "policy does not compile") {
				t.Errorf("error is a compile error: %v, want %v (%v)", isCompile, !isCompile, err)
			}
		})
	}
}

// TestShippedConfigsAssemble: every configuration under deploy/config assembles (what
// `consentry run --check` does), run from a directory laid out like the repository.
func TestShippedConfigsAssemble(t *testing.T) {
	root := pipelinetest.RepoRoot()
	files, _ := filepath.Glob(filepath.Join(root, "deploy", "config", "*.yaml"))
	if len(files) == 0 {
		t.Fatal("no shipped configs")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			dir := t.TempDir()
			for _, d := range []string{"policies", "deploy"} {
				if err := os.Symlink(filepath.Join(root, d), filepath.Join(dir, d)); err != nil {
					t.Fatal(err)
				}
			}
			t.Chdir(dir)
			cfg, err := config.Load(f)
			if err != nil {
				t.Fatal(err)
			}
			a, err := app.New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestAdminAPIAcceptsAdminRoleJWT: besides the admin token, a bearer token from a configured
// issuer whose subject holds one of admin.admin_roles may use the admin API; other tokens may
// not.
func TestAdminAPIAcceptsAdminRoleJWT(t *testing.T) {
	s := start(t, "")
	call := func(auth string) int {
		req, _ := http.NewRequest("PUT", "http://"+s.admin+"/v1/cases/case-jwt", strings.NewReader(`{"customer_id": "c-000001", "assignees": ["emp-17"]}`))
		req.Header.Set("Content-Type", "application/json")
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for name, c := range map[string]struct {
		auth string
		ok   bool
	}{
		"admin role":         {"Bearer " + s.token(t, "emp-1", "employee", "consentry-admin"), true},
		"admin token":        {"Bearer test-admin-token", true},
		"other role":         {"Bearer " + s.token(t, "emp-17", "employee", "support_agent"), false},
		"no roles":           {"Bearer " + s.token(t, "emp-2", "employee"), false},
		"not a token":        {"Bearer nope", false},
		"no credentials":     {"", false},
		"basic with a token": {"Basic " + s.token(t, "emp-1", "employee", "consentry-admin"), false},
	} {
		if got := call(c.auth); (got/100 == 2) != c.ok || !c.ok && got != http.StatusUnauthorized {
			t.Errorf("%s: %d", name, got)
		}
	}
}

package vaultkeys

import (
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/consentry/consentry/sidecar/decision"
	"github.com/consentry/consentry/vaultkeys/vaulttest"
)

const testPseudonymKey = "test-pseudonym-key-0123456789"

// consentryPolicy is the least-privilege policy shipped in deploy/vault/consentry.hcl: the
// integration tests run consentry with a token that has only it.
func consentryPolicy(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "deploy", "vault", "consentry.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// startVault starts a real Vault with the consentry policy installed.
func startVault(t testing.TB) *vaulttest.Server {
	t.Helper()
	srv := vaulttest.Start(t)
	srv.WritePolicy(t, "consentry", consentryPolicy(t))
	return srv
}

// testConfig is a config for srv authenticating with a token that has only the consentry policy.
func testConfig(t testing.TB, srv *vaulttest.Server) Config {
	t.Helper()
	return Config{
		Address:      srv.Addr,
		Auth:         AuthConfig{Method: AuthToken, Token: srv.CreateToken(t, time.Hour, "consentry")},
		LedgerPath:   filepath.Join(t.TempDir(), "ledger.jsonl"),
		PseudonymKey: testPseudonymKey,
		Timeout:      2 * time.Second,
	}
}

func newManager(t testing.TB, cfg Config, opts Options) *Manager {
	t.Helper()
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := New(ctx, cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// allow is an allowed decision serving the given fields (name -> scope; "" for plaintext).
func allow(fields map[string]string) *decision.Decision {
	d := &decision.Decision{Allow: true, Status: 200, Fields: map[string]decision.Field{}}
	seen := map[string]bool{}
	for name, scope := range fields {
		d.Fields[name] = decision.Field{Outcome: decision.OutcomeAllow, KeyScope: scope}
		if scope != "" && !seen[scope] {
			seen[scope] = true
			d.KeyScopes = append(d.KeyScopes, scope)
		}
	}
	return d
}

// withDenied adds fields the decision denies (they carry a scope but release nothing).
func withDenied(d *decision.Decision, fields map[string]string) *decision.Decision {
	for name, scope := range fields {
		d.Fields[name] = decision.Field{Outcome: decision.OutcomeDeny, KeyScope: scope}
	}
	return d
}

// transitEncrypt encrypts with Vault's own transit/encrypt, as a CRM already using transit does.
func transitEncrypt(t testing.TB, srv *vaulttest.Server, key, plaintext string) string {
	t.Helper()
	s, err := srv.Client(t).Logical().Write("transit/encrypt/"+key, map[string]any{
		"plaintext": base64.StdEncoding.EncodeToString([]byte(plaintext)),
	})
	if err != nil {
		t.Fatalf("transit encrypt: %v", err)
	}
	return s.Data["ciphertext"].(string)
}

// transitDecrypt decrypts with Vault's transit/decrypt as root.
func transitDecrypt(t testing.TB, srv *vaulttest.Server, key, ciphertext string) (string, error) {
	t.Helper()
	s, err := srv.Client(t).Logical().Write("transit/decrypt/"+key, map[string]any{"ciphertext": ciphertext})
	if err != nil {
		return "", err
	}
	b, err := base64.StdEncoding.DecodeString(s.Data["plaintext"].(string))
	return string(b), err
}

// exportPaths returns the paths of transit requests in reqs (ignores token renewals etc.).
func transitPaths(reqs []vaulttest.AuditRequest) []string {
	var out []string
	for _, r := range reqs {
		if strings.HasPrefix(r.Path, "transit/") {
			out = append(out, r.Operation+" "+r.Path)
		}
	}
	return out
}

// eventually polls cond until it holds or the timeout passes. Callers allow 20-30 s where the
// time is not what the test checks: a busy 2-core CI machine stalls for seconds.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

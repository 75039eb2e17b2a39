package app_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/app"
	"github.com/consentry/consentry/sidecar/config"
	"github.com/consentry/consentry/sidecar/pipeline/pipelinetest"
	"github.com/consentry/consentry/vaultkeys/vaulttest"
)

// TestSignerReadinessNeedsASignature: the token can read the transit key (so the
// background signer resolves and decision_log_signer turns green) but cannot sign with it
// (the exact gap cf3f2ef fixed in the shipped policy; a revoked grant or a deleted key does the
// same at runtime). Every checkpoint then fails, yet /ready answers 200: readiness stays green
// while the log is unsigned.
func TestSignerReadinessNeedsASignature(t *testing.T) {
	srv := vaulttest.Start(t)
	createSigningKey(t, srv)
	srv.WritePolicy(t, "read-only-log-key", `
path "transit/keys/decision-log" { capabilities = ["read"] }
path "auth/token/renew-self" { capabilities = ["update"] }
path "auth/token/lookup-self" { capabilities = ["read"] }
`)
	token := srv.CreateToken(t, time.Hour, "read-only-log-key")

	root := pipelinetest.RepoRoot()
	dir := t.TempDir()
	admin := freeAddr(t)
	y := fmt.Sprintf(`policy: {dir: %[1]s/policies, require_signatures: false}
routes: {file: %[1]s/deploy/routes/democrm.yaml}
state: {data_dir: %[2]s/state, purposes_file: %[1]s/policies/data/consentry/catalog/data.json}
admin: {listen: %[4]s, token: test-admin-token}
decision_log: {dir: %[2]s/decisions, signing_vault_key: decision-log, checkpoint_interval: 200ms}
vault:
  address: %[3]s
  ledger_path: %[2]s/ledger.jsonl
  auth: {method: token, token: %[5]s, backoff_min: 50ms, backoff_max: 200ms}
`, root, dir, srv.Addr, admin, token)
	cfg, err := config.Parse("t.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	a, err := app.New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(3 * time.Second)
	seenUnready := false
	for time.Now().Before(deadline) {
		code, body := readyBody("http://" + admin)
		if code == http.StatusOK {
			t.Fatalf("/ready = 200 (%s) with a token that cannot sign", strings.TrimSpace(body))
		}
		if strings.Contains(body, "decision_log_signer") && strings.Contains(body, "probe") {
			seenUnready = true
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !seenUnready {
		t.Fatal("readiness never named the signer and its failing probe")
	}
}

package app_test

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/app"
	"github.com/consentry/consentry/sidecar/auditlog"
	"github.com/consentry/consentry/sidecar/config"
	"github.com/consentry/consentry/sidecar/pipeline/pipelinetest"
	"github.com/consentry/consentry/vaultkeys/vaulttest"
)

// TestCheckDoesNotContactVault: `consentry run --check` validates the vault section and the
// files it names without logging in to Vault or sending it anything (docs/operations.md): it
// called vaultkeys.New, whose first login spends a use of a limited AppRole secret id from CI.
// The Vault here records every request; none may arrive, valid configuration or not.
func TestCheckDoesNotContactVault(t *testing.T) {
	var mu sync.Mutex
	var requests []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		requests = append(requests, r.Method+" "+r.URL.Path)
		mu.Unlock()
		w.WriteHeader(http.StatusInternalServerError)
	}))
	defer srv.Close()
	root := pipelinetest.RepoRoot()
	cases := []struct {
		name    string
		vault   string // extra keys of the vault section
		extra   string // other sections
		wantErr string // "" = the check passes
	}{
		{"approle", "auth: {method: approle, role_id: ci-role, secret_id: single-use-secret}", "", ""},
		{"approle with a secret id file CI does not have", "auth: {method: approle, role_id: ci-role, secret_id_file: /nonexistent/secret-id}", "", ""},
		{"kubernetes", "auth: {method: kubernetes, role: consentry}", "", ""},
		{"erasure and a Vault-signed log need the vault section, which is there", "auth: {method: token, token: t}",
			"decision_log: {dir: %[1]s/decisions, signing_vault_key: decision-log}\n", ""},
		{"approle without a secret id", "auth: {method: approle, role_id: ci-role}", "", "vault.auth.secret_id_file"},
		{"unreadable CA bundle", "ca_cert: %[1]s/missing-ca.pem\n  auth: {method: token, token: t}", "", "vault.ca_cert"},
		{"missing pseudonym key file", "pseudonym_key_file: %[1]s/missing.key\n  auth: {method: token, token: t}", "", "vault.pseudonym_key_file"},
		{"bad key name", "key_name: consentry-{class}\n  auth: {method: token, token: t}", "", "vault.key_name"},
		{"signing_vault_key as MOUNT/NAME", "auth: {method: token, token: t}",
			"decision_log: {dir: %[1]s/decisions, signing_vault_key: transit/decision-log}\n", "bare transit key name"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			extra := tc.extra
			if extra == "" {
				extra = "decision_log: {dir: %[1]s/decisions, unsigned_checkpoints: true}\n"
			}
			y := fmt.Sprintf("policy: {dir: %[2]s/policies, require_signatures: false}\nroutes: {file: %[2]s/deploy/routes/democrm.yaml}\n"+
				"state: {data_dir: %[1]s/state, purposes_file: %[2]s/policies/data/consentry/catalog/data.json, erase_on_withdrawal: true}\n"+
				extra+"vault:\n  address: %[3]s\n  ledger_path: %[1]s/ledger.jsonl\n  "+tc.vault+"\n", dir, root, srv.URL)
			cfg, err := config.Parse("t.yaml", []byte(y))
			if err != nil {
				t.Fatal(err)
			}
			a, err := app.New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), app.CheckOnly())
			if a != nil {
				a.Close()
			}
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("check failed: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("check: %v, want an error naming %s", err, tc.wantErr)
			case tc.wantErr == "":
				// --check writes nothing: a missing ledger is reported, not created.
				if _, err := os.Stat(filepath.Join(dir, "ledger.jsonl")); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("run --check created the shredded-keys ledger (%v)", err)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if len(requests) > 0 {
				t.Errorf("run --check sent Vault %v", requests)
				requests = nil
			}
		})
	}
}

// signedLogSidecar assembles and runs a sidecar whose decision log is signed by the Vault
// transit key "decision-log" of the Vault at addr, logged in with the root token; stop stops
// it (the close checkpoint).
func signedLogSidecar(t *testing.T, addr string) (a *app.App, adminURL, logDir string, stop func()) {
	t.Helper()
	return signedLogSidecarAs(t, addr, vaulttest.RootToken)
}

// signedLogSidecarAs is signedLogSidecar with the Vault token token.
func signedLogSidecarAs(t *testing.T, addr, token string) (a *app.App, adminURL, logDir string, stop func()) {
	t.Helper()
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
`, root, dir, addr, admin, token)
	cfg, err := config.Parse("t.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	a, err = app.New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("start-up with decision_log.signing_vault_key: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return a, "http://" + admin, filepath.Join(dir, "decisions"), stop
}

// createSigningKey creates the transit key "decision-log" (ed25519) and returns its public key.
func createSigningKey(t *testing.T, srv *vaulttest.Server) ed25519.PublicKey {
	t.Helper()
	c := srv.Client(t)
	if _, err := c.Logical().Write("transit/keys/decision-log", map[string]any{"type": "ed25519"}); err != nil {
		t.Fatal(err)
	}
	sec, err := c.Logical().Read("transit/keys/decision-log")
	if err != nil {
		t.Fatal(err)
	}
	pub, err := base64.StdEncoding.DecodeString(sec.Data["keys"].(map[string]any)["1"].(map[string]any)["public_key"].(string))
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

func readyBody(url string) (int, string) {
	resp, err := http.Get(url + "/ready")
	if err != nil {
		return 0, err.Error() // not listening yet
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestSigningVaultKeyVaultDownAtStart: with decision_log.signing_vault_key, a Vault that is
// down when consentry starts (a closed port) made start-up fail as an invalid configuration
// (exit 5); docs/operations.md says the Vault login is retried in the background and the
// sidecar is not ready meanwhile. Now it starts, /ready names decision_log_signer, decisions
// would be logged with their checkpoints left out, and once Vault answers the key is read,
// the sidecar becomes ready and checkpoints are signed with the Vault key.
func TestSigningVaultKeyVaultDownAtStart(t *testing.T) {
	srv := vaulttest.Start(t)
	srv.Stop() // Vault is down when the sidecar starts
	_, adminURL, logDir, stop := signedLogSidecar(t, srv.Addr)
	waitFor(t, func() (bool, string) {
		code, body := readyBody(adminURL)
		return code == http.StatusServiceUnavailable && strings.Contains(body, "decision_log_signer"), body
	})

	srv.Restart(t)
	pub := createSigningKey(t, srv)
	waitReady(t, adminURL+"/ready")
	stop()

	rep, err := auditlog.Verify(logDir, auditlog.VerifyOptions{PublicKeys: map[string]ed25519.PublicKey{auditlog.KeyIDOf(pub): pub}})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Checkpoints == 0 {
		t.Fatalf("no checkpoint signed by the Vault key once Vault was back: %+v", rep)
	}
	for _, p := range rep.Problems {
		if p.Kind == "checkpoint_forged" {
			t.Errorf("a checkpoint does not verify with the Vault key: %+v", p)
		}
	}
}

// TestSigningVaultKeySignsFromStart: with Vault up at start the key is read during start-up,
// so the log's open checkpoint is signed too and the whole log verifies.
func TestSigningVaultKeySignsFromStart(t *testing.T) {
	srv := vaulttest.Start(t)
	pub := createSigningKey(t, srv)
	_, adminURL, logDir, stop := signedLogSidecar(t, srv.Addr)
	waitReady(t, adminURL+"/ready")
	stop()
	rep, err := auditlog.Verify(logDir, auditlog.VerifyOptions{PublicKeys: map[string]ed25519.PublicKey{auditlog.KeyIDOf(pub): pub}, RequireSealed: true})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.Checkpoints < 2 {
		t.Fatalf("log signed by Vault from start: %d checkpoints, problems %+v", rep.Checkpoints, rep.Problems)
	}
}

// waitFor polls cond for up to 30s.
func waitFor(t *testing.T, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		ok, s := cond()
		if ok {
			return
		}
		last = s
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("condition not met in 30s; last: %s", last)
}

// TestSigningVaultKeyMountSlashNameRefused: the signing key is read from Vault in the
// background, so a value that cannot be a transit key name (MOUNT/NAME; the mount is
// vault.transit_mount) must fail start-up as a configuration error rather than leave the
// sidecar unready for good.
func TestSigningVaultKeyMountSlashNameRefused(t *testing.T) {
	srv := vaulttest.Start(t)
	createSigningKey(t, srv)
	root := pipelinetest.RepoRoot()
	dir := t.TempDir()
	y := fmt.Sprintf(`policy: {dir: %[1]s/policies, require_signatures: false}
routes: {file: %[1]s/deploy/routes/democrm.yaml}
state: {data_dir: %[2]s/state, purposes_file: %[1]s/policies/data/consentry/catalog/data.json}
decision_log: {dir: %[2]s/decisions, signing_vault_key: transit/decision-log}
vault: {address: %[3]s, ledger_path: %[2]s/ledger.jsonl, auth: {method: token, token: %[4]s}}
`, root, dir, srv.Addr, vaulttest.RootToken)
	cfg, err := config.Parse("t.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	a, err := app.New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil {
		a.Close()
		t.Fatal("signing_vault_key: transit/decision-log started")
	}
	if !strings.Contains(err.Error(), "bare transit key name") {
		t.Fatalf("error does not say what to write: %v", err)
	}
}

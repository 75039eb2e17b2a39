package vaultkeys

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/consentry/consentry/sidecar/admin"
)

// The erase endpoint on the authenticated admin API: no admin token, no erasure; a reason is
// required; the actor in the record is the authenticated admin.
func TestAdminEraseEndpoint(t *testing.T) {
	srv := startVault(t)
	reg := prometheus.NewRegistry()
	m := newManager(t, testConfig(t, srv), Options{Registerer: reg})
	ctx := context.Background()
	d := allow(map[string]string{"e": "contact"})
	if _, err := m.ReleaseForWrite(ctx, "adm1", d); err != nil {
		t.Fatal(err)
	}
	a := admin.New(admin.Config{Token: "admin-secret"}, reg)
	MountAdmin(a.API(), m)

	do := func(token, id, body string) (int, map[string]any) {
		req := httptest.NewRequest("POST", "/v1/customers/"+id+"/erase", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := a.App().Test(req, 10000)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		var out map[string]any
		_ = json.Unmarshal(b, &out)
		return resp.StatusCode, out
	}
	for _, tc := range []struct {
		name, token, id, body string
		status                int
	}{
		{"no token", "", "adm1", `{"reason":"x"}`, 401},
		{"wrong token", "nope", "adm1", `{"reason":"x"}`, 401},
		{"no reason", "admin-secret", "adm1", `{}`, 400},
		{"bad body", "admin-secret", "adm1", `{`, 400},
		{"bad id", "admin-secret", "a%20b", `{"reason":"x"}`, 400},
		// The state store keeps at most MaxEraseReason bytes for the retry to match the ledger.
		{"reason too long", "admin-secret", "adm1", `{"reason":"` + strings.Repeat("x", MaxEraseReason+1) + `"}`, 400},
	} {
		if st, body := do(tc.token, tc.id, tc.body); st != tc.status {
			t.Errorf("%s: status %d, want %d (%v)", tc.name, st, tc.status, body)
		}
	}
	if _, err := m.Release(ctx, "adm1", d); err != nil {
		t.Fatalf("refused requests must not erase: %v", err)
	}
	st, body := do("admin-secret", "adm1", `{"reason":"consent withdrawn"}`)
	if st != 200 {
		t.Fatalf("erase: %d %v", st, body)
	}
	rec := body["record"].(map[string]any)
	if rec["actor"] != "admin-token" || rec["reason"] != "consent withdrawn" || rec["customer_pseudonym"] != m.Pseudonym("adm1") {
		t.Fatalf("record %v", rec)
	}
	if _, err := m.Release(ctx, "adm1", d); !errors.Is(err, ErrErased) {
		t.Fatalf("after admin erase: %v", err)
	}
	// Metrics are on the shared registry.
	mf, _ := reg.Gather()
	var names bytes.Buffer
	for _, f := range mf {
		names.WriteString(f.GetName() + " ")
	}
	for _, want := range []string{"consentry_vaultkeys_erasures_total", "consentry_vaultkeys_cache_misses_total", "consentry_vaultkeys_vault_request_duration_seconds"} {
		if !strings.Contains(names.String(), want) {
			t.Errorf("metric %s not registered", want)
		}
	}
}

// eraserFunc is an Eraser for endpoint tests that need no Vault.
type eraserFunc func(ctx context.Context, customerID, actor, reason string) (*DestructionRecord, error)

func (f eraserFunc) Erase(ctx context.Context, customerID, actor, reason string) (*DestructionRecord, error) {
	return f(ctx, customerID, actor, reason)
}

// TestAdminEraseRefusesUnstorableText: a reason with a NUL character (JSON "\u0000") cannot
// be stored in the erasure request: the endpoint answered a retryable 503 erase.failed that
// never succeeded on PostgreSQL. It is refused with 400 invalid.text before anything runs.
func TestAdminEraseRefusesUnstorableText(t *testing.T) {
	called := false
	a := admin.New(admin.Config{Token: "admin-secret"}, prometheus.NewRegistry())
	MountAdmin(a.API(), eraserFunc(func(context.Context, string, string, string) (*DestructionRecord, error) {
		called = true
		return &DestructionRecord{}, nil
	}))
	req := httptest.NewRequest("POST", "/v1/customers/adm1/erase", strings.NewReader(`{"reason":"ticket\u0000 42"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer admin-secret")
	resp, err := a.App().Test(req, 10000)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 400 || !strings.Contains(string(b), `"invalid.text"`) || called {
		t.Fatalf("reason with a NUL: %d %s (eraser called: %v)", resp.StatusCode, b, called)
	}
}

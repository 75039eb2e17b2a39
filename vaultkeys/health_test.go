package vaultkeys

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/consentry/consentry/vaultkeys/vaulttest"
)

func gaugeValue(t testing.TB, g prometheus.Gauge) float64 {
	t.Helper()
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetGauge().GetValue()
}

// Which Vault call errors say Vault is unavailable (readiness fails), which say it answered
// (readiness recovers), and which say nothing about it.
func TestVaultCallOutcomeClassification(t *testing.T) {
	// A real refused connection, as the Vault client reports it.
	cfg := api.DefaultConfig()
	port, err := vaulttest.FreePortPair()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Address = fmt.Sprintf("http://127.0.0.1:%d", port)
	cfg.MaxRetries = 0
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, refused := c.Logical().Read("transit/export/encryption-key/x")
	if refused == nil {
		t.Fatal("no error from a closed port")
	}
	for _, tc := range []struct {
		name string
		err  error
		want outcome
	}{
		{"success", nil, outcomeAnswered},
		{"sealed 503", &api.ResponseError{StatusCode: http.StatusServiceUnavailable, Errors: []string{"Vault is sealed"}}, outcomeUnavailable},
		{"500", fmt.Errorf("export: %w", &api.ResponseError{StatusCode: http.StatusInternalServerError}), outcomeUnavailable},
		{"502 from a load balancer", &api.ResponseError{StatusCode: http.StatusBadGateway}, outcomeUnavailable},
		{"connection refused", refused, outcomeUnavailable},
		{"timeout", fmt.Errorf("export: %w", context.DeadlineExceeded), outcomeUnavailable},
		{"403 token rejected", &api.ResponseError{StatusCode: http.StatusForbidden}, outcomeAnswered},
		{"400 not exportable", &api.ResponseError{StatusCode: http.StatusBadRequest}, outcomeAnswered},
		{"caller went away", fmt.Errorf("delete: %w", context.Canceled), outcomeUnknown},
		{"local file", fmt.Errorf("token file: %w", &fs.PathError{Op: "open", Path: "t", Err: syscall.ENOENT}), outcomeUnknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := vaultOutcome(tc.err); got != tc.want {
				t.Fatalf("vaultOutcome(%v) = %d, want %d", tc.err, got, tc.want)
			}
		})
	}
}

// With no request traffic at all, readiness "vault" fails within a few seconds of Vault being
// sealed or stopped (the token stays valid: consentry_vaultkeys_authenticated stays 1,
// consentry_vaultkeys_vault_available goes 0), /status says why, and everything recovers on
// its own once Vault is back - also when a login failed meanwhile and is backing off.
func TestReadinessFollowsVaultAvailabilityWithoutTraffic(t *testing.T) {
	for _, tc := range []struct {
		name string
		// auth configures the login (static root token: never renewed, never re-checked).
		auth       func(t *testing.T, srv *vaulttest.Server) AuthConfig
		break_     func(t *testing.T, srv *vaulttest.Server)
		fix        func(t *testing.T, srv *vaulttest.Server)
		loginFails bool // wait for the login loop to fail and back off before fixing
	}{
		{
			name: "sealed, renewable token",
			auth: func(t *testing.T, srv *vaulttest.Server) AuthConfig {
				return AuthConfig{Method: AuthToken, Token: srv.CreateToken(t, time.Hour, "consentry")}
			},
			break_: func(t *testing.T, srv *vaulttest.Server) { srv.Seal(t) },
			fix:    func(t *testing.T, srv *vaulttest.Server) { srv.Unseal(t) },
		},
		{
			name: "stopped, static root token",
			auth: func(t *testing.T, srv *vaulttest.Server) AuthConfig {
				return AuthConfig{Method: AuthToken, Token: srv.Token}
			},
			break_: func(t *testing.T, srv *vaulttest.Server) { srv.Stop() },
			fix:    func(t *testing.T, srv *vaulttest.Server) { srv.Restart(t) },
		},
		{
			// The token expires while Vault is sealed: the login fails and backs off for 30s;
			// Vault answering again must cut that short.
			name: "sealed until the token expired, login backing off",
			auth: func(t *testing.T, srv *vaulttest.Server) AuthConfig {
				roleID, secretID := srv.EnableAppRole(t, "consentry", 2*time.Second, "consentry")
				return AuthConfig{Method: AuthAppRole, RoleID: roleID, SecretID: secretID,
					BackoffMin: 30 * time.Second, BackoffMax: 30 * time.Second}
			},
			break_:     func(t *testing.T, srv *vaulttest.Server) { srv.Seal(t) },
			fix:        func(t *testing.T, srv *vaulttest.Server) { srv.Unseal(t) },
			loginFails: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startVault(t)
			cfg := testConfig(t, srv)
			cfg.Auth = tc.auth(t, srv)
			cfg.Timeout = 300 * time.Millisecond
			m := newManager(t, cfg, Options{}) // the default probe interval
			ctx := context.Background()
			// Detection and recovery: one probe interval plus one probe timeout, with slack
			// for a loaded machine (5s: a busy CI machine stalls for seconds). Still far below
			// the 30s login backoff that recovery must cut short.
			bound := DefaultHealthInterval + cfg.Timeout + 5*time.Second
			if err := m.Ready(ctx); err != nil {
				t.Fatal(err)
			}
			if v := gaugeValue(t, m.metrics.available); v != 1 {
				t.Fatalf("vault_available = %v before the fault", v)
			}

			tc.break_(t, srv)
			start := time.Now()
			eventually(t, bound, "readiness to fail", func() bool { return m.Ready(ctx) != nil })
			t.Logf("not ready %s after the fault", time.Since(start).Round(time.Millisecond))
			if err := m.Ready(ctx); !errors.Is(err, ErrUnavailable) && !errors.Is(err, ErrUnauthenticated) {
				t.Fatalf("Ready = %v", err)
			}
			if v := gaugeValue(t, m.metrics.available); v != 0 {
				t.Fatalf("vault_available = %v with Vault down", v)
			}
			st := m.Status().(map[string]any)
			if st["vault_available"] != false || st["vault_error"] == nil || st["vault_unavailable_since"] == nil {
				t.Fatalf("status with Vault down: %v", st)
			}
			if tc.loginFails {
				eventually(t, 30*time.Second, "the login to fail", func() bool { ok, _ := m.auth.authenticated(); return !ok })
				time.Sleep(100 * time.Millisecond) // into the backoff
			} else {
				// The token itself is still valid: the gauge says so, availability says the rest.
				if v := gaugeValue(t, m.metrics.authenticated); v != 1 {
					t.Fatalf("authenticated = %v", v)
				}
			}

			tc.fix(t, srv)
			start = time.Now()
			eventually(t, bound, "readiness to recover", func() bool { return m.Ready(ctx) == nil })
			t.Logf("ready again %s after the fix", time.Since(start).Round(time.Millisecond))
			if v := gaugeValue(t, m.metrics.available); v != 1 {
				t.Fatalf("vault_available = %v after recovery", v)
			}
			st = m.Status().(map[string]any)
			if st["vault_available"] != true || st["vault_error"] != nil || st["vault_last_error"] == nil {
				t.Fatalf("status after recovery: %v", st)
			}
			if _, err := m.ReleaseForWrite(ctx, "h1", allow(map[string]string{"e": "contact"})); err != nil {
				t.Fatalf("release after recovery: %v", err)
			}
		})
	}
}

// A Vault call that finds Vault unavailable makes the replica not ready at once, without
// waiting for the health probe; the next call that Vault answers makes it ready again. A
// rejected token is the login's concern: Vault answered, so it stays available.
func TestFailedVaultCallMarksUnavailableUntilNextSuccess(t *testing.T) {
	srv := startVault(t)
	proxy := vaulttest.StartFaultProxy(t, srv.Addr)
	cfg := testConfig(t, srv)
	cfg.Address = proxy.Addr
	cfg.Timeout = 200 * time.Millisecond
	cfg.Cache.TTL = -1 // every release calls Vault
	cfg.Auth.BackoffMin, cfg.Auth.BackoffMax = 50*time.Millisecond, 100*time.Millisecond
	m := newManager(t, cfg, Options{HealthInterval: time.Hour}) // one probe, at start
	ctx := context.Background()
	d := allow(map[string]string{"e": "contact"})
	if _, err := m.ReleaseForWrite(ctx, "c1", d); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		delay     time.Duration
		status    int
		wantReady error
	}{
		{"sealed 503", 0, http.StatusServiceUnavailable, ErrUnavailable},
		{"500", 0, http.StatusInternalServerError, ErrUnavailable},
		{"slower than vault.timeout", 2 * time.Second, 0, ErrUnavailable},
		{"403 token rejected", 0, http.StatusForbidden, ErrUnauthenticated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := m.Ready(ctx); err != nil {
				t.Fatalf("not ready before the fault: %v", err)
			}
			proxy.SetDelay(tc.delay)
			proxy.SetStatus(tc.status)
			if _, err := m.Release(ctx, "c1", d); err == nil {
				t.Fatal("release succeeded through a faulty Vault")
			}
			// The release gives up at its deadline; the Vault call behind it records its
			// outcome when it ends, at the same deadline.
			eventually(t, time.Second, "readiness to fail", func() bool { return errors.Is(m.Ready(ctx), tc.wantReady) })
			wantAvailable := 0.0
			if tc.wantReady == ErrUnauthenticated {
				wantAvailable = 1
			}
			if v := gaugeValue(t, m.metrics.available); v != wantAvailable {
				t.Fatalf("vault_available = %v, want %v", v, wantAvailable)
			}
			proxy.SetDelay(0)
			proxy.SetStatus(0)
			eventually(t, 20*time.Second, "a successful release", func() bool {
				_, err := m.Release(ctx, "c1", d)
				return err == nil
			})
			if err := m.Ready(ctx); err != nil {
				t.Fatalf("not ready after a successful call: %v", err)
			}
		})
	}
}

// A manager whose login fails for a reason of its own (no token file) says so; Vault, which
// was never asked, is not reported down for it.
func TestLocalLoginErrorIsNotVaultUnavailable(t *testing.T) {
	srv := startVault(t)
	cfg := testConfig(t, srv)
	cfg.Auth = AuthConfig{Method: AuthToken, TokenFile: filepath.Join(t.TempDir(), "missing"),
		BackoffMin: 20 * time.Millisecond, BackoffMax: 50 * time.Millisecond}
	m := newManager(t, cfg, Options{})
	ctx := context.Background()
	if err := m.Ready(ctx); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("Ready = %v", err)
	}
	eventually(t, 20*time.Second, "the first probe", func() bool { ok, _ := m.health.available(); return ok })
	if err := os.WriteFile(cfg.Auth.TokenFile, []byte(srv.Token), 0o600); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "login", func() bool { return m.Ready(ctx) == nil })
}

package vaultkeys

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/consentry/consentry/vaultkeys/vaulttest"
)

// lockedBuffer is a log sink shared by the manager's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// fakeVault answers the token login and sys/health like a healthy Vault, and every transit
// request with fault: an HTTP status, or "reset" (the connection is closed unanswered). A
// transit path returning 500 cannot be made with a real Vault (a sealed one fails sys/health
// and the login too).
func fakeVault(t *testing.T, fault *atomic.Value) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case strings.HasSuffix(r.URL.Path, "/auth/token/lookup-self"):
			fmt.Fprint(w, `{"data":{"ttl":0,"renewable":false,"policies":["consentry"]}}`)
		case strings.HasPrefix(r.URL.Path, "/v1/sys/health"):
			fmt.Fprint(w, `{"initialized":true,"sealed":false,"standby":false}`)
		default:
			f := fault.Load().(string)
			if f == "reset" {
				conn, _, err := w.(http.Hijacker).Hijack()
				if err == nil {
					conn.Close()
				}
				return
			}
			var status int
			fmt.Sscan(f, &status)
			w.WriteHeader(status)
			// Vault's messages may name the key too: they must be rewritten as well.
			fmt.Fprintf(w, `{"errors":["internal error on key %s"]}`, path.Base(r.URL.Path))
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// The customer id is part of the transit key name under the default key_name template, and so
// of every transit request URL. Whatever a Vault call fails with, /ready, /status, the
// manager's log lines and the errors handed to the front doors (logged by them) name the
// customer by pseudonym only: the admin port serves /ready and /status without a token.
func TestVaultErrorsDoNotNameTheCustomer(t *testing.T) {
	const customer = "cust-secret-4711"
	for _, fault := range []string{"500", "503", "403", "reset"} {
		t.Run(fault, func(t *testing.T) {
			var fv atomic.Value
			fv.Store(fault)
			srv := fakeVault(t, &fv)
			var logs lockedBuffer
			cfg := Config{
				Address:      srv.URL,
				Auth:         AuthConfig{Method: AuthToken, Token: "t", BackoffMin: time.Hour, BackoffMax: time.Hour},
				LedgerPath:   filepath.Join(t.TempDir(), "ledger.jsonl"),
				PseudonymKey: testPseudonymKey,
				Timeout:      2 * time.Second,
			}
			m := newManager(t, cfg, Options{Logger: slog.New(slog.NewJSONHandler(&logs, nil)), HealthInterval: time.Hour})
			ctx := context.Background()
			eventually(t, 20*time.Second, "login and first probe", func() bool { return m.Ready(ctx) == nil })

			var texts []string
			note := func(what string, v any) {
				b, _ := json.Marshal(v)
				texts = append(texts, what+": "+string(b))
			}
			_, err := m.Release(ctx, customer, allow(map[string]string{"email": "contact", "iban": "financial"}))
			if err == nil {
				t.Fatal("release through a failing Vault succeeded")
			}
			note("release error", err.Error())
			note("ready", fmt.Sprint(m.Ready(ctx)))
			note("status", m.Status())
			_, err = m.ReleaseForWrite(ctx, customer+"-new", allow(map[string]string{"email": "contact"}))
			note("write release error", fmt.Sprint(err))
			// An erasure's own error is the operator's (who named the customer); what it
			// leaves in readiness, /status and the log is not.
			_, _ = m.Erase(ctx, customer, "dpo", "withdrawn")
			note("ready after erase", fmt.Sprint(m.Ready(ctx)))
			note("status after erase", m.Status())
			texts = append(texts, "log: "+logs.String())
			all := strings.Join(texts, "\n")
			if strings.Contains(all, customer) || strings.Contains(all, "/v1/transit") {
				t.Fatalf("customer id or transit URL reported:\n%s", all)
			}
			// Still useful: the customer's pseudonym, the operation and what failed.
			pseudonym := m.Pseudonym(customer)
			for _, want := range []string{pseudonym, "export of key consentry-" + pseudonym + "-contact"} {
				if !strings.Contains(all, want) {
					t.Errorf("%q not reported:\n%s", want, all)
				}
			}
			if fault != "reset" && !strings.Contains(all, "HTTP "+fault) {
				t.Errorf("status %s not reported:\n%s", fault, all)
			}
			if fault == "500" || fault == "503" {
				st := m.Status().(map[string]any)
				if st["vault_available"] != false || !strings.Contains(fmt.Sprint(st["vault_error"]), pseudonym) {
					t.Errorf("status does not say why Vault is unavailable: %v", st)
				}
				if !strings.Contains(logs.String(), "vault unavailable") {
					t.Errorf("no unavailability logged:\n%s", logs.String())
				}
			}
			t.Logf("%s", all)
		})
	}
}

// sanitizeVaultErr keeps what an operator needs (operation, status, Vault's messages, the
// network failure) and drops the request URL, whatever wraps the Vault client's error.
func TestSanitizeVaultErr(t *testing.T) {
	port, err := vaulttest.FreePortPair()
	if err != nil {
		t.Fatal(err)
	}
	c, err := api.NewClient(&api.Config{Address: fmt.Sprintf("http://127.0.0.1:%d", port), MaxRetries: 0, HttpClient: http.DefaultClient})
	if err != nil {
		t.Fatal(err)
	}
	_, refused := c.Logical().Read("transit/export/encryption-key/consentry-alice-contact")
	if refused == nil {
		t.Fatal("no error from a closed port")
	}
	ref := func(name string) string { return strings.ReplaceAll(name, "alice", "P") }
	re := &api.ResponseError{HTTPMethod: "POST", URL: "http://v:8200/v1/transit/keys/consentry-alice-health/config",
		StatusCode: 500, Errors: []string{"key consentry-alice-health: boom", "see https://v/v1/transit/keys/consentry-alice-health"}}
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"response", fmt.Errorf("wrapped %s: %w", re.URL, re), "config of key consentry-P-health: HTTP 500: key consentry-P-health: boom; see <url>"},
		{"refused", refused, "export of key consentry-P-contact: "},
		{"deadline", fmt.Errorf("x: %w", context.DeadlineExceeded), "op: x: context deadline exceeded"},
		{"local", errors.New("token file: open /run/t: no such file or directory"), "op: token file: open /run/t: no such file or directory"},
		{"stray url", errors.New("GET http://v/v1/transit/export/encryption-key/consentry-alice-contact giving up"), "op: GET <url> giving up"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			op := "op"
			if tc.name == "response" {
				op = "config"
			}
			if tc.name == "refused" {
				op = "export"
			}
			got := sanitizeVaultErr(op, tc.err, "transit", ref)
			if !strings.HasPrefix(got.Error(), tc.want) || strings.Contains(got.Error(), "alice") {
				t.Fatalf("got %q, want %q...", got, tc.want)
			}
			if !errors.Is(got, tc.err) {
				t.Fatal("the sanitized error does not unwrap to the original")
			}
		})
	}
	if got := sanitizeVaultErr("op", nil, "transit", ref); got != nil {
		t.Fatalf("nil error sanitized to %v", got)
	}
}

// keyRef names a key by its customer's pseudonym under a {customer} template, by the name
// itself under a {pseudonym} one, and an unknown name by the name's pseudonym.
func TestKeyRef(t *testing.T) {
	cfg := Config{Address: "http://127.0.0.1:1", Auth: AuthConfig{Method: AuthToken, Token: "t"},
		LedgerPath: filepath.Join(t.TempDir(), "l.jsonl"), PseudonymKey: testPseudonymKey, Timeout: 100 * time.Millisecond}
	m := newManager(t, cfg, Options{HealthInterval: time.Hour})
	p := m.Pseudonym("a-b-contact")
	for name, want := range map[string]string{
		"consentry-a-b-contact-contact": "consentry-" + p + "-contact",
		"consentry-x-financial":         "consentry-" + m.Pseudonym("x") + "-financial",
		"other-a-b-contact":             "named " + m.Pseudonym("other-a-b-contact"),
	} {
		if got := m.keyRef(name); got != want {
			t.Errorf("keyRef(%q) = %q, want %q", name, got, want)
		}
	}
	cfg.KeyName = "k-{pseudonym}-{class}"
	mp := newManager(t, cfg, Options{HealthInterval: time.Hour})
	if got := mp.keyRef("k-abc-contact"); got != "k-abc-contact" {
		t.Errorf("pseudonym template: keyRef = %q", got)
	}
}

// A Vault that accepts connections and never answers does not hold up New for the login's
// own timeout (10 s): New returns once the health probe times out (vault.timeout), unready.
func TestNewDoesNotWaitForASilentVault(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // held open, never answered
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	cfg := Config{Address: "http://" + ln.Addr().String(), Auth: AuthConfig{Method: AuthToken, Token: "t"},
		LedgerPath: filepath.Join(t.TempDir(), "l.jsonl"), PseudonymKey: testPseudonymKey, Timeout: 200 * time.Millisecond}
	start := time.Now()
	m := newManager(t, cfg, Options{}) // waits up to 10 s (its ctx)
	took := time.Since(start)
	// vault.timeout plus slack for a loaded machine, well below the login's 10 s.
	if took > 5*time.Second {
		t.Fatalf("New took %s with a silent Vault (vault.timeout %s)", took, cfg.Timeout)
	}
	if err := m.Ready(context.Background()); err == nil {
		t.Fatal("ready with a silent Vault")
	}
	t.Logf("New returned after %s", took.Round(time.Millisecond))
}

// The same with a real Vault: behind a proxy answering 500, and sealed (503 from Vault itself,
// whose client error quotes the export URL with the key name).
func TestVaultErrorsDoNotNameTheCustomerRealVault(t *testing.T) {
	const customer = "cust-real-4711"
	srv := startVault(t)
	cfg := testConfig(t, srv)
	proxy := vaulttest.StartFaultProxy(t, srv.Addr)
	cfg.Address = proxy.Addr
	var logs lockedBuffer
	m := newManager(t, cfg, Options{Logger: slog.New(slog.NewJSONHandler(&logs, nil)), HealthInterval: time.Hour})
	ctx := context.Background()
	d := allow(map[string]string{"email": "contact"})
	if _, err := m.ReleaseForWrite(ctx, customer, d); err != nil {
		t.Fatal(err)
	}
	for _, fault := range []struct {
		name        string
		break_, fix func()
	}{
		{"500 from a proxy", func() { proxy.SetStatus(http.StatusInternalServerError) }, func() { proxy.SetStatus(0) }},
		{"sealed", func() { srv.Seal(t) }, func() { srv.Unseal(t) }},
	} {
		m.cache.purge()
		fault.break_()
		_, err := m.Release(ctx, customer, d)
		if err == nil {
			t.Fatalf("%s: release succeeded", fault.name)
		}
		st, _ := json.Marshal(m.Status())
		all := strings.Join([]string{err.Error(), fmt.Sprint(m.Ready(ctx)), string(st), logs.String()}, "\n")
		if strings.Contains(all, customer) || strings.Contains(all, "/v1/transit") {
			t.Fatalf("%s: customer id or transit URL reported:\n%s", fault.name, all)
		}
		if want := "export of key consentry-" + m.Pseudonym(customer) + "-contact: HTTP 5"; !strings.Contains(string(st), want) {
			t.Fatalf("%s: /status does not say %q:\n%s", fault.name, want, st)
		}
		t.Logf("%s: %s", fault.name, st)
		fault.fix()
	}
}

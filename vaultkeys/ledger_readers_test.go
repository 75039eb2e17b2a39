package vaultkeys

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/consentry/consentry/vaultkeys/vaulttest"
)

// settableClock is a clock a test moves forward.
type settableClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *settableClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *settableClock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// ledgerReaders are the calls of the sidecar's own ledger handle that read records another
// process appended: each must block the erased keys, not only Refresh.
var ledgerReaders = []struct {
	name string
	read func(t *testing.T, m *Manager)
}{
	{"none (the sidecar's own refresh)", func(*testing.T, *Manager) {}},
	{"refresh", func(t *testing.T, m *Manager) { _, _ = m.Ledger().Refresh() }},
	{"decision log checkpoint (Head)", func(t *testing.T, m *Manager) { m.Ledger().Head() }},
	{"erase retry lookup (RecordOf)", func(t *testing.T, m *Manager) {
		_, _, _ = m.Ledger().RecordOf("hmac-sha256:nobody", "a", "r")
	}},
	{"startup anchor check (CheckAnchor)", func(t *testing.T, m *Manager) { _ = m.Ledger().CheckAnchor(1, "any") }},
	{"own append (Append)", func(t *testing.T, m *Manager) {
		if err := m.Ledger().Append(&DestructionRecord{CustomerPseudonym: "hmac-sha256:other", Actor: "a", Reason: "r"}); err != nil {
			t.Fatal(err)
		}
	}},
}

// keyExists reports whether Vault has transit key name (read as root).
func keyExists(t *testing.T, srv *vaulttest.Server, name string) bool {
	t.Helper()
	s, err := srv.Client(t).Logical().Read("transit/keys/" + name)
	if err != nil {
		t.Fatalf("read key %s: %v", name, err)
	}
	return s != nil
}

// TestErasureByAnotherProcessBlocksCachedKeyWhicheverCallReadsTheLedger: the sidecar (a) and
// `consentry erase --config` (b) share the ledger. Whatever call of a's ledger reads b's
// record first (the decision log's checkpoint reads it through Head on every checkpoint),
// the erased customer's cached key is dropped and refused within a second.
func TestErasureByAnotherProcessBlocksCachedKeyWhicheverCallReadsTheLedger(t *testing.T) {
	srv := startVault(t)
	base := testConfig(t, srv)
	d := allow(map[string]string{"email": "contact"})
	for i, tc := range ledgerReaders {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			cfg := base
			cfg.LedgerPath = t.TempDir() + "/ledger.jsonl"
			ck := &settableClock{t: time.Now()}
			a := newManager(t, cfg, Options{Now: ck.now})
			b := newManager(t, cfg, Options{})
			customer := fmt.Sprintf("reader-%d", i)
			if _, err := a.ReleaseForWrite(ctx, customer, d); err != nil {
				t.Fatal(err)
			}
			if _, err := b.Erase(ctx, customer, "cli:ops", "DSR-1"); err != nil {
				t.Fatal(err)
			}
			tc.read(t, a)
			name, _ := a.KeyName(customer, "contact")
			ck.add(2 * time.Second)
			ks, err := a.Release(ctx, customer, d)
			if ks.Has("contact") || !errors.Is(err, ErrErased) {
				t.Errorf("2s after the erasure the sidecar released key %s (err %v)", name, err)
			}
			if !a.cache.isBlocked(name) {
				t.Errorf("erased key %s is not blocked in the sidecar's cache", name)
			}
		})
	}
}

// interceptingProxy forwards to a real Vault, running hook (once) before it forwards the
// first request for which match is true.
func interceptingProxy(t *testing.T, target string, match func(*http.Request) bool, hook func()) string {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if match(r) {
			once.Do(hook)
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// isCreate matches transit's key creation (not its /config, /rotate... sub-paths).
func isCreate(r *http.Request) bool {
	rest, ok := strings.CutPrefix(r.URL.Path, "/v1/transit/keys/")
	return ok && !strings.Contains(rest, "/") && (r.Method == http.MethodPost || r.Method == http.MethodPut)
}

// TestKeyCreatedDuringErasureIsDestroyed: a write on the sidecar (a) creates a customer's
// first key while `consentry erase` (b) erases the customer: the create reaches Vault after
// the erasure destroyed (nothing of) the customer's keys. createKey must find the erasure
// after the create and destroy the key, even when another call of a's ledger (the decision
// log's checkpoint) read the record first, and when b names keys with another key_name
// template (the record then names other keys; the customer's pseudonym is the same).
func TestKeyCreatedDuringErasureIsDestroyed(t *testing.T) {
	srv := startVault(t)
	base := testConfig(t, srv)
	cases := []struct {
		name       string
		eraserName string // b's key_name template ("" = a's)
		checkpoint bool   // a's decision log reads the ledger (Head) before a's post-create check
	}{
		{"no other reader", "", false},
		{"checkpoint read the record first", "", true},
		{"erased under another key_name template", "consentry-p-{pseudonym}-{class}", false},
		{"another template, checkpoint first", "consentry-p-{pseudonym}-{class}", true},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			customer := fmt.Sprintf("race-%d", i)
			cfgB := base
			cfgB.LedgerPath = t.TempDir() + "/ledger.jsonl"
			if tc.eraserName != "" {
				cfgB.KeyName = tc.eraserName
			}
			b := newManager(t, cfgB, Options{})
			var a *Manager
			var hookErr error
			addr := interceptingProxy(t, srv.Addr, isCreate, func() {
				if _, hookErr = b.Erase(ctx, customer, "cli:ops", "DSR-2"); hookErr == nil && tc.checkpoint {
					a.Ledger().Head()
				}
			})
			cfgA := base
			cfgA.LedgerPath, cfgA.Address = cfgB.LedgerPath, addr
			a = newManager(t, cfgA, Options{})
			ks, err := a.ReleaseForWrite(ctx, customer, allow(map[string]string{"email": "contact"}))
			if hookErr != nil {
				t.Fatalf("erase: %v", hookErr)
			}
			name, _ := a.KeyName(customer, "contact")
			if ks.Has("contact") || !errors.Is(err, ErrErased) {
				t.Errorf("write for a customer erased meanwhile got key %s (err %v)", name, err)
			}
			if keyExists(t, srv, name) {
				t.Errorf("key %s created during the erasure still exists in Vault after the erasure completed", name)
			}
		})
	}
}

// TestKeyRefreshRefusedForErasedCustomer: a KeySet released before an erasure re-exports its
// key when ciphertext names a newer version. After an erasure recorded by another process
// under another key_name template (the record names other keys; Vault still has this one),
// the re-export must be refused, even when the decision log's checkpoint read the record.
func TestKeyRefreshRefusedForErasedCustomer(t *testing.T) {
	srv := startVault(t)
	ctx := context.Background()
	cfgA := testConfig(t, srv)
	cfgB := cfgA
	cfgB.KeyName = "consentry-p-{pseudonym}-{class}"
	a := newManager(t, cfgA, Options{})
	b := newManager(t, cfgB, Options{})
	ks, err := a.ReleaseForWrite(ctx, "c-rot", allow(map[string]string{"email": "contact"}))
	if err != nil {
		t.Fatal(err)
	}
	name, _ := a.KeyName("c-rot", "contact")
	if _, err := srv.Client(t).Logical().Write("transit/keys/"+name+"/rotate", nil); err != nil {
		t.Fatal(err)
	}
	ct := transitEncrypt(t, srv, name, "alice@example.org")
	if !strings.HasPrefix(ct, "vault:v2:") {
		t.Fatalf("ciphertext %q is not of version 2", ct)
	}
	if _, err := b.Erase(ctx, "c-rot", "cli:ops", "DSR-3"); err != nil {
		t.Fatal(err)
	}
	a.Ledger().Head()
	if pt, err := ks.Decrypt("contact", ct); err == nil {
		t.Errorf("refresh of erased customer's key %s decrypted %q", name, pt)
	}
}

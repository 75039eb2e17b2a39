package app

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/consentry/consentry/sidecar/consent"
	"github.com/consentry/consentry/sidecar/decision"
	"github.com/consentry/consentry/sidecar/enrich"
	"github.com/consentry/consentry/vaultkeys"
	"github.com/consentry/consentry/vaultkeys/vaulttest"
)

// TestAdminEraseIsARequest: the admin API's erase runs as a state store erasure request.
// With Vault down the customer is still marked erased (served nowhere) and the request
// stays pending; the sweep finishes it once Vault is back. A malformed id is refused as one
// (400), not as a failure.
func TestAdminEraseIsARequest(t *testing.T) {
	ctx := context.Background()
	srv := vaulttest.Start(t)
	km, err := vaultkeys.New(ctx, vaultkeys.Config{Address: srv.Addr, Auth: vaultkeys.AuthConfig{Method: vaultkeys.AuthToken, Token: srv.Token},
		LedgerPath: filepath.Join(t.TempDir(), "ledger.jsonl"), PseudonymKey: "test-pseudonym-key-0123456789", Timeout: 2 * time.Second},
		vaultkeys.Options{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	defer km.Close()
	st, err := consent.Open(ctx, consent.Config{Backend: "sqlite", DataDir: t.TempDir(), PurposesFile: "../../policies/data/consentry/catalog/data.json"},
		consent.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), NoBackground: true, Eraser: km.EraseFunc()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	d := &decision.Decision{Allow: true, Status: 200, Fields: map[string]decision.Field{"e": {Outcome: decision.OutcomeAllow, KeyScope: "contact"}}, KeyScopes: []string{"contact"}}
	if _, err := km.ReleaseForWrite(ctx, "c-77", d); err != nil {
		t.Fatal(err)
	}
	e := &erasure{keys: km, state: st}
	if _, err := e.Erase(ctx, "bad/id", "dpo", "DSR-1"); !errors.Is(err, vaultkeys.ErrInvalidCustomer) {
		t.Fatalf("malformed id: %v", err)
	}

	srv.Stop()
	if _, err := e.Erase(ctx, "c-77", "dpo", "DSR-2"); err == nil {
		t.Fatal("erase with Vault down reported success")
	}
	// A second erasure asked while the first is pending: its own record; the sweep's retry of
	// the first reuses the first's.
	if _, err := e.Erase(ctx, "c-77", "dpo-2", "DSR-3"); err == nil {
		t.Fatal("second erase with Vault down reported success")
	}
	if en, _ := st.Enrich(ctx, enrich.Query{CustomerID: "c-77"}); en.Customer == nil || !en.Customer.Erased {
		t.Fatalf("customer served while the keys are not destroyed yet: %+v", en.Customer)
	}
	if n := st.Status().(map[string]any)["erasures_pending"]; n != 1 {
		t.Fatalf("pending erasures %v, want 1", n)
	}
	srv.Restart(t)
	if _, err := srv.Client(t).Logical().Write("transit/keys/consentry-c-77-contact", map[string]any{"exportable": true}); err != nil {
		t.Fatal(err)
	}
	if r, err := st.RetryErasures(ctx); err != nil || r.Erased != 1 {
		t.Fatalf("sweep after Vault is back: %+v %v", r, err)
	}
	if s, _ := srv.Client(t).Logical().Read("transit/keys/consentry-c-77-contact"); s != nil {
		t.Fatal("key still in Vault after the sweep")
	}
	if n := len(km.Ledger().Records()); n != 2 {
		t.Fatalf("%d ledger records for two erasures, want 2: %+v", n, km.Ledger().Records())
	}
}

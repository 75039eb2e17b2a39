package vaultkeys

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/consent"
	"github.com/consentry/consentry/vaultkeys/vaulttest"
)

// TestRetriedErasureWritesOneLedgerRecord: docs/operations.md promises that a failed
// erasure "stays a pending request that every sweep retries until done, without a second
// ledger record". The ledger recognizes the retry by its exact actor and reason, so the
// state store's request must keep them as the first attempt used them; a withdrawal's reason
// names a UUID event id and is longer than 64 bytes.
func TestRetriedErasureWritesOneLedgerRecord(t *testing.T) {
	srv := startVault(t)
	proxy := vaulttest.StartFaultProxy(t, srv.Addr)
	cfg := testConfig(t, srv)
	cfg.Address = proxy.Addr
	m := newManager(t, cfg, Options{})
	ctx := context.Background()
	st, err := consent.Open(ctx, consent.Config{Backend: "sqlite", DataDir: t.TempDir(), PurposesFile: "../policies/data/consentry/catalog/data.json"},
		consent.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), NoBackground: true, Eraser: m.EraseFunc()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := m.ReleaseForWrite(ctx, "c-retry", allow(map[string]string{"email": "contact"})); err != nil {
		t.Fatal(err)
	}
	actor := "admin:dpo@example.org"
	reason := "consent withdrawn for marketing.email (event 6f1c2a9e-3b7d-4c55-9a0e-2f8d7b1e4c3a)"
	proxy.SetStatus(503) // Vault unavailable: recorded in the ledger, keys not destroyed
	err = st.RunErasure(ctx, consent.ErasureRequest{CustomerID: "c-retry", RequestedAt: time.Now().UTC(), Actor: actor, Reason: reason}, nil)
	if err == nil {
		t.Fatal("the first attempt should fail while Vault answers 503")
	}
	proxy.SetStatus(0)
	if res, err := st.RetryErasures(ctx); err != nil || res.Erased != 1 {
		t.Fatalf("sweep: %+v %v", res, err)
	}
	n := 0
	for _, r := range m.Ledger().Records() {
		if r.CustomerPseudonym == m.Pseudonym("c-retry") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("one erasure, retried by the sweep, left %d ledger records", n)
	}
	name, _ := m.KeyName("c-retry", "contact")
	if keyExists(t, srv, name) {
		t.Errorf("key %s still in Vault after the retried erasure", name)
	}
}

package vaultkeys

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
)

type recordingSink struct {
	mu   sync.Mutex
	recs []*DestructionRecord
}

func (s *recordingSink) RecordDestruction(_ context.Context, rec *DestructionRecord) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recs = append(s.recs, rec)
	return nil
}

// Crypto-shredding: a copy of the CRM data taken before the erasure (the "backup") no longer
// decrypts afterwards — not through consentry (this process, a fresh process, a process that
// lost the ledger) and not through Vault itself. The erasure is visible to this process's very
// next request, leaves a destruction record in the decision log and the ledger, and keys are
// never created again for the erased customer.
func TestEraseShredsBackups(t *testing.T) {
	srv := startVault(t)
	cfg := testConfig(t, srv)
	sink := &recordingSink{}
	m := newManager(t, cfg, Options{Destructions: sink})
	ctx := context.Background()
	d := allow(map[string]string{"contact.email": "contact", "health.notes": "health", "name": ""})

	ks, err := m.ReleaseForWrite(ctx, "cust-9", d)
	if err != nil {
		t.Fatal(err)
	}
	email, _ := ks.Encrypt("contact", []byte("grace@example.org"))
	notes, _ := ks.Encrypt("health", []byte("asthma"))
	// The CRM already had transit ciphertext too; a second key version exists.
	if _, err := srv.Client(t).Logical().Write("transit/keys/consentry-cust-9-contact/rotate", nil); err != nil {
		t.Fatal(err)
	}
	phone := transitEncrypt(t, srv, "consentry-cust-9-contact", "+44 20 7946 0000")
	backup := map[string]string{"contact.email": email, "health.notes": notes, "contact.phone": phone}
	d.Fields["contact.phone"] = d.Fields["contact.email"]

	// Warm cache before the erasure: the request right after must not be served from it.
	ks, err = m.Release(ctx, "cust-9", d)
	if err != nil {
		t.Fatal(err)
	}
	if plain, w := ks.DecryptFields(d, backup); len(w) != 0 || plain["contact.phone"] != "+44 20 7946 0000" {
		t.Fatalf("before erasure: %v %v", plain, w)
	}

	rec, err := m.Erase(ctx, "cust-9", "dpo@example.org", "consent withdrawn (ticket 123)")
	if err != nil {
		t.Fatal(err)
	}
	if rec.CustomerPseudonym != m.Pseudonym("cust-9") || strings.Contains(rec.CustomerPseudonym, "cust-9") {
		t.Fatalf("pseudonym %q", rec.CustomerPseudonym)
	}
	if rec.Actor != "dpo@example.org" || rec.Reason == "" || rec.Seq != 1 || rec.Hash == "" {
		t.Fatalf("record %+v", rec)
	}
	byName := map[string]DestroyedKey{}
	for _, k := range rec.Keys {
		byName[k.Name] = k
	}
	if k := byName["consentry-cust-9-contact"]; !k.Existed || len(k.Versions) != 2 {
		t.Fatalf("contact key record %+v, want 2 versions", k)
	}
	if k := byName["consentry-cust-9-financial"]; k.Existed || len(rec.Keys) != len(DefaultClasses) {
		t.Fatalf("financial never existed: %+v; keys %d", k, len(rec.Keys))
	}
	if len(sink.recs) != 1 || sink.recs[0].Hash != rec.Hash {
		t.Fatalf("decision log got %d records", len(sink.recs))
	}

	// Next request, same process: erased, zero Vault requests, nothing decrypts.
	mark := srv.AuditMark(t)
	ks, err = m.Release(ctx, "cust-9", d)
	if !errors.Is(err, ErrErased) || len(ks.Scopes()) != 0 {
		t.Fatalf("after erasure: %v, scopes %v", err, ks.Scopes())
	}
	plain, withheld := ks.DecryptFields(d, backup)
	if len(plain) != 0 || len(withheld) != 3 || withheld[0].Reason != ReasonErased {
		t.Fatalf("after erasure: plain %v withheld %+v", plain, withheld)
	}
	if reqs := srv.AuditRequests(t, mark); len(reqs) != 0 {
		t.Fatalf("erased customer's request reached Vault: %v", reqs)
	}

	// Vault itself cannot decrypt the backup any more: the key is gone.
	for name, ct := range map[string]string{"consentry-cust-9-contact": phone, "consentry-cust-9-health": notes} {
		if pt, err := transitDecrypt(t, srv, name, ct); err == nil {
			t.Fatalf("Vault still decrypts %s: %q", name, pt)
		}
	}

	// A fresh process with the same ledger: erased. With the ledger lost: the key is simply
	// missing in Vault, and the backup still does not decrypt.
	m2 := newManager(t, cfg, Options{})
	if _, err := m2.Release(ctx, "cust-9", d); !errors.Is(err, ErrErased) {
		t.Fatalf("fresh process: %v", err)
	}
	lost := cfg
	lost.LedgerPath = t.TempDir() + "/other.jsonl"
	m3 := newManager(t, lost, Options{})
	ks, err = m3.Release(ctx, "cust-9", d)
	if !errors.Is(err, ErrNoKey) {
		t.Fatalf("no ledger: %v", err)
	}
	if plain, _ := ks.DecryptFields(d, backup); len(plain) != 0 {
		t.Fatalf("backup decrypted without a ledger: %v", plain)
	}

	// Creating keys again is refused, in this process and in another one sharing the ledger.
	for i, mm := range []*Manager{m, m2} {
		if _, err := mm.ReleaseForWrite(ctx, "cust-9", d); !errors.Is(err, ErrErased) {
			t.Fatalf("manager %d recreated keys for an erased customer: %v", i, err)
		}
	}
	if s, _ := srv.Client(t).Logical().Read("transit/keys/consentry-cust-9-contact"); s != nil {
		t.Fatal("key exists again in Vault")
	}

	// The ledger on disk names the customer only by pseudonym and key name, and verifies.
	raw, _ := os.ReadFile(cfg.LedgerPath)
	if strings.Contains(string(raw), "grace") || !strings.Contains(string(raw), rec.CustomerPseudonym) {
		t.Fatalf("ledger content: %s", raw)
	}
	if _, err := OpenLedger(cfg.LedgerPath); err != nil {
		t.Fatal(err)
	}
}

// A Vault restore from a snapshot older than the erasure brings the key back; replaying the
// ledger destroys it again. The restore is simulated with transit's own backup/restore of the
// key (what a storage snapshot restore does to that key).
func TestReplayErasuresAfterRestore(t *testing.T) {
	srv := startVault(t)
	cfg := testConfig(t, srv)
	m := newManager(t, cfg, Options{})
	ctx := context.Background()
	d := allow(map[string]string{"e": "contact"})
	ks, err := m.ReleaseForWrite(ctx, "r1", d)
	if err != nil {
		t.Fatal(err)
	}
	backupCT, _ := ks.Encrypt("contact", []byte("old@example.org"))

	root := srv.Client(t)
	if _, err := root.Logical().Write("transit/keys/consentry-r1-contact/config", map[string]any{"allow_plaintext_backup": true}); err != nil {
		t.Fatal(err)
	}
	snap, err := root.Logical().Read("transit/backup/consentry-r1-contact")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Erase(ctx, "r1", "cli:test", "erasure request"); err != nil {
		t.Fatal(err)
	}
	// Restore the old snapshot: Vault decrypts the erased customer's data again.
	if _, err := root.Logical().Write("transit/restore/consentry-r1-contact", map[string]any{"backup": snap.Data["backup"]}); err != nil {
		t.Fatal(err)
	}
	if pt, err := transitDecrypt(t, srv, "consentry-r1-contact", backupCT); err != nil || pt != "old@example.org" {
		t.Fatalf("restore did not bring the key back: %q %v", pt, err)
	}
	// Even with the key back in Vault, consentry refuses to release it.
	if _, err := m.Release(ctx, "r1", d); !errors.Is(err, ErrErased) {
		t.Fatalf("restored key released: %v", err)
	}

	// Replay from a separate process (the CLI) sharing the ledger.
	cli := newManager(t, cfg, Options{})
	rep, err := cli.ReplayErasures(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Records != 1 || len(rep.Destroyed) != 1 || rep.Destroyed[0] != "consentry-r1-contact" || rep.Absent != len(DefaultClasses)-1 {
		t.Fatalf("replay report %+v", rep)
	}
	if _, err := transitDecrypt(t, srv, "consentry-r1-contact", backupCT); err == nil {
		t.Fatal("backup decrypts after replay")
	}
	// Idempotent.
	rep, err = cli.ReplayErasures(ctx)
	if err != nil || len(rep.Destroyed) != 0 || rep.Absent != len(DefaultClasses) {
		t.Fatalf("second replay %+v %v", rep, err)
	}
}

// An erasure that cannot reach Vault is still recorded (the ledger is the source of truth), is
// effective at once for this process, and is completed by replay when Vault is back.
func TestEraseWhileVaultDown(t *testing.T) {
	srv := startVault(t)
	cfg := testConfig(t, srv)
	cfg.Auth.Token = srv.Token // the dev server's root token survives a restart
	m := newManager(t, cfg, Options{})
	ctx := context.Background()
	d := allow(map[string]string{"e": "contact"})
	if _, err := m.ReleaseForWrite(ctx, "down1", d); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	rec, err := m.Erase(ctx, "down1", "admin-token", "consent withdrawn")
	if err == nil || rec == nil || rec.Seq != 1 {
		t.Fatalf("erase with Vault down: rec %+v err %v", rec, err)
	}
	if _, err := m.Release(ctx, "down1", d); !errors.Is(err, ErrErased) {
		t.Fatalf("cached key served after erasure: %v", err)
	}
	srv.Restart(t)
	// The restarted dev server lost its state; recreate the key as a restore would.
	if _, err := srv.Client(t).Logical().Write("transit/keys/consentry-down1-contact", map[string]any{"exportable": true}); err != nil {
		t.Fatal(err)
	}
	rep, err := m.ReplayErasures(ctx)
	if err != nil || len(rep.Destroyed) != 1 {
		t.Fatalf("replay: %+v %v", rep, err)
	}
	// Retried (the consent store's sweep retries a failed erasure): the keys are destroyed
	// again, without a second destruction record.
	if _, err := srv.Client(t).Logical().Write("transit/keys/consentry-down1-contact", map[string]any{"exportable": true}); err != nil {
		t.Fatal(err)
	}
	again, err := m.Erase(ctx, "down1", "admin-token", "consent withdrawn")
	if err != nil || again.Seq != 1 || len(m.Ledger().Records()) != 1 {
		t.Fatalf("retried erase: %+v %v, %d ledger records", again, err, len(m.Ledger().Records()))
	}
	if s, _ := srv.Client(t).Logical().Read("transit/keys/consentry-down1-contact"); s != nil {
		t.Fatal("a retried erasure left the key in Vault")
	}
	// The same retry after the key_name template changed: the old record misses today's
	// names, so the retry gets a record of its own that names them.
	renamed := cfg
	renamed.KeyName = "consentry-{pseudonym}-{class}"
	m2 := newManager(t, renamed, Options{})
	before := len(m2.Ledger().Records())
	if rec, err := m2.Erase(ctx, "down1", "admin-token", "consent withdrawn"); err != nil || rec.Seq != int64(before+1) || !strings.Contains(rec.Keys[0].Name, "consentry-") || strings.Contains(rec.Keys[0].Name, "down1") {
		t.Fatalf("retry after a template change: %+v %v", rec, err)
	}
	// Another erasure of the same customer (another actor or reason) is a record of its own.
	other, err := m.Erase(ctx, "down1", "dpo", "ticket DSR-7")
	if err != nil || other.Seq != 3 || other.Actor != "dpo" {
		t.Fatalf("second erasure: %+v %v", other, err)
	}
	// An id the key_name template cannot hold (an email): no key can exist for it; the
	// erasure is recorded with no keys, not failed forever.
	rec, err = m.Erase(ctx, "jane@example.com", "dpo", "consent withdrawn")
	if err != nil || rec == nil || len(rec.Keys) != 0 || !m.Ledger().Erased(m.Pseudonym("jane@example.com")) {
		t.Fatalf("erase of an id no key can have: %+v %v", rec, err)
	}
}

// With the {pseudonym} key name template and the decision log's pseudonymizer, neither Vault
// paths, nor the audit log, nor the ledger carry the customer id.
func TestPseudonymousKeyNames(t *testing.T) {
	srv := startVault(t)
	cfg := testConfig(t, srv)
	cfg.KeyName = "consentry-{pseudonym}-{class}"
	cfg.PseudonymKey = ""
	pseudo := func(id string) string { return "cp_" + strings.Repeat("0", 24) + fmt.Sprintf("%08x", len(id)*7919) }
	m := newManager(t, cfg, Options{Pseudonymize: pseudo})
	ctx := context.Background()
	mark := srv.AuditMark(t)
	if _, err := m.ReleaseForWrite(ctx, "alice-smith", allow(map[string]string{"e": "contact"})); err != nil {
		t.Fatal(err)
	}
	rec, err := m.Erase(ctx, "alice-smith", "dpo", "withdrawn")
	if err != nil {
		t.Fatal(err)
	}
	if rec.CustomerPseudonym != pseudo("alice-smith") || rec.Keys[0].Name != "consentry-"+pseudo("alice-smith")+"-contact" {
		t.Fatalf("record %+v", rec)
	}
	audit, _ := os.ReadFile(srv.AuditPath)
	ledger, _ := os.ReadFile(cfg.LedgerPath)
	if strings.Contains(string(audit[mark:]), "alice") || strings.Contains(string(ledger), "alice") {
		t.Fatal("customer id leaked into Vault's audit log or the ledger")
	}
	// Without a pseudonym key or function, New refuses to start.
	if _, err := New(ctx, cfg, Options{}); err == nil || !strings.Contains(err.Error(), "vault.pseudonym_key_file") {
		t.Fatalf("no pseudonymizer: %v", err)
	}
}

// TestEraseWithWrongMountIsNotComplete: when the transit mount does not exist, Vault answers
// 404 for every key path; that must not read as "the keys are already gone".
func TestEraseWithWrongMountIsNotComplete(t *testing.T) {
	srv := startVault(t)
	cfg := testConfig(t, srv)
	m := newManager(t, cfg, Options{})
	ctx := context.Background()
	if _, err := m.ReleaseForWrite(ctx, "mnt1", allow(map[string]string{"e": "contact"})); err != nil {
		t.Fatal(err)
	}
	cfg.TransitMount = "no-such-mount"
	cfg.Auth.Token = srv.Token
	wrong := newManager(t, cfg, Options{})
	rec, err := wrong.Erase(ctx, "mnt1", "dpo", "withdrawn")
	if err == nil || !strings.Contains(err.Error(), "no handler for route") {
		t.Fatalf("erasure through a missing mount reported complete: %+v", rec)
	}
}

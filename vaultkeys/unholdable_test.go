package vaultkeys

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestKeyNamesVaultCannotHold: Vault refuses every path holding ".." (400 "relative paths not
// supported"), so a customer "a..b" can have no key. Such an id must not name one: its reads
// and writes are refused as an invalid request (not withheld as keys.unavailable, nor retried
// against Vault forever), and its erasure is recorded with no keys, like an id the template
// cannot hold at all. A ledger that already names such keys (recorded before validName refused
// "..", with Existed true) replays them as absent and a retried erasure completes: otherwise
// replay-erasures exits 1 for good and hides real failures.
func TestKeyNamesVaultCannotHold(t *testing.T) {
	srv := startVault(t)
	cfg := testConfig(t, srv)
	m := newManager(t, cfg, Options{})
	ctx := context.Background()
	d := allow(map[string]string{"e": "contact"})

	for _, id := range []string{"a..b", "x..", "..", "a...b"} {
		if _, err := m.KeyName(id, "contact"); !errors.Is(err, ErrInvalidCustomer) {
			t.Errorf("KeyName(%q): %v, want ErrInvalidCustomer", id, err)
		}
	}
	if _, err := m.ReleaseForWrite(ctx, "a..b", d); Reason(err) != ReasonInvalid {
		t.Fatalf("write for a..b: %v (reason %s), want %s", err, Reason(err), ReasonInvalid)
	}
	if _, err := m.Release(ctx, "a..b", d); Reason(err) != ReasonInvalid {
		t.Fatalf("read for a..b: %v (reason %s), want %s", err, Reason(err), ReasonInvalid)
	}
	rec, err := m.Erase(ctx, "a..b", "dpo", "withdrawn")
	if err != nil || rec == nil || len(rec.Keys) != 0 || !m.Ledger().Erased(m.Pseudonym("a..b")) {
		t.Fatalf("erase of a..b: %+v %v", rec, err)
	}

	// A ledger written before the fix: the erasure named keys with ".." as existing.
	old := &DestructionRecord{Time: time.Now().UTC().Truncate(time.Microsecond), CustomerPseudonym: m.Pseudonym("c..d"),
		Actor: "sweep", Reason: "consent withdrawn"}
	for _, c := range cfg.WithDefaults().Classes {
		old.Keys = append(old.Keys, DestroyedKey{Name: "consentry-c..d-" + c, Existed: true})
	}
	if err := m.Ledger().Append(old); err != nil {
		t.Fatal(err)
	}
	if _, err := m.ReleaseForWrite(ctx, "kept", d); err != nil { // a real key, restored below
		t.Fatal(err)
	}
	if _, err := m.Erase(ctx, "kept", "dpo", "withdrawn"); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Client(t).Logical().Write("transit/keys/consentry-kept-contact", map[string]any{"exportable": true}); err != nil {
		t.Fatal(err)
	}
	cli := newManager(t, cfg, Options{})
	rep, err := cli.ReplayErasures(ctx)
	if err != nil || len(rep.Failed) != 0 || len(rep.Destroyed) != 1 || rep.Destroyed[0] != "consentry-kept-contact" || rep.Absent != 2*len(DefaultClasses)-1 {
		t.Fatalf("replay: %+v %v", rep, err)
	}
	// The sweep retries the old erasure as it was requested: it completes.
	again, err := cli.Erase(ctx, "c..d", "sweep", "consent withdrawn")
	if err != nil || again.Seq != old.Seq {
		t.Fatalf("retried erasure of c..d: %+v %v", again, err)
	}
}

// TestPseudonymTokenValidated: with the {pseudonym} template, an integrator's Pseudonymize
// builds the key name. A token that is no transit key name ("/" would name another Vault
// path, ".." a path Vault refuses) is refused as an invalid customer before any Vault call,
// and erasing that customer records no key.
func TestPseudonymTokenValidated(t *testing.T) {
	srv := startVault(t)
	cfg := testConfig(t, srv)
	cfg.KeyName = "consentry-{pseudonym}-{class}"
	cfg.PseudonymKey = ""
	pseudo := func(id string) string {
		switch id {
		case "slash":
			return "cp_ab/cd"
		case "dots":
			return "cp_ab..cd"
		case "lead":
			return "x:-ab"
		case "long":
			return strings.Repeat("a", 129)
		}
		return "cp_" + id
	}
	m := newManager(t, cfg, Options{Pseudonymize: pseudo})
	ctx := context.Background()
	if n, err := m.KeyName("ok1", "contact"); err != nil || n != "consentry-cp_ok1-contact" {
		t.Fatalf("KeyName(ok1) = %q, %v", n, err)
	}
	mark := srv.AuditMark(t)
	for _, id := range []string{"slash", "dots", "lead", "long"} {
		if n, err := m.KeyName(id, "contact"); !errors.Is(err, ErrInvalidCustomer) {
			t.Errorf("KeyName(%q) = %q, %v, want ErrInvalidCustomer", id, n, err)
		}
		if _, err := m.ReleaseForWrite(ctx, id, allow(map[string]string{"e": "contact"})); Reason(err) != ReasonInvalid {
			t.Errorf("write for %q: %v, want %s", id, err, ReasonInvalid)
		}
		if rec, err := m.Erase(ctx, id, "dpo", "withdrawn"); err != nil || len(rec.Keys) != 0 {
			t.Errorf("erase of %q: %+v %v", id, rec, err)
		}
	}
	if reqs := transitPaths(srv.AuditRequests(t, mark)); len(reqs) != 0 {
		t.Fatalf("Vault asked for keys of invalid pseudonyms: %v", reqs)
	}
}

package vaultkeys

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/consentry/consentry/sidecar/decision"
)

// A CRM that already stores Vault transit ciphertext works unchanged, in both directions:
// consentry decrypts what transit/encrypt produced, and transit/decrypt reads what consentry
// encrypts on the write path.
func TestTransitCiphertextInterop(t *testing.T) {
	srv := startVault(t)
	m := newManager(t, testConfig(t, srv), Options{})
	ctx := context.Background()
	d := allow(map[string]string{"contact.email": "contact", "payment.card_number": "financial"})

	ks, err := m.ReleaseForWrite(ctx, "cust-1", d) // creates the two keys
	if err != nil {
		t.Fatal(err)
	}
	mine, err := ks.Encrypt("contact", []byte("ada@example.org"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := transitDecrypt(t, srv, "consentry-cust-1-contact", mine); err != nil || got != "ada@example.org" {
		t.Fatalf("transit/decrypt of consentry ciphertext = %q, %v", got, err)
	}

	// Rotate in Vault: old and new versions must both read; new writes use the latest.
	if _, err := srv.Client(t).Logical().Write("transit/keys/consentry-cust-1-financial/rotate", nil); err != nil {
		t.Fatal(err)
	}
	v2 := transitEncrypt(t, srv, "consentry-cust-1-financial", "4111111111111111")
	if v2[:9] != "vault:v2:" {
		t.Fatalf("expected a v2 ciphertext, got %s", v2[:9])
	}
	m.cache.purge()
	ks, err = m.Release(ctx, "cust-1", d)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ scope, ct, want string }{
		{"contact", mine, "ada@example.org"},
		{"contact", transitEncrypt(t, srv, "consentry-cust-1-contact", "+33 1 23 45"), "+33 1 23 45"},
		{"financial", v2, "4111111111111111"},
	} {
		got, err := ks.Decrypt(tc.scope, tc.ct)
		if err != nil || string(got) != tc.want {
			t.Errorf("Decrypt(%s) = %q, %v; want %q", tc.scope, got, err, tc.want)
		}
	}
	fresh, _ := ks.Encrypt("financial", []byte("x"))
	if fresh[:9] != "vault:v2:" {
		t.Errorf("write path must use the latest version, got %s", fresh[:9])
	}
	// Ciphertext of another customer's key does not decrypt, and says why.
	other := transitEncrypt(t, srv, "consentry-cust-1-contact", "secret")
	if _, err := ks.Decrypt("financial", other); !errors.Is(err, ErrDecrypt) {
		t.Errorf("cross-key decrypt: %v, want ErrDecrypt", err)
	}
}

// The release API is gated by the decision, and Vault's own audit log proves it: a denied
// request makes zero Vault requests; an allowed one exports exactly the allowed scopes' keys
// (never the health key of a purpose that may not see health data); a warm request makes none.
func TestReleaseOnlyAfterAllowAuditLog(t *testing.T) {
	srv := startVault(t)
	m := newManager(t, testConfig(t, srv), Options{})
	ctx := context.Background()
	// Keys of all four classes exist (a CRM with data of every class).
	all := allow(map[string]string{"e": "contact", "dob": "identity", "card": "financial", "notes": "health"})
	if _, err := m.ReleaseForWrite(ctx, "c42", all); err != nil {
		t.Fatal(err)
	}
	m.cache.purge()

	// 1. Deny: the policy denied; whatever the fields say, zero Vault requests.
	deny := withDenied(decision.Deny(403, "consent.missing", "no consent"), map[string]string{"e": "contact", "notes": "health"})
	deny.KeyScopes = []string{"contact", "health"} // even a malformed deny releases nothing
	mark := srv.AuditMark(t)
	ks, err := m.Release(ctx, "c42", deny)
	if err != nil {
		t.Fatal(err)
	}
	if len(ks.Scopes()) != 0 {
		t.Fatalf("deny released %v", ks.Scopes())
	}
	if _, err := ks.Decrypt("contact", "vault:v1:AAAA"); !errors.Is(err, ErrNotReleased) {
		t.Fatalf("decrypt after deny: %v", err)
	}
	if reqs := srv.AuditRequests(t, mark); len(reqs) != 0 {
		t.Fatalf("denied request reached Vault %d times: %v", len(reqs), reqs)
	}

	// 2. Allow for support: contact and financial allowed, health denied.
	d := withDenied(allow(map[string]string{"e": "contact", "phone": "contact", "card": "financial", "name": ""}),
		map[string]string{"notes": "health"})
	mark = srv.AuditMark(t)
	ks, err = m.Release(ctx, "c42", d)
	if err != nil {
		t.Fatal(err)
	}
	got := transitPaths(srv.AuditRequests(t, mark))
	slices.Sort(got)
	want := []string{"read transit/export/encryption-key/consentry-c42-contact", "read transit/export/encryption-key/consentry-c42-financial"}
	if !slices.Equal(got, want) {
		t.Fatalf("allowed request touched %v, want exactly %v", got, want)
	}
	for _, r := range srv.AuditRequests(t, mark) {
		if !slices.Equal(r.Policies, []string{"consentry"}) {
			t.Errorf("request %s ran with policies %v, want only consentry", r.Path, r.Policies)
		}
	}
	if !slices.Equal(ks.Scopes(), []string{"contact", "financial"}) || ks.Has("health") {
		t.Fatalf("released %v", ks.Scopes())
	}
	if _, err := ks.Decrypt("health", "vault:v1:AAAA"); !errors.Is(err, ErrNotReleased) {
		t.Fatalf("health must not be released: %v", err)
	}

	// 3. Warm: same scopes, zero Vault requests.
	mark = srv.AuditMark(t)
	if _, err := m.Release(ctx, "c42", d); err != nil {
		t.Fatal(err)
	}
	if reqs := srv.AuditRequests(t, mark); len(reqs) != 0 {
		t.Fatalf("warm request reached Vault: %v", reqs)
	}

	// 4. Cold with many fields of one scope: still one request for that scope.
	m.cache.purge()
	many := map[string]string{}
	for _, f := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		many[f] = "contact"
	}
	mark = srv.AuditMark(t)
	if _, err := m.Release(ctx, "c42", allow(many)); err != nil {
		t.Fatal(err)
	}
	if got := transitPaths(srv.AuditRequests(t, mark)); len(got) != 1 {
		t.Fatalf("8 fields of one scope made %d Vault requests: %v", len(got), got)
	}
}

// Concurrent misses for the same key share one Vault request (single-flight).
func TestReleaseSingleFlight(t *testing.T) {
	srv := startVault(t)
	m := newManager(t, testConfig(t, srv), Options{})
	ctx := context.Background()
	d := allow(map[string]string{"e": "contact"})
	if _, err := m.ReleaseForWrite(ctx, "sf", d); err != nil {
		t.Fatal(err)
	}
	m.cache.purge()
	mark := srv.AuditMark(t)
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ks, err := m.Release(ctx, "sf", d)
			if err == nil && !ks.Has("contact") {
				err = errors.New("contact not released")
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := transitPaths(srv.AuditRequests(t, mark)); len(got) != 1 {
		t.Fatalf("32 concurrent cold releases made %d Vault requests, want 1: %v", len(got), got)
	}
}

// A customer without keys, an unknown scope or an invalid id is withheld, never an error that
// hides other scopes.
func TestReleasePartial(t *testing.T) {
	srv := startVault(t)
	m := newManager(t, testConfig(t, srv), Options{})
	ctx := context.Background()
	if _, err := m.ReleaseForWrite(ctx, "p1", allow(map[string]string{"e": "contact"})); err != nil {
		t.Fatal(err)
	}
	d := allow(map[string]string{"e": "contact", "card": "financial"})
	ks, err := m.Release(ctx, "p1", d)
	if !errors.Is(err, ErrNoKey) {
		t.Fatalf("missing financial key: err %v", err)
	}
	if !ks.Has("contact") || Reason(ks.Err("financial")) != ReasonNoKey {
		t.Fatalf("contact usable %v, financial reason %s", ks.Has("contact"), Reason(ks.Err("financial")))
	}
	ct, _ := ks.Encrypt("contact", []byte("ada@example.org"))
	plain, withheld := ks.DecryptFields(d, map[string]string{"e": ct, "card": "vault:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"})
	if plain["e"] != "ada@example.org" || len(withheld) != 1 || withheld[0].Field != "card" || withheld[0].Reason != ReasonNoKey {
		t.Fatalf("plain %v withheld %+v", plain, withheld)
	}
	if _, ok := plain["card"]; ok {
		t.Fatal("withheld field must not appear in plaintext")
	}

	// A key the CRM created without exportable=true: withheld with a precise reason.
	if _, err := srv.Client(t).Logical().Write("transit/keys/consentry-p1-health", nil); err != nil {
		t.Fatal(err)
	}
	if ks, err := m.Release(ctx, "p1", allow(map[string]string{"n": "health"})); !errors.Is(err, ErrNotExportable) || Reason(ks.Err("health")) != ReasonNotExportable {
		t.Fatalf("non-exportable key: %v", err)
	}

	bad := allow(map[string]string{"x": "genome"})
	if ks, err := m.Release(ctx, "p1", bad); !errors.Is(err, ErrUnknownScope) || ks.Has("genome") {
		t.Fatalf("unknown scope: %v", err)
	}
	if _, err := m.Release(ctx, "../sys/policy", d); !errors.Is(err, ErrInvalidCustomer) {
		t.Fatalf("path-like customer id: %v", err)
	}
}

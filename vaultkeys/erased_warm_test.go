package vaultkeys

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/decision"
)

// TestWarmKeysRefusedOnceCustomerErasedUnderAnotherTemplate: a sidecar holds a customer's keys
// in its cache when another process, configured with another vault.key_name template, erases
// the customer. The destruction record names that process's keys, so blocking names does not
// reach this sidecar's cached ones. Once this sidecar's ledger knows the customer's pseudonym
// (its own refresh, past the one-second interval, or any other reader such as the decision
// log's checkpoint), every entry point must refuse every scope with ErrErased and drop the
// cached keys, instead of serving them from the cache until the TTL.
func TestWarmKeysRefusedOnceCustomerErasedUnderAnotherTemplate(t *testing.T) {
	srv := startVault(t)
	ctx := context.Background()
	cfgA := testConfig(t, srv)
	cfgB := cfgA // same ledger
	cfgB.KeyName = "consentry-p-{pseudonym}-{class}"
	ck := &settableClock{t: time.Now()}
	a := newManager(t, cfgA, Options{Now: ck.now})
	b := newManager(t, cfgB, Options{})
	scopes := map[string]string{"email": "contact", "iban": "financial"}

	readers := []struct {
		name string
		read func()
	}{
		{"own refresh past the interval", func() { ck.add(2 * time.Second) }},
		{"checkpoint read the head", func() { a.Ledger().Head() }},
	}
	entries := []struct {
		name    string
		release func(customer string) (*KeySet, error)
	}{
		{"Release", func(c string) (*KeySet, error) { return a.Release(ctx, c, allow(scopes)) }},
		{"ReleaseRecord", func(c string) (*KeySet, error) {
			d := allow(scopes)
			d.Records = map[string]decision.Record{c: {Allow: true, KeyScopes: d.KeyScopes}}
			return a.ReleaseRecord(ctx, d, c)
		}},
		{"ReleaseForWrite", func(c string) (*KeySet, error) { return a.ReleaseForWrite(ctx, c, allow(scopes)) }},
	}
	i := 0
	for _, r := range readers {
		for _, e := range entries {
			i++
			customer := fmt.Sprintf("c-warm-%d", i)
			t.Run(r.name+"/"+e.name, func(t *testing.T) {
				if _, err := a.ReleaseForWrite(ctx, customer, allow(scopes)); err != nil {
					t.Fatal(err)
				}
				if ks, err := e.release(customer); err != nil || !ks.Has("contact") || !ks.Has("financial") {
					t.Fatalf("before the erasure: %v", err)
				}
				if _, err := b.Erase(ctx, customer, "cli:ops", "DSR-4"); err != nil {
					t.Fatal(err)
				}
				r.read()
				ks, err := e.release(customer)
				if !a.Ledger().Erased(a.Pseudonym(customer)) {
					t.Fatal("the sidecar's ledger has not read the erasure")
				}
				if !errors.Is(err, ErrErased) {
					t.Errorf("err = %v, want ErrErased", err)
				}
				for _, class := range []string{"contact", "financial"} {
					if ks.Has(class) || !errors.Is(ks.Err(class), ErrErased) {
						t.Errorf("scope %s: released %v, err %v; want refused as erased", class, ks.Has(class), ks.Err(class))
					}
					name, _ := a.KeyName(customer, class)
					if k := a.cache.get(name, ck.now()); k != nil {
						t.Errorf("key %s is still cached", name)
					}
				}
			})
		}
	}
}

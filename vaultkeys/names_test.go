package vaultkeys

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"sync"
	"testing"
)

// TestHMACPseudonymsStayTheSame: the default pseudonymizer reuses pooled HMACs (every cold
// release computes a pseudonym); the pseudonyms must stay those of HMAC-SHA256(key, id),
// which existing ledgers and key names hold, whichever pooled HMAC computes them and however
// many goroutines share the pool.
func TestHMACPseudonymsStayTheSame(t *testing.T) {
	key := []byte(testPseudonymKey)
	want := func(id string) string {
		h := hmac.New(sha256.New, key)
		h.Write([]byte(id))
		return "hmac-sha256:" + hex.EncodeToString(h.Sum(nil))[:32]
	}
	ps := hmacPseudonymizer(key)
	ids := []string{"c-1", "c-2", "", "a-much-longer-customer-identifier-than-one-sha256-block-holds-0123456789"}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 50 {
				for _, id := range ids {
					if got := ps(id); got != want(id) {
						t.Errorf("pseudonym of %q = %s, want %s", id, got, want(id))
						return
					}
				}
			}
		})
	}
	wg.Wait()
}

package vaultkeys

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"strings"
	"sync"
)

// Customer pseudonyms and transit key names.

// hmacPseudonymizer names customers "hmac-sha256:" + 32 hex digits of HMAC-SHA256(key, id).
// Releases check the ledger by pseudonym (a warm one with the pseudonym kept with the cached
// key; a cold one, or any with a {pseudonym} key_name template, computes it), so the HMACs are
// pooled: a reset one starts from its saved inner and outer pads instead of hashing the key.
func hmacPseudonymizer(key []byte) func(string) string {
	pool := sync.Pool{New: func() any { return hmac.New(sha256.New, key) }}
	return func(id string) string {
		h := pool.Get().(hash.Hash)
		h.Reset()
		h.Write([]byte(id))
		var sum [sha256.Size]byte
		out := h.Sum(sum[:0])
		pool.Put(h)
		var buf [len("hmac-sha256:") + 32]byte
		n := copy(buf[:], "hmac-sha256:")
		hex.Encode(buf[n:], out[:16])
		return string(buf[:])
	}
}

// Pseudonym is the keyed pseudonym of a customer id used in destruction records.
func (m *Manager) Pseudonym(customerID string) string { return m.pseudo(customerID) }

// nameRule is validName in words, for errors.
const nameRule = `allowed: letters, digits, _ . -; no "." or "-" first or last, no ".."; at most 128`

// KeyName is the transit key of customerID for class.
func (m *Manager) KeyName(customerID, class string) (string, error) {
	return m.keyName(customerID, "", class)
}

// keyName is KeyName with the customer's pseudonym when the caller has it ("": computed here
// if the template needs it), so a release computes it once, not once per scope.
func (m *Manager) keyName(customerID, pseudonym, class string) (string, error) {
	if customerID == "" {
		return "", fmt.Errorf("%w: empty", ErrInvalidCustomer)
	}
	name := strings.Replace(m.cfg.KeyName, "{class}", class, 1)
	if strings.Contains(name, "{customer}") {
		if !validName(customerID) {
			return "", fmt.Errorf("%w: %q (%s)", ErrInvalidCustomer, customerID, nameRule)
		}
		return strings.Replace(name, "{customer}", customerID, 1), nil
	}
	if pseudonym == "" {
		pseudonym = m.Pseudonym(customerID)
	}
	// An integrator's Pseudonymize may return anything: a token with '/' would name another
	// Vault path, one with ".." a path Vault refuses. Such a customer can have no key, as an
	// id the {customer} template cannot hold.
	tok := pseudonymToken(pseudonym)
	if !validName(tok) {
		return "", fmt.Errorf("%w: its pseudonym %q cannot name a key (%s)", ErrInvalidCustomer, tok, nameRule)
	}
	return strings.Replace(name, "{pseudonym}", tok, 1), nil
}

// pseudonymToken keeps the name-safe characters of a pseudonym ("hmac-sha256:ab12" -> "ab12",
// "cp_ab12" -> "cp_ab12").
func pseudonymToken(p string) string {
	if _, after, ok := strings.Cut(p, ":"); ok {
		p = after
	}
	return p
}

func (m *Manager) knownClass(class string) bool {
	for _, c := range m.cfg.Classes {
		if c == class {
			return true
		}
	}
	return false
}

package auditlog

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"os"
	"sync"
)

// MinPseudonymKey is the minimum HMAC key length in bytes.
const MinPseudonymKey = 32

// Pseudonymizer maps customer and employee ids to keyed pseudonyms (HMAC-SHA256). The log
// stores only pseudonyms, so erasing a customer never needs a rewrite of the log: without the
// customer id (erased from the CRM) the pseudonym points at nobody, and the log's hash chain
// stays intact.
type Pseudonymizer struct {
	key  []byte
	pool sync.Pool
}

// NewPseudonymizer returns a pseudonymizer for key (at least MinPseudonymKey bytes).
func NewPseudonymizer(key []byte) (*Pseudonymizer, error) {
	if len(key) < MinPseudonymKey {
		return nil, fmt.Errorf("pseudonym key: %d bytes, need at least %d", len(key), MinPseudonymKey)
	}
	k := append([]byte(nil), key...)
	p := &Pseudonymizer{key: k}
	p.pool.New = func() any { return hmac.New(sha256.New, k) }
	return p, nil
}

// Customer returns the pseudonym of a customer id: "cp_" + 32 hex digits.
func (p *Pseudonymizer) Customer(id string) string { return p.sum("cp_", "customer\x00", id) }

// Subject returns the pseudonym of an employee or other subject id, used by the per-customer
// report unless employees are named explicitly: "sp_" + 32 hex digits.
func (p *Pseudonymizer) Subject(id string) string { return p.sum("sp_", "subject\x00", id) }

func (p *Pseudonymizer) sum(prefix, domain, id string) string {
	if id == "" {
		return ""
	}
	h := p.pool.Get().(hash.Hash)
	h.Reset()
	h.Write([]byte(domain))
	h.Write([]byte(id))
	var sum [sha256.Size]byte
	out := h.Sum(sum[:0])
	p.pool.Put(h)
	return prefix + hex.EncodeToString(out[:16])
}

// IsCustomerPseudonym reports whether s has the shape of a customer pseudonym.
func IsCustomerPseudonym(s string) bool {
	if len(s) != 35 || s[:3] != "cp_" {
		return false
	}
	_, err := hex.DecodeString(s[3:])
	return err == nil
}

// ReadKeyFile reads a key file: hex or base64 text of at least 32 bytes, or raw bytes.
func ReadKeyFile(path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	return ParseKey(raw)
}

// ParseKey accepts hex, base64 (std or url) or raw key material.
func ParseKey(raw []byte) ([]byte, error) {
	t := bytes.TrimSpace(raw)
	if k, err := hex.DecodeString(string(t)); err == nil && len(k) >= MinPseudonymKey {
		return k, nil
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		if k, err := enc.DecodeString(string(t)); err == nil && len(k) >= MinPseudonymKey {
			return k, nil
		}
	}
	if len(raw) >= MinPseudonymKey {
		return raw, nil
	}
	return nil, errors.New("key: need at least 32 bytes (raw, hex or base64)")
}

// WritePseudonymKey writes a new random 32-byte key, hex encoded, mode 0600.
func WritePseudonymKey(path string) error {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(hex.EncodeToString(k)+"\n"), 0o600)
}

package vaultkeys

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/consentry/consentry/sidecar/decision"
)

// aeadTypes are the transit key types whose ciphertext consentry reads and writes locally.
// All three use a 12-byte random nonce prepended to the sealed value, as transit does.
var aeadTypes = map[string]func(key []byte) (cipher.AEAD, error){
	"aes256-gcm96": newGCM,
	"aes128-gcm96": newGCM,
	"chacha20-poly1305": func(key []byte) (cipher.AEAD, error) {
		return chacha20poly1305.New(key)
	},
}

func newGCM(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// Ciphertext is a parsed transit ciphertext "vault:v<N>:<base64(nonce|sealed)>".
type Ciphertext struct {
	Version int
	Raw     []byte
}

const ctPrefix = "vault:v"

// IsCiphertext reports whether s looks like transit ciphertext (used to skip values that are
// already encrypted).
func IsCiphertext(s string) bool {
	_, err := ParseCiphertext(s)
	return err == nil
}

// ParseCiphertext parses transit ciphertext. It does not decrypt.
func ParseCiphertext(s string) (Ciphertext, error) {
	rest, ok := strings.CutPrefix(s, ctPrefix)
	if !ok {
		return Ciphertext{}, fmt.Errorf("%w: not transit ciphertext (no %q prefix)", ErrDecrypt, ctPrefix)
	}
	vs, b64, ok := strings.Cut(rest, ":")
	if !ok || vs == "" || len(vs) > 9 {
		return Ciphertext{}, fmt.Errorf("%w: malformed version", ErrDecrypt)
	}
	v, err := strconv.Atoi(vs)
	if err != nil || v < 1 || vs[0] == '0' || vs[0] == '+' {
		return Ciphertext{}, fmt.Errorf("%w: malformed version %q", ErrDecrypt, vs)
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return Ciphertext{}, fmt.Errorf("%w: malformed base64", ErrDecrypt)
	}
	if len(raw) < 12+16 {
		return Ciphertext{}, fmt.Errorf("%w: too short", ErrDecrypt)
	}
	return Ciphertext{Version: v, Raw: raw}, nil
}

// String formats the ciphertext as transit does.
func (c Ciphertext) String() string {
	return ctPrefix + strconv.Itoa(c.Version) + ":" + base64.StdEncoding.EncodeToString(c.Raw)
}

// classKey is the usable form of one transit key: one AEAD per version. AEADs are safe for
// concurrent use and shared between KeySets of the same cache entry.
type classKey struct {
	name string
	// pseudonym is the pseudonym of the customer the key belongs to, so that a release served
	// from the cache can ask the ledger whether the customer was erased without computing it.
	pseudonym string
	latest    int
	aeads     map[int]cipher.AEAD
}

// KeySet holds the keys a decision released for one customer: only the decision's key scopes.
// It decrypts transit ciphertext of those scopes locally and encrypts new values. A KeySet is
// safe for concurrent use. It never holds keys of a scope the decision did not release.
type KeySet struct {
	customer string
	// refresh re-exports a released scope's key when ciphertext names a version newer than the
	// cached one (the CRM rotated the key in Vault within the cache TTL). nil for empty sets.
	refresh func(scope string, k *classKey) (*classKey, error)

	mu        sync.RWMutex
	keys      map[string]*classKey
	errs      map[string]error
	refreshed map[string]bool // at most one refresh per scope and request
}

// emptyKeySet is what a deny gets: every scope is not released.
func emptyKeySet(customer string) *KeySet {
	return &KeySet{customer: customer, keys: map[string]*classKey{}, errs: map[string]error{}}
}

// Customer is the customer the keys belong to.
func (k *KeySet) Customer() string { return k.customer }

// Scopes returns the released scopes, sorted.
func (k *KeySet) Scopes() []string {
	k.mu.RLock()
	defer k.mu.RUnlock()
	out := make([]string, 0, len(k.keys))
	for s := range k.keys {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// Has reports whether scope was released and its key is usable.
func (k *KeySet) Has(scope string) bool {
	k.mu.RLock()
	defer k.mu.RUnlock()
	_, ok := k.keys[scope]
	return ok
}

func (k *KeySet) key(scope string) (*classKey, bool) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	ck, ok := k.keys[scope]
	return ck, ok
}

// Err returns why scope is not usable (nil when it is).
func (k *KeySet) Err(scope string) error {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if _, ok := k.keys[scope]; ok {
		return nil
	}
	if err, ok := k.errs[scope]; ok {
		return err
	}
	return fmt.Errorf("%w: %s", ErrNotReleased, scope)
}

// Decrypt decrypts transit ciphertext of scope's key.
func (k *KeySet) Decrypt(scope, ciphertext string) ([]byte, error) {
	ck, ok := k.key(scope)
	if !ok {
		return nil, k.Err(scope)
	}
	ct, err := ParseCiphertext(ciphertext)
	if err != nil {
		return nil, err
	}
	aead, ok := ck.aeads[ct.Version]
	if !ok && ct.Version > ck.latest && k.refresh != nil && k.claimRefresh(scope) {
		if nk, err := k.refresh(scope, ck); err == nil {
			k.mu.Lock()
			k.keys[scope] = nk
			k.mu.Unlock()
			ck = nk
			aead, ok = ck.aeads[ct.Version]
		}
	}
	if !ok {
		return nil, fmt.Errorf("%w: key %s has no version %d", ErrDecrypt, ck.name, ct.Version)
	}
	ns := aead.NonceSize()
	pt, err := aead.Open(nil, ct.Raw[:ns], ct.Raw[ns:], nil)
	if err != nil {
		return nil, fmt.Errorf("%w: key %s version %d: authentication failed", ErrDecrypt, ck.name, ct.Version)
	}
	return pt, nil
}

// claimRefresh reports whether scope may still be refreshed in this request (so stored
// ciphertext with a bogus high version cannot make every field a Vault request).
func (k *KeySet) claimRefresh(scope string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.refreshed == nil {
		k.refreshed = map[string]bool{}
	}
	if k.refreshed[scope] {
		return false
	}
	k.refreshed[scope] = true
	return true
}

// Encrypt encrypts plaintext with the latest version of scope's key, producing ciphertext that
// Vault's transit/decrypt accepts as well.
func (k *KeySet) Encrypt(scope string, plaintext []byte) (string, error) {
	ck, ok := k.key(scope)
	if !ok {
		return "", k.Err(scope)
	}
	aead := ck.aeads[ck.latest]
	ns := aead.NonceSize()
	buf := make([]byte, ns, ns+len(plaintext)+aead.Overhead())
	if _, err := rand.Read(buf); err != nil {
		return "", fmt.Errorf("nonce: %w", err)
	}
	buf = aead.Seal(buf, buf[:ns], plaintext, nil)
	return Ciphertext{Version: ck.latest, Raw: buf}.String(), nil
}

// Close drops the key references so they become garbage as soon as possible. Key bytes are
// owned and zeroed by the cache; expanded AES key schedules inside crypto/aes cannot be zeroed
// from Go (docs/key-model.md).
func (k *KeySet) Close() {
	k.mu.Lock()
	defer k.mu.Unlock()
	for s := range k.keys {
		delete(k.keys, s)
	}
}

// Withheld is one field that could not be served in plaintext.
type Withheld struct {
	Field  string `json:"field"`
	Reason string `json:"reason"`
	Err    error  `json:"-"`
}

// DecryptFields decrypts the stored values of the fields of d that need a key (allowed fields
// and value-derived masks; decision.Field.NeedsKey). values maps field name to stored value;
// fields that need no key are ignored (the front door serves, masks or drops them itself). A
// field whose key is not in the set, or whose value does not decrypt, is left out of plain and
// listed in withheld with a reason: never ciphertext in place of plaintext, never a guess.
func (k *KeySet) DecryptFields(d *decision.Decision, values map[string]string) (plain map[string]string, withheld []Withheld) {
	plain = make(map[string]string, len(values))
	for name, v := range values {
		f, ok := d.Fields[name]
		if !ok || !f.NeedsKey() {
			continue
		}
		pt, err := k.Decrypt(f.KeyScope, v)
		if err != nil {
			withheld = append(withheld, Withheld{Field: name, Reason: Reason(err), Err: err})
			continue
		}
		plain[name] = string(pt)
	}
	sort.Slice(withheld, func(i, j int) bool { return withheld[i].Field < withheld[j].Field })
	return plain, withheld
}

// scopeErr records why scope was not released.
func (k *KeySet) scopeErr(scope string, err error) {
	if err == nil {
		err = errors.New("unknown error")
	}
	k.errs[scope] = err
}

// decodeExport decodes the "keys" map of a transit export: version -> base64 key.
func decodeExport(v any) (raw [][]byte, versions []int, err error) {
	keys, ok := v.(map[string]any)
	if !ok || len(keys) == 0 {
		return nil, nil, errors.New("no keys in export")
	}
	for vs := range keys {
		n, err := strconv.Atoi(vs)
		if err != nil || n < 1 {
			return nil, nil, fmt.Errorf("bad version %q", vs)
		}
		versions = append(versions, n)
	}
	sort.Ints(versions)
	for _, n := range versions {
		s, _ := keys[strconv.Itoa(n)].(string)
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil || len(b) == 0 {
			zeroAll(raw)
			return nil, nil, fmt.Errorf("version %d: bad key encoding", n)
		}
		raw = append(raw, b)
	}
	return raw, versions, nil
}

package vaultkeys

import (
	"bytes"
	"context"
	"crypto/cipher"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	base := func() Config {
		return Config{Address: "http://127.0.0.1:8200", PseudonymKey: testPseudonymKey}.WithDefaults()
	}
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		key    string // "" = valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"bad address", func(c *Config) { c.Address = "vault:8200" }, "vault.address"},
		{"bad method", func(c *Config) { c.Auth.Method = "ldap" }, "vault.auth.method"},
		{"approle without role id", func(c *Config) { c.Auth.Method = AuthAppRole }, "vault.auth.role_id"},
		{"approle without secret", func(c *Config) { c.Auth.Method, c.Auth.RoleID = AuthAppRole, "r" }, "vault.auth.secret_id_file"},
		{"approle ok", func(c *Config) { c.Auth.Method, c.Auth.RoleID, c.Auth.SecretIDFile = AuthAppRole, "r", "/s" }, ""},
		{"kubernetes without role", func(c *Config) { c.Auth.Method = AuthKubernetes }, "vault.auth.role"},
		{"key name without class", func(c *Config) { c.KeyName = "consentry-{customer}" }, "vault.key_name"},
		{"key name without customer", func(c *Config) { c.KeyName = "consentry-{class}" }, "vault.key_name"},
		{"key name with both", func(c *Config) { c.KeyName = "c-{customer}-{pseudonym}-{class}" }, "vault.key_name"},
		{"key name bad chars", func(c *Config) { c.KeyName = "consentry/{customer}-{class}" }, "vault.key_name"},
		{"pseudonym key name", func(c *Config) { c.KeyName = "consentry-{pseudonym}-{class}" }, ""},
		{"bad class", func(c *Config) { c.Classes = []string{"contact", "a b"} }, "vault.classes"},
		{"duplicate class", func(c *Config) { c.Classes = []string{"contact", "contact"} }, "vault.classes"},
		{"bad key type", func(c *Config) { c.KeyType = "rsa-2048" }, "vault.key_type"},
		{"negative timeout", func(c *Config) { c.Timeout = -1 }, "vault.timeout"},
		{"short pseudonym key", func(c *Config) { c.PseudonymKey = "short" }, "vault.pseudonym_key"},
		{"bad backoff", func(c *Config) { c.Auth.BackoffMax = time.Millisecond }, "vault.auth.backoff"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.mutate(&c)
			err := c.Validate()
			if tc.key == "" && err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if tc.key != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.key)) {
				t.Fatalf("error %v, want one naming %s", err, tc.key)
			}
		})
	}
	c := base()
	if c.Cache.TTL != 30*time.Second || c.TransitMount != "transit" || c.KeyName != DefaultKeyName || !slices.Equal(c.Classes, DefaultClasses) {
		t.Fatalf("defaults %+v", c)
	}
}

func TestLoadConfigFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "consentry.yaml")
	yml := "engine:\n  timeout: 50ms\nvault:\n  address: https://vault:8200\n  auth:\n    method: approle\n    role_id: r1\n    secret_id_file: /run/secret\n  cache:\n    ttl: 10s\n  pseudonym_key: " + testPseudonymKey + "\n"
	if err := os.WriteFile(p, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfigFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.Auth.Method != AuthAppRole || c.Auth.Mount != "approle" || c.Cache.TTL != 10*time.Second || c.Timeout != time.Second {
		t.Fatalf("loaded %+v", c)
	}
	if err := os.WriteFile(p, []byte("vault:\n  auth:\n    method: magic\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfigFile(p); err == nil || !strings.Contains(err.Error(), "vault.auth.method") {
		t.Fatalf("invalid file: %v", err)
	}
}

func testKey(t testing.TB, name string, versions ...int) (*classKey, [][]byte) {
	t.Helper()
	k := &classKey{name: name, aeads: map[int]cipher.AEAD{}}
	var raw [][]byte
	for _, v := range versions {
		b := bytes.Repeat([]byte{byte(v)}, 32)
		a, err := newGCM(b)
		if err != nil {
			t.Fatal(err)
		}
		k.aeads[v] = a
		k.latest = max(k.latest, v)
		raw = append(raw, b)
	}
	return k, raw
}

func TestCacheBoundsTTLAndZeroing(t *testing.T) {
	now := time.Unix(1000, 0)
	evicted := 0
	c := newKeyCache(CacheConfig{TTL: 30 * time.Second, MaxEntries: 3, MaxBytes: 200}, func(n int) { evicted += n })
	var raws [][][]byte
	for i := range 4 {
		k, raw := testKey(t, fmt.Sprint("k", i), 1, 2) // 64 bytes each
		raws = append(raws, raw)
		c.put(k.name, k, raw, now)
	}
	// 4 x 64 = 256 bytes > 200 and 4 entries > 3: the least recently used goes, zeroed.
	if n, b := c.stats(); n != 3 || b != 192 || evicted != 1 {
		t.Fatalf("entries %d bytes %d evicted %d", n, b, evicted)
	}
	if !bytes.Equal(raws[0][0], make([]byte, 32)) || bytes.Equal(raws[1][0], make([]byte, 32)) {
		t.Fatal("evicted key not zeroed, or live key zeroed")
	}
	// LRU: touch k1, insert k4 -> k2 goes.
	c.get("k1", now)
	k4, raw4 := testKey(t, "k4", 1)
	c.put("k4", k4, raw4, now)
	if c.get("k2", now) != nil || c.get("k1", now) == nil {
		t.Fatal("LRU order not respected")
	}
	// TTL: expired entries are misses and are zeroed.
	if c.get("k1", now.Add(30*time.Second)) != nil {
		t.Fatal("expired entry served")
	}
	if !bytes.Equal(raws[1][1], make([]byte, 32)) {
		t.Fatal("expired key not zeroed")
	}
	// Byte bound alone.
	c2 := newKeyCache(CacheConfig{TTL: time.Minute, MaxEntries: 100, MaxBytes: 100}, nil)
	for i := range 5 {
		k, raw := testKey(t, fmt.Sprint("b", i), 1)
		c2.put(k.name, k, raw, now)
	}
	if n, b := c2.stats(); n != 3 || b != 96 {
		t.Fatalf("byte bound: %d entries, %d bytes", n, b)
	}
	// Blocking (erasure): removed, zeroed, and never cached again.
	k, raw := testKey(t, "b4", 1)
	c2.block([]string{"b4"})
	if c2.put("b4", k, raw, now) || c2.get("b4", now) != nil || !bytes.Equal(raw[0], make([]byte, 32)) {
		t.Fatal("blocked key cached")
	}
	// Disabled cache.
	c3 := newKeyCache(CacheConfig{TTL: -1, MaxEntries: 10, MaxBytes: 1000}, nil)
	k, raw = testKey(t, "x", 1)
	if c3.put("x", k, raw, now) || !bytes.Equal(raw[0], make([]byte, 32)) {
		t.Fatal("disabled cache kept a key")
	}
	c.purge()
	if n, b := c.stats(); n != 0 || b != 0 {
		t.Fatal("purge left keys")
	}
}

func TestKeySetRoundTripAndTamper(t *testing.T) {
	k, _ := testKey(t, "consentry-c-contact", 1, 2)
	ks := emptyKeySet("c")
	ks.keys["contact"] = k
	ct, err := ks.Encrypt("contact", []byte("hello"))
	if err != nil || !strings.HasPrefix(ct, "vault:v2:") {
		t.Fatalf("encrypt %q %v", ct, err)
	}
	if pt, err := ks.Decrypt("contact", ct); err != nil || string(pt) != "hello" {
		t.Fatalf("decrypt %q %v", pt, err)
	}
	parsed, _ := ParseCiphertext(ct)
	parsed.Raw[len(parsed.Raw)-1] ^= 1
	for _, bad := range []string{parsed.String(), strings.Replace(ct, "vault:v2:", "vault:v3:", 1), "plaintext", "vault:v1:%%%"} {
		if _, err := ks.Decrypt("contact", bad); !errors.Is(err, ErrDecrypt) {
			t.Errorf("Decrypt(%q) = %v, want ErrDecrypt", bad, err)
		}
	}
	if _, err := ks.Encrypt("health", []byte("x")); !errors.Is(err, ErrNotReleased) {
		t.Errorf("encrypt with unreleased scope: %v", err)
	}
	ks.Close()
	if ks.Has("contact") {
		t.Fatal("closed key set still has keys")
	}
}

func TestParseCiphertext(t *testing.T) {
	good := "vault:v1:" + strings.Repeat("A", 40)
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{good, true},
		{"vault:v12:" + strings.Repeat("A", 40), true},
		{"vault:v0:" + strings.Repeat("A", 40), false},
		{"vault:v01:" + strings.Repeat("A", 40), false},
		{"vault:v-1:" + strings.Repeat("A", 40), false},
		{"vault:v+1:" + strings.Repeat("A", 40), false},
		{"vault:v1:AAAA", false},
		{"vault:v1", false},
		{"vault:vx:" + strings.Repeat("A", 40), false},
		{"ada@example.org", false},
		{"", false},
	} {
		_, err := ParseCiphertext(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParseCiphertext(%q) err %v, want ok=%v", tc.in, err, tc.ok)
		}
	}
}

func FuzzParseCiphertext(f *testing.F) {
	for _, s := range []string{"vault:v1:" + strings.Repeat("A", 40), "vault:v999999999:AAAA", "vault:v1:", "x"} {
		f.Add(s)
	}
	k, _ := testKey(f, "k", 1)
	ks := emptyKeySet("c")
	ks.keys["contact"] = k
	f.Fuzz(func(t *testing.T, s string) {
		ct, err := ParseCiphertext(s)
		if err != nil {
			if !errors.Is(err, ErrDecrypt) {
				t.Fatalf("error not wrapping ErrDecrypt: %v", err)
			}
			return
		}
		if ct.Version < 1 || len(ct.Raw) < 28 {
			t.Fatalf("accepted %q as %+v", s, ct)
		}
		if again, err := ParseCiphertext(ct.String()); err != nil || again.Version != ct.Version || !bytes.Equal(again.Raw, ct.Raw) {
			t.Fatalf("round trip of %q: %v", s, err)
		}
		// Decrypting arbitrary input never panics and never succeeds without the tag.
		if _, err := ks.Decrypt("contact", s); err == nil && !strings.HasPrefix(s, "vault:v1:") {
			t.Fatalf("decrypted %q", s)
		}
	})
}

func TestLedgerChainAndTamper(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sub", "ledger.jsonl")
	l, err := OpenLedger(p)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		rec := &DestructionRecord{Time: time.Unix(int64(i), 0).UTC(), CustomerPseudonym: fmt.Sprint("p", i),
			Keys: []DestroyedKey{{Name: fmt.Sprint("consentry-", i, "-contact"), Versions: []int{1}, Existed: true}}, Actor: "a", Reason: "r"}
		if err := l.Append(rec); err != nil {
			t.Fatal(err)
		}
	}
	// A second handle (another process) sees the same records and appends after them.
	l2, err := OpenLedger(p)
	if err != nil || len(l2.Records()) != 3 || !l2.Erased("p1") || l2.Erased("p9") {
		t.Fatalf("reopen: %v %d", err, len(l2.Records()))
	}
	if err := l2.Append(&DestructionRecord{CustomerPseudonym: "p3", Actor: "a", Reason: "r"}); err != nil {
		t.Fatal(err)
	}
	if added, err := l.Refresh(); err != nil || len(added) != 1 || !l.Erased("p3") {
		t.Fatalf("refresh: %v %d", err, len(added))
	}
	if err := l.Append(&DestructionRecord{CustomerPseudonym: "p4", Actor: "a", Reason: "r"}); err != nil || l.Records()[4].Seq != 5 {
		t.Fatalf("append after another writer: %v", err)
	}
	raw, _ := os.ReadFile(p)
	for name, tampered := range map[string]string{
		"edited reason":  strings.Replace(string(raw), `"reason":"r"`, `"reason":"x"`, 1),
		"deleted record": strings.Join(append(strings.SplitN(string(raw), "\n", 3)[:1], strings.SplitN(string(raw), "\n", 3)[2]), "\n"),
		"not json":       "garbage\n" + string(raw),
	} {
		tp := filepath.Join(t.TempDir(), "l.jsonl")
		if err := os.WriteFile(tp, []byte(tampered), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := OpenLedger(tp); !errors.Is(err, ErrLedgerCorrupt) {
			t.Errorf("%s: %v, want ErrLedgerCorrupt", name, err)
		}
	}
	// Truncation by another process is detected on refresh.
	if err := os.WriteFile(p, raw[:len(raw)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Refresh(); !errors.Is(err, ErrLedgerCorrupt) {
		t.Errorf("shrunk ledger: %v", err)
	}
}

// TestLedgerAppendAfterTornWrite: a record torn by a crash or a full disk is cut by the next
// append, which then chains after the last complete record; another process reads it all.
func TestLedgerAppendAfterTornWrite(t *testing.T) {
	p, l := ledgerWithOneRecord(t)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(`{"seq":2,"customer_pseud`); err != nil {
		t.Fatal(err)
	}
	f.Close()
	// A second process opens it: the torn tail is an append in progress, not corruption.
	l2, err := OpenLedger(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := l2.Append(&DestructionRecord{CustomerPseudonym: "p2", Actor: "a", Reason: "r"}); err != nil {
		t.Fatal(err)
	}
	for _, h := range []*Ledger{l, l2} {
		if _, err := h.Refresh(); err != nil {
			t.Fatalf("refresh after the torn write: %v", err)
		}
	}
	l3, err := OpenLedger(p)
	if err != nil || len(l3.Records()) != 2 || !l3.Erased("p2") || !l.Erased("p2") {
		t.Fatalf("reopen: %v, %d records", err, len(l3.Records()))
	}
}

func TestReasonCodes(t *testing.T) {
	for err, want := range map[error]string{
		fmt.Errorf("x: %w", ErrErased):          ReasonErased,
		fmt.Errorf("x: %w", ErrUnauthenticated): ReasonUnauthenticated,
		fmt.Errorf("x: %w", ErrNotReleased):     ReasonNotReleased,
		fmt.Errorf("x: %w", ErrNoKey):           ReasonNoKey,
		fmt.Errorf("x: %w", ErrNotExportable):   ReasonNotExportable,
		fmt.Errorf("x: %w", ErrDecrypt):         ReasonDecrypt,
		fmt.Errorf("x: %w", ErrInvalidCustomer): ReasonInvalid,
		errors.New("anything else"):             ReasonUnavailable,
	} {
		if got := Reason(err); got != want {
			t.Errorf("Reason(%v) = %s, want %s", err, got, want)
		}
	}
}

// A ledger truncated behind the sidecar's back makes it not ready (it could miss erasures).
func TestLedgerCorruptionMakesNotReady(t *testing.T) {
	srv := startVault(t)
	cfg := testConfig(t, srv)
	m := newManager(t, cfg, Options{})
	ctx := context.Background()
	if _, err := m.Erase(ctx, "lc1", "dpo", "withdrawn"); err != nil {
		t.Fatal(err)
	}
	if err := m.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg.LedgerPath, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	m.refreshLedger(true)
	if err := m.Ready(ctx); !errors.Is(err, ErrLedgerCorrupt) {
		t.Fatalf("ready with a truncated ledger: %v", err)
	}
	// Erasures already loaded stay effective.
	if _, err := m.Release(ctx, "lc1", allow(map[string]string{"e": "contact"})); !errors.Is(err, ErrErased) {
		t.Fatalf("erased customer after ledger loss: %v", err)
	}
	// No key is created while erasures by other processes could be unknown.
	if _, err := m.ReleaseForWrite(ctx, "lc2", allow(map[string]string{"e": "contact"})); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("key created with an unreadable ledger: %v", err)
	}
}

// ledgerWithOneRecord opens a new ledger (at p) and appends one record to it.
func ledgerWithOneRecord(t *testing.T) (string, *Ledger) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ledger.jsonl")
	l, err := OpenLedger(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Append(&DestructionRecord{CustomerPseudonym: "p1", Actor: "a", Reason: "r"}); err != nil {
		t.Fatal(err)
	}
	return p, l
}

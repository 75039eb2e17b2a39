package vaultkeys

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"
)

// TestCacheExpiredEntriesZeroedWithoutBeingAskedFor: an expired key is zeroed and dropped
// (and leaves the cache metrics) by a sweep, or by a request for any other key, not only when
// the same key is asked for again. Entries expire by the time they were cached, whatever the
// order they were used in since.
func TestCacheExpiredEntriesZeroedWithoutBeingAskedFor(t *testing.T) {
	t0 := time.Unix(1000, 0)
	cases := []struct {
		name string
		// touch runs at t0+at; k0..k2 were cached at t0, t0+10s, t0+20s (TTL 30s).
		touch func(c *keyCache, now time.Time)
		at    time.Duration // when the cache is looked at
		// wantLive are the keys left afterwards, holding wantBytes.
		wantLive  []string
		wantBytes int
	}{
		{"sweep drops the expired", func(c *keyCache, now time.Time) { c.sweep(now) }, 35 * time.Second, []string{"k1", "k2"}, 128},
		{"sweep drops all expired", func(c *keyCache, now time.Time) { c.sweep(now) }, 45 * time.Second, []string{"k2"}, 64},
		{"recently used still expires", func(c *keyCache, now time.Time) {
			c.get("k0", t0.Add(25*time.Second)) // most recently used, still cached first
			c.sweep(now)
		}, 35 * time.Second, []string{"k1", "k2"}, 128},
		{"a get of another key sweeps", func(c *keyCache, now time.Time) { c.get("k2", now) }, 41 * time.Second, []string{"k2"}, 64},
		{"a put of another key sweeps", func(c *keyCache, now time.Time) {
			k, raw := testKey(t, "k3", 1)
			c.put("k3", k, raw, now)
		}, 55 * time.Second, []string{"k3"}, 32},
		{"nothing expired", func(c *keyCache, now time.Time) { c.sweep(now) }, 29 * time.Second, []string{"k0", "k1", "k2"}, 192},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newKeyCache(CacheConfig{TTL: 30 * time.Second, MaxEntries: 100, MaxBytes: 1 << 20}, nil)
			raws := map[string][][]byte{}
			for i := range 3 {
				name := fmt.Sprint("k", i)
				k, raw := testKey(t, name, 1, 2)
				raws[name] = raw
				c.put(name, k, raw, t0.Add(time.Duration(i)*10*time.Second))
			}
			tc.touch(c, t0.Add(tc.at))
			live := map[string]bool{}
			for _, n := range tc.wantLive {
				live[n] = true
			}
			c.mu.Lock()
			for name := range c.entries {
				if !live[name] {
					t.Errorf("expired key %s still cached", name)
				}
			}
			c.mu.Unlock()
			for name, raw := range raws {
				zeroed := bytes.Equal(raw[0], make([]byte, 32)) && bytes.Equal(raw[1], make([]byte, 32))
				if live[name] == zeroed {
					t.Errorf("key %s: live %v, zeroed %v", name, live[name], zeroed)
				}
			}
			if n, b := c.stats(); n != len(tc.wantLive) || b != tc.wantBytes {
				t.Errorf("stats: %d entries, %d bytes; want %d, %d", n, b, len(tc.wantLive), tc.wantBytes)
			}
		})
	}
}

// TestManagerSweepsExpiredKeys: docs/key-model.md promises key bytes are held for at most
// the TTL and zeroed when an entry expires. A customer nobody asks for again, in a sidecar
// that serves nobody else, must still leave memory soon after the TTL.
func TestManagerSweepsExpiredKeys(t *testing.T) {
	srv := startVault(t)
	ck := &settableClock{t: time.Now()}
	m := newManager(t, testConfig(t, srv), Options{Now: ck.now})
	if _, err := m.ReleaseForWrite(context.Background(), "c-idle", allow(map[string]string{"email": "contact"})); err != nil {
		t.Fatal(err)
	}
	name, _ := m.KeyName("c-idle", "contact")
	m.cache.mu.Lock()
	e, ok := m.cache.entries[name]
	m.cache.mu.Unlock()
	if !ok {
		t.Fatalf("key %s not cached", name)
	}
	raw := e.raw
	ck.add(m.Config().Cache.TTL)
	// Three sweep intervals plus slack for a busy machine: on the settable clock only the
	// sweeper can drop the entry, however long the wait.
	eventually(t, 3*cacheSweepInterval(m.Config().Cache.TTL)+15*time.Second, "the expired key to be swept", func() bool {
		n, _ := m.cache.stats()
		return n == 0
	})
	for _, r := range raw {
		if !bytes.Equal(r, make([]byte, len(r))) {
			t.Fatalf("expired key %s dropped but not zeroed", name)
		}
	}
}

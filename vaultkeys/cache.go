package vaultkeys

import (
	"container/list"
	"context"
	"sync"
	"time"
)

// cacheEntry is one transit key held in memory: the raw key bytes of every version (owned by
// the cache and zeroed when the entry leaves it) and the AEADs built from them.
type cacheEntry struct {
	name    string
	key     *classKey
	raw     [][]byte
	bytes   int
	expires time.Time
	elem    *list.Element // in lru
	expElem *list.Element // in byExpiry
}

// keyCache is a bounded LRU of transit keys by key name, with a TTL. It never writes to disk.
// Names of erased keys are blocked: a fetch that was in flight when the erasure happened
// cannot put the key back. Expired entries are zeroed and dropped by sweep (and by every get
// and put), not only when their key is asked for again: a key nobody asks for any more must
// not stay in memory, nor count in the cache metrics, past its TTL.
type keyCache struct {
	ttl        time.Duration
	maxEntries int
	maxBytes   int
	onEvict    func(n int)

	mu      sync.Mutex
	entries map[string]*cacheEntry
	lru     *list.List // front = most recently used; values are names
	// byExpiry orders entries by expiry, earliest first (values are *cacheEntry), so a sweep
	// costs only the entries it drops. The LRU order is no substitute: a used entry moves to
	// the front but keeps its expiry.
	byExpiry *list.List
	bytes    int
	blocked  map[string]struct{}
}

func newKeyCache(cfg CacheConfig, onEvict func(n int)) *keyCache {
	return &keyCache{
		ttl:        cfg.TTL,
		maxEntries: cfg.MaxEntries,
		maxBytes:   cfg.MaxBytes,
		onEvict:    onEvict,
		entries:    map[string]*cacheEntry{},
		lru:        list.New(),
		byExpiry:   list.New(),
		blocked:    map[string]struct{}{},
	}
}

// get returns the cached key for name, or nil on a miss or an expired entry.
func (c *keyCache) get(name string, now time.Time) *classKey {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sweepLocked(now)
	e, ok := c.entries[name]
	if !ok {
		return nil
	}
	c.lru.MoveToFront(e.elem)
	return e.key
}

// sweep zeroes and drops every expired entry.
func (c *keyCache) sweep(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sweepLocked(now)
}

func (c *keyCache) sweepLocked(now time.Time) {
	for front := c.byExpiry.Front(); front != nil; front = c.byExpiry.Front() {
		e := front.Value.(*cacheEntry)
		if now.Before(e.expires) {
			return
		}
		c.removeLocked(e.name, e)
	}
}

// put caches key with its raw bytes (which the cache now owns). It reports false, and zeroes
// raw, when the name is blocked or the cache is disabled.
func (c *keyCache) put(name string, key *classKey, raw [][]byte, now time.Time) bool {
	size := 0
	for _, r := range raw {
		size += len(r)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, blocked := c.blocked[name]; blocked || c.ttl < 0 || c.maxEntries == 0 || size > c.maxBytes {
		zeroAll(raw)
		return false
	}
	c.sweepLocked(now)
	if old, ok := c.entries[name]; ok {
		c.removeLocked(name, old)
	}
	e := &cacheEntry{name: name, key: key, raw: raw, bytes: size, expires: now.Add(c.ttl)}
	e.elem = c.lru.PushFront(name)
	// Every entry lives for the same TTL, so a new entry belongs at the back unless callers'
	// clocks were read in another order than they got the lock.
	at := c.byExpiry.Back()
	for at != nil && at.Value.(*cacheEntry).expires.After(e.expires) {
		at = at.Prev()
	}
	if at == nil {
		e.expElem = c.byExpiry.PushFront(e)
	} else {
		e.expElem = c.byExpiry.InsertAfter(e, at)
	}
	c.entries[name] = e
	c.bytes += size
	evicted := 0
	for len(c.entries) > c.maxEntries || c.bytes > c.maxBytes {
		back := c.lru.Back()
		victim := back.Value.(string)
		c.removeLocked(victim, c.entries[victim])
		evicted++
	}
	if evicted > 0 && c.onEvict != nil {
		c.onEvict(evicted)
	}
	return true
}

// block removes names at once (zeroing their bytes) and refuses to cache them again.
func (c *keyCache) block(names []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range names {
		if e, ok := c.entries[n]; ok {
			c.removeLocked(n, e)
		}
		c.blocked[n] = struct{}{}
	}
}

// isBlocked reports whether name was erased.
func (c *keyCache) isBlocked(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.blocked[name]
	return ok
}

// remove drops name (zeroing it) without blocking it.
func (c *keyCache) remove(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[name]; ok {
		c.removeLocked(name, e)
	}
}

// purge empties the cache, zeroing every key.
func (c *keyCache) purge() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for n, e := range c.entries {
		c.removeLocked(n, e)
	}
}

// stats returns the number of entries and key bytes held.
func (c *keyCache) stats() (entries, bytes int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries), c.bytes
}

func (c *keyCache) removeLocked(name string, e *cacheEntry) {
	delete(c.entries, name)
	c.lru.Remove(e.elem)
	c.byExpiry.Remove(e.expElem)
	c.bytes -= e.bytes
	zeroAll(e.raw)
	// The AEADs stay reachable only from KeySets already handed out; dropping the reference
	// here lets them be collected once those requests finish.
	e.key = nil
}

func zeroAll(bufs [][]byte) {
	for _, b := range bufs {
		clear(b)
	}
}

// cacheSweepInterval is how often expired cache entries are zeroed and dropped when no
// request touches them: half the TTL, at most a second, so key bytes outlive their TTL in
// memory by at most that.
func cacheSweepInterval(ttl time.Duration) time.Duration {
	return max(min(ttl/2, time.Second), 10*time.Millisecond)
}

// sweepCache zeroes expired cache entries until ctx ends. Requests sweep too (put and get),
// but an idle sidecar, or one whose traffic moved to other customers, makes none for the
// entries that matter.
func (m *Manager) sweepCache(ctx context.Context) {
	if m.cfg.Cache.TTL < 0 {
		return // disabled: nothing is ever cached
	}
	t := time.NewTicker(cacheSweepInterval(m.cfg.Cache.TTL))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.cache.sweep(m.now())
		}
	}
}

package vaultkeys

import (
	"container/list"
	"sync"
	"time"
)

// cacheEntry is one transit key held in memory: the raw key bytes of every version (owned by
// the cache and zeroed when the entry leaves it) and the AEADs built from them.
type cacheEntry struct {
	key     *classKey
	raw     [][]byte
	bytes   int
	expires time.Time
	elem    *list.Element
}

// keyCache is a bounded LRU of transit keys by key name, with a TTL. It never writes to disk.
// Names of erased keys are blocked: a fetch that was in flight when the erasure happened
// cannot put the key back.
type keyCache struct {
	ttl        time.Duration
	maxEntries int
	maxBytes   int
	onEvict    func(n int)

	mu      sync.Mutex
	entries map[string]*cacheEntry
	lru     *list.List // front = most recently used; values are names
	bytes   int
	blocked map[string]struct{}
}

func newKeyCache(cfg CacheConfig, onEvict func(n int)) *keyCache {
	return &keyCache{
		ttl:        cfg.TTL,
		maxEntries: cfg.MaxEntries,
		maxBytes:   cfg.MaxBytes,
		onEvict:    onEvict,
		entries:    map[string]*cacheEntry{},
		lru:        list.New(),
		blocked:    map[string]struct{}{},
	}
}

// get returns the cached key for name, or nil on a miss or an expired entry.
func (c *keyCache) get(name string, now time.Time) *classKey {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[name]
	if !ok {
		return nil
	}
	if !now.Before(e.expires) {
		c.removeLocked(name, e)
		return nil
	}
	c.lru.MoveToFront(e.elem)
	return e.key
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
	if old, ok := c.entries[name]; ok {
		c.removeLocked(name, old)
	}
	e := &cacheEntry{key: key, raw: raw, bytes: size, expires: now.Add(c.ttl)}
	e.elem = c.lru.PushFront(name)
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

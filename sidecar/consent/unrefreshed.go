package consent

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// A customer write (PutCustomer, MarkErased) is durable before this node's view is
// refreshed from the database (applyCustomer). When that refresh fails, the view is behind
// the database for the customer - an erased customer still served, a retention deadline
// not applied - and on SQLite no change feed or resync would ever re-read it. So the
// customer is kept here until a retry of the refresh succeeds: meanwhile its lookups fail
// closed and readiness fails.

// unrefreshed holds the entities whose refresh after a local write failed.
type unrefreshed struct {
	mu sync.Mutex
	m  map[Change]uint64 // the generation of the latest failure
	// gen numbers failures: a retry that read the database before a later failed write
	// must not clear that write's entry.
	gen uint64
	// n is len(m), read without the lock on the lookup path.
	n atomic.Int64
	// kick wakes the retry loop (buffered: one pending wake-up is enough).
	kick chan struct{}
}

// Retry backoff for refreshes that failed after a write.
const (
	refreshRetryMin = 50 * time.Millisecond
	refreshRetryMax = 5 * time.Second
)

// markUnrefreshed records that ch's refresh after a write failed, and wakes the retry loop.
func (s *Store) markUnrefreshed(ch Change) {
	u := &s.unref
	u.mu.Lock()
	if u.m == nil {
		u.m = map[Change]uint64{}
	}
	u.gen++
	u.m[ch] = u.gen
	u.n.Store(int64(len(u.m)))
	u.mu.Unlock()
	select {
	case u.kick <- struct{}{}:
	default: // already woken, or no loop (a Store not opened)
	}
}

// customerUnrefreshed reports whether the view may be behind a write of customer id: its
// lookups fail closed.
func (s *Store) customerUnrefreshed(id string) bool {
	u := &s.unref
	if u.n.Load() == 0 {
		return false
	}
	u.mu.Lock()
	_, ok := u.m[Change{Kind: ChangeCustomer, Key: id}]
	u.mu.Unlock()
	return ok
}

// retryRefreshes re-reads the unrefreshed entities, with backoff, until each refresh
// succeeds; it runs until ctx ends (Close).
func (s *Store) retryRefreshes(ctx context.Context) {
	defer s.wg.Done()
	u := &s.unref
	for {
		select {
		case <-ctx.Done():
			return
		case <-u.kick:
		}
		for backoff := refreshRetryMin; u.n.Load() > 0; backoff = min(2*backoff, refreshRetryMax) {
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			u.mu.Lock()
			pending := make(map[Change]uint64, len(u.m))
			for ch, gen := range u.m {
				pending[ch] = gen
			}
			u.mu.Unlock()
			for ch, gen := range pending {
				err := s.refresh(ctx, ch)
				s.metrics.refreshes.WithLabelValues(result(err)).Inc()
				if err != nil {
					s.log.Warn("state refresh retry failed; the customer's lookups still fail closed", "kind", ch.Kind, "key", ch.Key, "err", err)
					continue
				}
				u.mu.Lock()
				if u.m[ch] == gen { // no write failed its refresh since this one read the database
					delete(u.m, ch)
				}
				u.n.Store(int64(len(u.m)))
				u.mu.Unlock()
				s.log.Info("state refresh retry succeeded; serving the customer again", "kind", ch.Kind, "key", ch.Key)
			}
		}
	}
}

package consent

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestCollidingLockKeysDoNotDeadlock: PostgreSQL serializes a customer's writers with an
// advisory lock on hashtext(customer id), and two ids can share a key: C-132044 and
// C-157406 do. Batches took their locks in customer-id order, which is not key order when
// keys collide: {C-132044, C-14} locks K, then C-14's key; {C-14, C-157406} locks C-14's
// key, then K - a deadlock (PostgreSQL aborts one batch: about 3 of 10 attempts failed).
// Locks are now taken in key order, deduplicated, for real writes and dry runs alike.
func TestCollidingLockKeysDoNotDeadlock(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, testConfig(t, "postgres"), Options{})
	db := s.be.(*sqlStore).db
	var k1, k2 int64
	if err := db.QueryRowContext(ctx, `SELECT hashtext('C-132044'), hashtext('C-157406')`).Scan(&k1, &k2); err != nil || k1 != k2 {
		t.Fatalf("the test needs two ids with one lock key: %d %d %v", k1, k2, err)
	}
	const purpose = "marketing.communications.email"
	now := time.Now().UTC()
	batch := func(tag string, i int, ids ...string) []Event {
		var evs []Event
		for j, id := range ids {
			evs = append(evs, Event{EventID: fmt.Sprintf("%s-%d-%d", tag, i, j), Kind: KindWithdrawn, CustomerID: id, Purpose: purpose,
				CapturedAt: now, RecordedAt: now, RecordedBy: "test"})
		}
		return evs
	}
	for _, dry := range []bool{false, true} {
		for i := 0; i < 150; i++ {
			var wg sync.WaitGroup
			errs := make([]error, 2)
			for g, ids := range [][]string{{"C-132044", "C-14"}, {"C-14", "C-157406"}} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					evs := batch(fmt.Sprintf("b%d", g), i, ids...)
					if dry {
						_, errs[g] = s.be.CheckAppend(ctx, evs)
					} else {
						_, errs[g] = s.be.Append(ctx, evs)
					}
				}()
			}
			wg.Wait()
			for _, err := range errs {
				if err != nil {
					t.Fatalf("dry run %v, attempt %d: %v", dry, i, err)
				}
			}
		}
	}
	if h, err := s.History(ctx, "C-14"); err != nil || len(h) != 300 {
		t.Fatalf("C-14 history: %d events, %v", len(h), err)
	}
}

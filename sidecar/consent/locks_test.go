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

// TestMixedFleetDeadlockIsRetried: during a rolling upgrade a schema-7 replica locks its
// batch's customers in id order (consent_append, one after the other) while this version
// locks them in hashtext order (consent_lock_customers). For ids whose two orders differ
// (C-10 and C-11) the two deadlock: PostgreSQL aborted this replica's batch, and every write
// of the group-commit batch failed with 500. The aborted transaction was rolled back whole:
// it is run again (real writes and dry runs alike).
func TestMixedFleetDeadlockIsRetried(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, testConfig(t, "postgres"), Options{})
	db := s.be.(*sqlStore).db
	// first < second by id, but second's lock key comes first.
	first, second := "", ""
	for i := 10; i < 100 && first == ""; i++ {
		a, b := fmt.Sprintf("C-%d", i), fmt.Sprintf("C-%d", i+1)
		var swapped bool
		if err := db.QueryRowContext(ctx, `SELECT hashtext($1) > hashtext($2)`, a, b).Scan(&swapped); err != nil {
			t.Fatal(err)
		}
		if swapped {
			first, second = a, b
		}
	}
	if first == "" {
		t.Fatal("no pair of ids whose lock keys are in the opposite order")
	}
	now := time.Now().UTC()
	for n, dry := range []bool{false, true} {
		old, err := db.Conn(ctx) // the schema-7 replica
		if err != nil {
			t.Fatal(err)
		}
		// Only this replica's backend detects the deadlock (after the default 1s), so that
		// it is the one aborted: the case the retry is for.
		if _, err := old.ExecContext(ctx, `SET deadlock_timeout = '20s'`); err != nil {
			t.Logf("cannot make the old replica's side wait (%v): the test may pass without a deadlock", err)
		}
		tx, err := old.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtext($1))`, first); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			evs := []Event{
				{EventID: fmt.Sprintf("mix-%d-a", n), Kind: KindWithdrawn, CustomerID: first, Purpose: mail, CapturedAt: now, RecordedAt: now, RecordedBy: "test"},
				{EventID: fmt.Sprintf("mix-%d-b", n), Kind: KindWithdrawn, CustomerID: second, Purpose: mail, CapturedAt: now, RecordedAt: now, RecordedBy: "test"},
			}
			var err error
			if dry {
				_, err = s.be.CheckAppend(ctx, evs)
			} else {
				_, err = s.be.Append(ctx, evs)
			}
			done <- err
		}()
		// Until the new replica holds second's key and waits for first's (20s: a busy machine
		// may be slow to get there, and giving up early would test no deadlock at all).
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			var waiting int
			if err := db.QueryRowContext(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted`).Scan(&waiting); err != nil {
				t.Fatal(err)
			}
			if waiting > 0 {
				break
			}
		}
		// The old replica reaches its second customer: a deadlock.
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtext($1))`, second); err != nil {
			t.Fatalf("the old replica's batch was aborted instead: %v", err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		_ = old.Close()
		if err := <-done; err != nil {
			t.Fatalf("dry run %v: the batch failed on a deadlock with an old replica: %v", dry, err)
		}
	}
	if h, err := s.History(ctx, first); err != nil || len(h) != 1 {
		t.Fatalf("%s history: %d events, %v", first, len(h), err)
	}
}

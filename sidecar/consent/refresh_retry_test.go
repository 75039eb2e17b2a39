package consent

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/enrich"
)

// TestFailedRefreshAfterWriteIsRetried: a customer write (MarkErased, PutCustomer) is
// durable before the view is refreshed from the database. When that refresh failed, the
// error was logged and nothing else happened: on SQLite no change feed or resync ever
// re-reads the customer, so the view served the old state indefinitely (an erased
// customer not erased, its consent granted) while readiness said OK. Now the customer's
// lookups fail closed and readiness fails until a retry of the refresh succeeds.
func TestFailedRefreshAfterWriteIsRetried(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, testConfig(t, "sqlite"), Options{})
	const purpose = "marketing.communications.email"
	for _, id := range []string{"cust-r", "cust-other"} {
		if _, err := s.Grant(ctx, grantInput(id, purpose), "crm"); err != nil {
			t.Fatal(err)
		}
	}
	s.setRefreshFault(func(ch Change) error {
		if ch.Kind == ChangeCustomer && ch.Key == "cust-r" {
			return errors.New("database is locked")
		}
		return nil
	})
	if _, err := s.MarkErased(ctx, "cust-r", time.Now()); err != nil {
		t.Fatal(err)
	}
	e, _ := s.Enrich(ctx, enrich.Query{CustomerID: "cust-r", Purpose: purpose})
	if len(e.Errors) == 0 {
		t.Fatalf("the view served a customer it could not refresh after a write: %+v (customer %+v)", e, e.Customer)
	}
	if err := s.Ready(ctx); err == nil {
		t.Fatal("ready although the view is behind a write")
	}
	if other, _ := s.Enrich(ctx, enrich.Query{CustomerID: "cust-other", Purpose: purpose}); len(other.Errors) != 0 || len(other.Consents) != 1 {
		t.Fatalf("another customer failed closed too: %+v", other)
	}
	batch, _ := s.EnrichBatch(ctx, enrich.Query{Purpose: purpose}, []string{"cust-r", "cust-other"})
	if len(batch["cust-r"].Errors) == 0 || len(batch["cust-other"].Errors) != 0 {
		t.Fatalf("batch lookup: %+v", batch)
	}
	time.Sleep(300 * time.Millisecond) // retries keep failing meanwhile
	if e, _ := s.Enrich(ctx, enrich.Query{CustomerID: "cust-r", Purpose: purpose}); len(e.Errors) == 0 {
		t.Fatalf("served after a failed retry: %+v", e)
	}

	s.setRefreshFault(nil) // the database recovers: the retry brings the view up to date
	eventually(t, 10*time.Second, "the refresh is retried", func() bool {
		e, _ := s.Enrich(ctx, enrich.Query{CustomerID: "cust-r", Purpose: purpose})
		return len(e.Errors) == 0 && e.Customer != nil && e.Customer.Erased
	})
	if err := s.Ready(ctx); err != nil {
		t.Fatalf("not ready after the retry: %v", err)
	}
}

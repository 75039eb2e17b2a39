package consent

import (
	"context"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/enrich"
	"github.com/jackc/pgx/v5"
)

// eventually polls cond for up to d.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < d {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s", what, d)
	return 0
}

// Two store instances (two replicas) on one PostgreSQL: a change through one is visible on
// the other within 1 s, through LISTEN/NOTIFY.
func TestReplicasPostgres(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t, "postgres")
	a := openStore(t, cfg, Options{})
	b := openStore(t, sameDB(cfg), Options{})
	const p = "marketing.communications.email"
	status := func(s *Store, id string) string {
		e, _ := s.Enrich(ctx, enrich.Query{CustomerID: id, Purpose: p})
		if len(e.Consents) == 0 {
			return ""
		}
		return e.Consents[0].Status
	}
	if _, err := a.Grant(ctx, grantInput("cust-r", p), "alice"); err != nil {
		t.Fatal(err)
	}
	if status(a, "cust-r") != KindGranted {
		t.Fatal("writer does not see its own grant at once")
	}
	lag := eventually(t, time.Second, "grant on replica b", func() bool { return status(b, "cust-r") == KindGranted })
	t.Logf("grant visible on replica after %s", lag)
	if _, err := b.Withdraw(ctx, ConsentInput{CustomerID: "cust-r", Purpose: p}, "bob"); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Second, "withdrawal on replica a", func() bool { return status(a, "cust-r") == KindWithdrawn })
	if _, err := a.PutCase(ctx, Case{ID: "R1", CustomerID: "cust-r", Assignees: []string{"alice"}}); err != nil {
		t.Fatal(err)
	}
	until := time.Now().Add(time.Hour)
	if _, err := a.PutAgreement(ctx, Agreement{ProcessorID: "proc", Purposes: []string{p}, Categories: []string{"user.contact.email"}, ValidUntil: &until}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.MarkErased(ctx, "cust-r", time.Now()); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Second, "case, agreement, erasure on replica b", func() bool {
		e, _ := b.Enrich(ctx, enrich.Query{CustomerID: "cust-r", CaseID: "R1", ProcessorID: "proc"})
		return e.Case != nil && e.Agreement != nil && e.Customer != nil && e.Customer.Erased
	})
	// The erased flag is shared: replica b refuses a grant too.
	if _, err := b.Grant(ctx, grantInput("cust-r", p), "bob"); CodeOf(err) != "customer.erased" {
		t.Fatalf("grant on replica after erasure: %v", err)
	}

	// Lost notifications: cut b's LISTEN connection, write through a meanwhile; b reconnects,
	// reloads, and catches up.
	conn, err := pgx.Connect(ctx, pgURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1`, "consentry-listen-"+cfg.Postgres.Schema); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Grant(ctx, grantInput("cust-s", p), "alice"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "grant on replica b after its LISTEN connection dropped", func() bool { return status(b, "cust-s") == KindGranted })
}

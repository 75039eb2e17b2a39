package consent

import (
	"context"
	"net"
	"net/url"
	"strings"
	"sync/atomic"
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
// the other within 1 s, through LISTEN/NOTIFY. The waits below allow 10 s so that a stalled CI
// machine does not fail them; the resync safety net is 5 minutes away, so a change seen within
// them still came through the change feed (e2e TestReplicasShareStateWithinOneSecond times it).
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
	lag := eventually(t, 10*time.Second, "grant on replica b", func() bool { return status(b, "cust-r") == KindGranted })
	t.Logf("grant visible on replica after %s", lag)
	if _, err := b.Withdraw(ctx, ConsentInput{CustomerID: "cust-r", Purpose: p}, "bob"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "withdrawal on replica a", func() bool { return status(a, "cust-r") == KindWithdrawn })
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
	eventually(t, 10*time.Second, "case, agreement, erasure on replica b", func() bool {
		e, _ := b.Enrich(ctx, enrich.Query{CustomerID: "cust-r", CaseID: "R1", ProcessorID: "proc"})
		return e.Case != nil && e.Agreement != nil && e.Customer != nil && e.Customer.Erased
	})
	// The erased flag is shared: replica b refuses a grant too.
	if _, err := b.Grant(ctx, grantInput("cust-r", p), "bob"); CodeOf(err) != "customer.erased" {
		t.Fatalf("grant on replica after erasure: %v", err)
	}

	// Lost notifications: cut b's LISTEN connection, write through a meanwhile; b reconnects,
	// reloads, and catches up.
	terminateListen(t, cfg.Postgres.Schema)
	if _, err := a.Grant(ctx, grantInput("cust-s", p), "alice"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "grant on replica b after its LISTEN connection dropped", func() bool { return status(b, "cust-s") == KindGranted })
}

// gate is a TCP forwarder to PostgreSQL that can stop taking new connections while the
// ones it holds keep working (a replica whose change feed cannot reconnect while its
// connection pool still answers), or freeze: hold every byte without closing anything, as a
// network partition does.
type gate struct {
	ln     net.Listener
	open   atomic.Bool
	frozen atomic.Bool
}

// pump copies src to dst, holding bytes while the gate is frozen.
func (g *gate) pump(dst, src net.Conn) {
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		for g.frozen.Load() {
			time.Sleep(5 * time.Millisecond)
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func newGate(t *testing.T, target string) *gate {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &gate{ln: ln}
	g.open.Store(true)
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if !g.open.Load() {
				_ = c.Close()
				continue
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			go g.pump(up, c)
			go g.pump(c, up)
		}
	}()
	return g
}

// replicas are two stores on one PostgreSQL schema: a reaches it through a gate, b directly.
// The consent of customer "cust-f" is granted through b and seen by a.
type replicas struct {
	a, b      *Store
	g         *gate
	cfg, acfg Config
	purpose   string
	// lookup is a's view of cust-f's consent: its status ("" when none) and lookup errors.
	lookup func() (string, []string)
}

func gatedReplicas(t *testing.T, maxFeedGap time.Duration) *replicas {
	t.Helper()
	ctx := context.Background()
	r := &replicas{cfg: testConfig(t, "postgres"), g: newGate(t, "127.0.0.1:5432"), purpose: "marketing.communications.email"}
	u, err := url.Parse(pgURL())
	if err != nil {
		t.Fatal(err)
	}
	u.Host = r.g.ln.Addr().String()
	r.acfg = r.cfg
	r.acfg.Postgres.URL = u.String()
	r.acfg.Postgres.MaxFeedGap = maxFeedGap
	r.a = openStore(t, r.acfg, Options{})
	r.b = openStore(t, sameDB(r.cfg), Options{})
	r.lookup = func() (string, []string) {
		e, _ := r.a.Enrich(ctx, enrich.Query{CustomerID: "cust-f", Purpose: r.purpose})
		if len(e.Consents) == 0 {
			return "", e.Errors
		}
		return e.Consents[0].Status, e.Errors
	}
	if _, err := r.b.Grant(ctx, grantInput("cust-f", r.purpose), "bob"); err != nil {
		t.Fatal(err)
	}
	// 10 s: generous for a stalled machine, far below the 5-minute resync.
	eventually(t, 10*time.Second, "grant on replica a", func() bool { st, _ := r.lookup(); return st == KindGranted })
	return r
}

// TestFeedDownFailsClosed: a replica whose change feed is down (LISTEN connection lost and
// not coming back) fails readiness at once and, after max_feed_gap, answers every lookup
// as state unavailable instead of serving a consent another replica withdrew meanwhile.
// When the feed reconnects it reloads and serves the withdrawal.
func TestFeedDownFailsClosed(t *testing.T) {
	ctx := context.Background()
	r := gatedReplicas(t, 300*time.Millisecond)
	a, b, g, lookup, p, cfg := r.a, r.b, r.g, r.lookup, r.purpose, r.cfg
	acfg := r.acfg
	if err := a.Ready(ctx); err != nil {
		t.Fatalf("ready before the fault: %v", err)
	}

	g.open.Store(false)
	terminateListen(t, cfg.Postgres.Schema)
	eventually(t, 10*time.Second, "readiness reports the feed down", func() bool {
		err := a.Ready(ctx)
		return err != nil && strings.Contains(err.Error(), "change feed down")
	})
	if _, err := b.Withdraw(ctx, ConsentInput{CustomerID: "cust-f", Purpose: p}, "bob"); err != nil {
		t.Fatal(err)
	}
	// The wait is generous (a stalled machine); the bound that matters is checked on every
	// lookup. The gap is read before the lookup: it only grows while the feed is down, so a
	// lookup made when it already exceeded max_feed_gap must fail closed. Read after it, a
	// stall between the two would blame the lookup for time that passed later.
	eventually(t, 10*time.Second, "lookups fail closed after max_feed_gap", func() bool {
		gap := a.feedGap()
		st, errs := lookup()
		if st == KindGranted && len(errs) == 0 && gap > acfg.Postgres.MaxFeedGap+50*time.Millisecond {
			t.Fatalf("withdrawn consent served as granted %s after the feed went down", gap)
		}
		return len(errs) > 0 && st == ""
	})

	g.open.Store(true)
	eventually(t, 10*time.Second, "feed back: the withdrawal is served", func() bool {
		st, errs := lookup()
		return st == KindWithdrawn && len(errs) == 0
	})
	if err := a.Ready(ctx); err != nil {
		t.Fatalf("ready after the feed came back: %v", err)
	}
}

// TestSilentFeedFailsClosed: a change feed whose connection goes silent without an error (a
// partition) is found by its heartbeat; lookups fail closed within max_feed_gap of the last
// time the connection was heard, and recover when the network does.
func TestSilentFeedFailsClosed(t *testing.T) {
	ctx := context.Background()
	r := gatedReplicas(t, 600*time.Millisecond)
	b, g, lookup, p, acfg := r.b, r.g, r.lookup, r.purpose, r.acfg
	frozenAt := time.Now()
	g.frozen.Store(true)
	if _, err := b.Withdraw(ctx, ConsentInput{CustomerID: "cust-f", Purpose: p}, "bob"); err != nil {
		t.Fatal(err)
	}
	// As in TestFeedDownFailsClosed: a generous wait, the bound checked on every lookup with
	// the time read before the lookup (read after it, a stall in between would be blamed on
	// the lookup).
	eventually(t, 15*time.Second, "lookups fail closed on a silent feed", func() bool {
		silent := time.Since(frozenAt)
		st, errs := lookup()
		if st == KindGranted && len(errs) == 0 && silent > acfg.Postgres.MaxFeedGap+150*time.Millisecond {
			t.Fatalf("withdrawn consent served as granted %s after the network went silent", silent)
		}
		return len(errs) > 0
	})
	g.frozen.Store(false)
	eventually(t, 15*time.Second, "feed back: the withdrawal is served", func() bool {
		st, errs := lookup()
		return st == KindWithdrawn && len(errs) == 0
	})
}

// terminateListen ends the LISTEN connection of the stores on schema, server side.
func terminateListen(t *testing.T, schema string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1`, "consentry-listen-"+schema); err != nil {
		t.Fatal(err)
	}
}

package consent

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/enrich"
	"github.com/consentry/consentry/sidecar/input"
)

// TestSkewedWithdrawalNeverMovesLatestBack: a withdrawal within
// withdrawalSkew *before* the current withdrawal applies; it used to overwrite withdrawn_at
// with its older time, moving "the latest change" back, so a delayed grant captured between
// the two withdrawals re-granted although the customer's latest expressed will (the later
// withdrawal) was a withdrawal. A grant captured after both still applies.
func TestSkewedWithdrawalNeverMovesLatestBack(t *testing.T) {
	for _, backend := range testBackends {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			s := openStore(t, testConfig(t, backend), Options{})
			const purpose = "marketing.communications.email"
			cust := "cust-skew"
			now := time.Now().UTC().Truncate(time.Second)
			at := func(d time.Duration) *time.Time { x := now.Add(d); return &x }
			g0 := grantInput(cust, purpose)
			g0.CapturedAt, g0.EventID = at(-2*time.Hour), "g0"
			if _, err := s.Grant(ctx, g0, "crm"); err != nil {
				t.Fatal(err)
			}
			// The customer withdraws at -10 min (latest will).
			if _, err := s.Withdraw(ctx, ConsentInput{CustomerID: cust, Purpose: purpose, Channel: "email", EventID: "w1", CapturedAt: at(-10 * time.Minute)}, "crm"); err != nil {
				t.Fatal(err)
			}
			// A second channel's delayed withdrawal, captured 3 min earlier (within the skew):
			// it applies, and the latest change stays at -10 min.
			r, err := s.Withdraw(ctx, ConsentInput{CustomerID: cust, Purpose: purpose, Channel: "web", EventID: "w2", CapturedAt: at(-13 * time.Minute)}, "crm")
			if err != nil || r.NoEffect || r.Current.Status != KindWithdrawn || r.Current.WithdrawnAt == nil || !r.Current.WithdrawnAt.Equal(*at(-10 * time.Minute)) {
				t.Fatalf("withdrawal within the skew of the latest one: %+v %v", r, err)
			}
			// A delayed opt-in captured at -12 min: before the customer's latest withdrawal (-10 min).
			late := grantInput(cust, purpose)
			late.CapturedAt, late.EventID = at(-12*time.Minute), "late-optin"
			res, err := s.Grant(ctx, late, "crm")
			if err != nil || !res.NoEffect {
				t.Fatalf("grant captured before the latest withdrawal: %+v %v", res, err)
			}
			e, _ := s.Enrich(ctx, enrich.Query{CustomerID: cust, Purpose: purpose})
			for _, c := range e.Consents {
				if c.Purpose == purpose && c.Status == input.ConsentGranted {
					t.Fatalf("grant captured before the latest withdrawal re-granted (no_effect=%v err=%v): %+v", res.NoEffect, err, c)
				}
			}
			_, cur, _, err := s.be.Customer(ctx, cust)
			if err != nil || len(cur) != 1 || cur[0].Status != KindWithdrawn || !cur[0].WithdrawnAt.Equal(*at(-10 * time.Minute)) {
				t.Fatalf("stored %+v %v", cur, err)
			}
			// The customer opts in again after both withdrawals: that applies.
			again := grantInput(cust, purpose)
			again.CapturedAt, again.EventID = at(-9*time.Minute), "optin-again"
			if res, err := s.Grant(ctx, again, "crm"); err != nil || res.NoEffect || res.Current.Status != KindGranted {
				t.Fatalf("grant after the latest withdrawal: %+v %v", res, err)
			}
		})
	}
}

// TestApplyNeverMovesLatestBack: from every kind of current state, for grants, withdrawals
// and expiries captured around it (the skew margin's edges included), an event that applies
// never moves the latest grant or withdrawal back; a withdrawal that applies takes effect at
// the later of its capture and that latest change; a withdrawn state's withdrawn_at is never
// before its granted_at (it beat that grant: later stale checks and policies must see so).
func TestApplyNeverMovesLatestBack(t *testing.T) {
	base := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { x := base.Add(d); return &x }
	states := map[string]*Current{
		"none":                  nil,
		"granted":               {Status: KindGranted, GrantedAt: at(0), ExpiresAt: at(48 * time.Hour), EventID: "g"},
		"withdrawn after grant": {Status: KindWithdrawn, GrantedAt: at(0), WithdrawnAt: at(time.Hour), EventID: "w"},
		"withdrawn, skewed":     {Status: KindWithdrawn, GrantedAt: at(time.Hour), WithdrawnAt: at(time.Hour), EventID: "w"},
		"withdrawn, no grant":   {Status: KindWithdrawn, WithdrawnAt: at(time.Hour), EventID: "w"},
		"expired":               {Status: KindExpired, GrantedAt: at(0), ExpiresAt: at(time.Hour), EventID: "g"},
	}
	var offsets []time.Duration
	for d := -2 * time.Hour; d <= 2*time.Hour; d += time.Minute {
		offsets = append(offsets, d)
	}
	for _, edge := range []time.Duration{0, time.Hour} {
		for _, d := range []time.Duration{-withdrawalSkew - time.Nanosecond, -withdrawalSkew, -time.Nanosecond, time.Nanosecond} {
			offsets = append(offsets, edge+d)
		}
	}
	for name, cur := range states {
		for _, kind := range []string{KindGranted, KindWithdrawn, KindExpired} {
			for _, off := range offsets {
				ev := Event{EventID: "new", Kind: kind, CapturedAt: base.Add(off)}
				before, _ := superseded(cur, ev)
				next, changed := apply(cur, ev)
				if !changed {
					continue
				}
				after := latestChange(next)
				where := fmt.Sprintf("%s + %s at %s", name, kind, off)
				if after.Before(before) {
					t.Fatalf("%s: latest change moved back from %s to %s", where, before, after)
				}
				if kind != KindExpired && after.Before(ev.CapturedAt) {
					t.Fatalf("%s: latest change %s is before the event", where, after)
				}
				if kind == KindWithdrawn {
					want := ev.CapturedAt
					if want.Before(before) {
						want = before
					}
					if next.WithdrawnAt == nil || !next.WithdrawnAt.Equal(want) {
						t.Fatalf("%s: withdrawn_at %v, want %s", where, next.WithdrawnAt, want)
					}
				}
				if next.Status == KindWithdrawn && next.GrantedAt != nil && next.WithdrawnAt.Before(*next.GrantedAt) {
					t.Fatalf("%s: withdrawn at %s, before the grant it beat (%s)", where, next.WithdrawnAt, next.GrantedAt)
				}
			}
		}
	}
}

// TestFoldFollowsLatestWill: random sequences of grants and withdrawals captured close
// together (within and beyond the skew margin), in random arrival order: the folded state's
// latest change is the latest capture of them all, and the consent ends granted only when no
// withdrawal was captured after the grant it shows - whatever the arrival order.
func TestFoldFollowsLatestWill(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	base := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	for i := 0; i < 20000; i++ {
		var cur *Current
		var events []Event
		var last time.Time
		for j, n := 0, 1+rng.IntN(6); j < n; j++ {
			kind := KindGranted
			if rng.IntN(2) == 0 {
				kind = KindWithdrawn
			}
			ev := Event{EventID: fmt.Sprintf("e%d", j), Kind: kind, CapturedAt: base.Add(time.Duration(rng.IntN(20)) * time.Minute)}
			events = append(events, ev)
			if ev.CapturedAt.After(last) {
				last = ev.CapturedAt
			}
			if next, changed := apply(cur, ev); changed {
				cur = &next
			}
		}
		if got := latestChange(*cur); !got.Equal(last) {
			t.Fatalf("%+v: latest change %s, want the latest capture %s", events, got, last)
		}
		if cur.Status != KindGranted {
			continue
		}
		for _, ev := range events {
			if ev.Kind == KindWithdrawn && ev.CapturedAt.After(*cur.GrantedAt) {
				t.Fatalf("%+v: granted at %s although withdrawal %s was captured later", events, cur.GrantedAt, ev.EventID)
			}
		}
	}
}

// TestMigrationRepairsLatestWithdrawal: schema 6 gives withdrawn states the older fold left
// with withdrawn_at moved back (by a withdrawal within the skew margin before a grant or an
// earlier-captured withdrawal) the latest grant or withdrawal captured for them, so a delayed
// grant captured in between stays stale after the upgrade; other states are left as they are.
func TestMigrationRepairsLatestWithdrawal(t *testing.T) {
	for _, backend := range testBackends {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			cfg := testConfig(t, backend)
			s, err := Open(ctx, cfg, Options{Logger: quietLogger(), NoBackground: true}) // closed below, reopened
			if err != nil {
				t.Fatal(err)
			}
			const purpose = "marketing.communications.email"
			now := time.Now().UTC().Truncate(time.Second)
			at := func(d time.Duration) *time.Time { x := now.Add(d); return &x }
			grant := func(cust string, d time.Duration) {
				t.Helper()
				g := grantInput(cust, purpose)
				g.CapturedAt = at(d)
				if _, err := s.Grant(ctx, g, "crm"); err != nil {
					t.Fatal(err)
				}
			}
			withdraw := func(cust string, d time.Duration) {
				t.Helper()
				if _, err := s.Withdraw(ctx, ConsentInput{CustomerID: cust, Purpose: purpose, CapturedAt: at(d)}, "crm"); err != nil {
					t.Fatal(err)
				}
			}
			// Each customer: events, withdrawn_at as the older fold stored it, and as repaired.
			cases := []struct {
				cust          string
				events        func(cust string)
				old, repaired *time.Time
				status        string
			}{
				{"cust-ww", func(c string) { grant(c, -2*time.Hour); withdraw(c, -10*time.Minute); withdraw(c, -13*time.Minute) }, at(-13 * time.Minute), at(-10 * time.Minute), KindWithdrawn},
				{"cust-gw", func(c string) { grant(c, -10*time.Minute); withdraw(c, -13*time.Minute) }, at(-13 * time.Minute), at(-10 * time.Minute), KindWithdrawn},
				{"cust-w", func(c string) { grant(c, -2*time.Hour); withdraw(c, -10*time.Minute) }, at(-10 * time.Minute), at(-10 * time.Minute), KindWithdrawn},
				{"cust-g", func(c string) { withdraw(c, -2*time.Hour); grant(c, -10*time.Minute) }, nil, nil, KindGranted},
			}
			db := s.be.(*sqlStore)
			for _, tc := range cases {
				tc.events(tc.cust)
				var ta nsArgs
				old := ta.ptr(tc.old)
				if ta.err != nil {
					t.Fatal(ta.err)
				}
				if _, err := db.db.ExecContext(ctx, db.q(`UPDATE consent_current SET withdrawn_at = ? WHERE customer_id = ?`), old, tc.cust); err != nil {
					t.Fatal(err)
				}
			}
			// Back to a version 5 database (version 7 added columns: drop them again).
			for _, stmt := range []string{`DELETE FROM schema_migrations WHERE version >= 6`, `ALTER TABLE cases DROP COLUMN updated_by`,
				`ALTER TABLE agreements DROP COLUMN updated_by`, `ALTER TABLE customers DROP COLUMN updated_by`} {
				if _, err := db.db.ExecContext(ctx, stmt); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = openStore(t, sameDB(cfg), Options{})
			for _, tc := range cases {
				_, cur, _, err := s.be.Customer(ctx, tc.cust)
				if err != nil || len(cur) != 1 || cur[0].Status != tc.status || fmt.Sprint(cur[0].WithdrawnAt) != fmt.Sprint(tc.repaired) {
					t.Fatalf("%s: stored %+v %v, want withdrawn_at %v", tc.cust, cur, err, tc.repaired)
				}
				if tc.status != KindWithdrawn {
					continue
				}
				late := grantInput(tc.cust, purpose)
				late.CapturedAt = at(-11 * time.Minute)
				if r, err := s.Grant(ctx, late, "crm"); err != nil || !r.NoEffect {
					t.Fatalf("%s: a grant captured before the latest change after the upgrade: %+v %v", tc.cust, r, err)
				}
			}
		})
	}
}

// latestChange is the latest grant or withdrawal of c (what the stale rule compares with).
func latestChange(c Current) time.Time {
	var l time.Time
	for _, t := range []*time.Time{c.GrantedAt, c.WithdrawnAt} {
		if t != nil && t.After(l) {
			l = *t
		}
	}
	return l
}

// TestCloseTwice: closing the store a second time is a no-op, not a panic (a deferred Close
// after an explicit one is common in tools and tests).
func TestCloseTwice(t *testing.T) {
	s, err := Open(context.Background(), testConfig(t, "sqlite"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
}

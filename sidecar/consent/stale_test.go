package consent

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/enrich"
	"github.com/consentry/consentry/sidecar/input"
)

// TestBackdatedGrantDoesNotOverrideLaterWithdrawal: a delayed grant
// captured before a later withdrawal must not grant the consent again.
func TestBackdatedGrantDoesNotOverrideLaterWithdrawal(t *testing.T) {
	for _, backend := range testBackends {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			s := openStore(t, testConfig(t, backend), Options{})
			const purpose = "marketing.communications.email"
			now := time.Now().UTC()
			t0 := now.Add(-2 * time.Hour)
			g := grantInput("cust-bd", purpose)
			g.CapturedAt = &t0
			if _, err := s.Grant(ctx, g, "crm"); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Withdraw(ctx, ConsentInput{CustomerID: "cust-bd", Purpose: purpose, Channel: "email"}, "crm"); err != nil {
				t.Fatal(err)
			}
			t1 := now.Add(-1 * time.Hour)
			late := grantInput("cust-bd", purpose)
			late.CapturedAt = &t1
			late.EventID = "late-optin"
			_, err := s.Grant(ctx, late, "crm")
			e, _ := s.Enrich(ctx, enrich.Query{CustomerID: "cust-bd", Purpose: purpose})
			for _, c := range e.Consents {
				if c.Purpose == purpose && c.Status == input.ConsentGranted {
					t.Fatalf("stale grant re-granted consent (err=%v): %+v", err, c)
				}
			}
		})
	}
}

// TestApplyStale: the fold's stale rule (apply), case by case; TestFoldAgrees checks
// consent_append agrees on the same kinds of sequence.
func TestApplyStale(t *testing.T) {
	base := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { x := base.Add(d); return &x }
	granted := &Current{Status: KindGranted, GrantedAt: at(0), EventID: "g"}
	withdrawn := &Current{Status: KindWithdrawn, GrantedAt: at(0), WithdrawnAt: at(time.Hour), EventID: "w"}
	cases := []struct {
		name    string
		cur     *Current
		kind    string
		capture time.Duration
		changed bool
		status  string
	}{
		{"grant before the withdrawal", withdrawn, KindGranted, 30 * time.Minute, false, KindWithdrawn},
		{"grant at the withdrawal's time (arrival order)", withdrawn, KindGranted, time.Hour, true, KindGranted},
		{"grant after the withdrawal", withdrawn, KindGranted, 2 * time.Hour, true, KindGranted},
		{"grant before the current grant", granted, KindGranted, -time.Second, false, KindGranted},
		{"withdrawal long before the grant", granted, KindWithdrawn, -time.Hour, false, KindGranted},
		{"withdrawal just past the skew margin", granted, KindWithdrawn, -withdrawalSkew - time.Nanosecond, false, KindGranted},
		{"withdrawal at the skew margin", granted, KindWithdrawn, -withdrawalSkew, true, KindWithdrawn},
		{"withdrawal within clock skew of the grant", granted, KindWithdrawn, -time.Minute, true, KindWithdrawn},
		{"withdrawal within clock skew of an earlier withdrawal", withdrawn, KindWithdrawn, time.Hour - time.Minute, true, KindWithdrawn},
		{"withdrawal long before an earlier withdrawal", withdrawn, KindWithdrawn, -time.Hour, false, KindWithdrawn},
		{"first event, however old", nil, KindGranted, -1000 * time.Hour, true, KindGranted},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ev := Event{EventID: "new", Kind: tc.kind, CapturedAt: base.Add(tc.capture)}
			next, changed := apply(tc.cur, ev)
			if changed != tc.changed || next.Status != tc.status {
				t.Fatalf("apply: changed %v status %q, want %v %q", changed, next.Status, tc.changed, tc.status)
			}
			if !changed && next.EventID != tc.cur.EventID {
				t.Fatalf("a stale event replaced the current one: %+v", next)
			}
		})
	}
}

// TestStaleEventsRecordedWithoutEffect: through the store, an event older than the current
// state is in the ledger, reported NoEffect with a note, and changes neither the database
// nor the view; a stale withdrawal triggers no erasure, not even when retried.
func TestStaleEventsRecordedWithoutEffect(t *testing.T) {
	for _, backend := range testBackends {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			cfg := testConfig(t, backend)
			cfg.EraseOnWithdrawal = true
			er := &recordingEraser{}
			s := openStore(t, cfg, Options{Eraser: er})
			const purpose = "marketing.communications.email"
			now := time.Now().UTC()
			ago := func(d time.Duration) *time.Time { x := now.Add(-d); return &x }
			check := func(step, id, status, eventID string) {
				t.Helper()
				_, cur, _, err := s.be.Customer(ctx, id)
				if err != nil || len(cur) != 1 || cur[0].Status != status || cur[0].EventID != eventID {
					t.Fatalf("%s: stored %+v %v, want %s by %s", step, cur, err, status, eventID)
				}
				e, _ := s.Enrich(ctx, enrich.Query{CustomerID: id, Purpose: purpose})
				if len(e.Consents) != 1 || e.Consents[0].Status != status || e.Consents[0].EventID != eventID {
					t.Fatalf("%s: view %+v, want %s by %s", step, e.Consents, status, eventID)
				}
			}

			// The customer re-subscribed an hour ago; a withdrawal captured two hours ago
			// arrives late: recorded, no effect, no erasure (also when retried).
			g := grantInput("cust-s", purpose)
			g.CapturedAt, g.EventID = ago(time.Hour), "resubscribe"
			if _, err := s.Grant(ctx, g, "crm"); err != nil {
				t.Fatal(err)
			}
			w := ConsentInput{EventID: "late-optout", CustomerID: "cust-s", Purpose: purpose, CapturedAt: ago(2 * time.Hour)}
			r, err := s.Withdraw(ctx, w, "crm")
			if err != nil || !r.NoEffect || r.Erasure != "" || r.Event.Seq == 0 || r.Current.EventID != "resubscribe" ||
				!strings.HasPrefix(r.Note, staleCode+":") {
				t.Fatalf("stale withdrawal: %+v %v", r, err)
			}
			check("stale withdrawal", "cust-s", KindGranted, "resubscribe")
			if _, err := s.Withdraw(ctx, w, "crm"); CodeOf(err) != "consent.duplicate_event" {
				t.Fatalf("retried stale withdrawal: %v", err)
			}
			if len(er.calls) != 0 {
				t.Fatalf("a stale withdrawal erased the customer: %q", er.calls)
			}

			// A grant captured before the current grant: recorded, the newer proof stays.
			old := grantInput("cust-s", purpose)
			old.CapturedAt, old.EventID, old.NoticeVersion = ago(90*time.Minute), "old-optin", "2025-01"
			if r, err := s.Grant(ctx, old, "crm"); err != nil || !r.NoEffect || r.Current.NoticeVersion != "2026-01" {
				t.Fatalf("stale grant: %+v %v", r, err)
			}
			check("stale grant", "cust-s", KindGranted, "resubscribe")
			if h, _ := s.History(ctx, "cust-s"); len(h) != 3 || h[1].EventID != "late-optout" || h[2].EventID != "old-optin" {
				t.Fatalf("stale events are not in the ledger: %+v", h)
			}

			// A withdrawal within clock skew of the grant applies (in doubt, withdraw) - and
			// erases as configured.
			w = ConsentInput{EventID: "optout", CustomerID: "cust-s", Purpose: purpose, CapturedAt: ago(time.Hour + time.Minute)}
			if r, err := s.Withdraw(ctx, w, "crm"); err != nil || r.NoEffect || r.Erasure != "done" || r.Current.Status != KindWithdrawn {
				t.Fatalf("withdrawal within clock skew: %+v %v", r, err)
			}
			check("withdrawal within skew", "cust-s", KindWithdrawn, "optout")
			if len(er.calls) != 1 {
				t.Fatalf("eraser calls %q", er.calls)
			}
		})
	}
}

// TestAdminAPIStaleEvent: the admin API answers a stale event with 200 (not 201), the
// recorded event, the unchanged current state, "no_effect": true and a note.
func TestAdminAPIStaleEvent(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, testConfig(t, "sqlite"), Options{})
	cl := serveAdmin(t, s)
	const purpose = "marketing.communications.email"
	if _, err := s.Withdraw(ctx, ConsentInput{CustomerID: "cust-h", Purpose: purpose}, "crm"); err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-time.Hour).UTC()
	for _, tc := range []struct {
		path string
		body ConsentInput
	}{
		{"/consents", func() ConsentInput { g := grantInput("cust-h", purpose); g.CapturedAt = &past; return g }()},
		// A withdrawal an hour before another withdrawal changes nothing either.
		{"/consents/withdrawals", ConsentInput{CustomerID: "cust-h", Purpose: purpose, CapturedAt: &past}},
	} {
		buf, _ := json.Marshal(tc.body)
		req, _ := http.NewRequest(http.MethodPost, cl.BaseURL+"/v1"+tc.path, bytes.NewReader(buf))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+cl.Token)
		resp, err := cl.HTTP.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var res Result
		err = json.NewDecoder(resp.Body).Decode(&res)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || !res.NoEffect || !strings.Contains(res.Note, staleCode) ||
			res.Event.Seq == 0 || res.Current.Status != KindWithdrawn {
			t.Fatalf("%s: %d %+v %v", tc.path, resp.StatusCode, res, err)
		}
	}
}

// TestImportStaleRowWithoutView: an old export imported while the view cannot answer
// (here: the change feed down past max_feed_gap) grants nothing: the store's own rule
// refuses the stale row, and the report rejects it as import.stale_row, dry run or not.
func TestImportStaleRowWithoutView(t *testing.T) {
	for _, backend := range testBackends {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			s := openStore(t, testConfig(t, backend), Options{})
			const purpose = "marketing.communications.email"
			if _, err := s.Grant(ctx, grantInput("cust-i", purpose), "crm"); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Withdraw(ctx, ConsentInput{CustomerID: "cust-i", Purpose: purpose}, "crm"); err != nil {
				t.Fatal(err)
			}
			s.feedDown.Store(time.Now().Add(-time.Hour).UnixNano())
			if e, _ := s.Enrich(ctx, enrich.Query{CustomerID: "cust-i"}); len(e.Errors) == 0 {
				t.Fatalf("view still answers: %+v", e)
			}
			csv := "customer_id,purpose,status,notice_version,notice_hash,channel,captured_at\n" +
				"cust-i," + purpose + ",granted,2026-01," + noticeHash + ",web," + time.Now().Add(-24*time.Hour).UTC().Format(time.RFC3339) + "\n"
			for _, dry := range []bool{true, false} {
				rep, err := s.Import(ctx, strings.NewReader(csv), ImportOptions{DryRun: dry}, "crm")
				if err != nil || rep.Accepted != 0 || rep.Rejected != 1 || rep.Rejections[0].Code != "import.stale_row" || rep.Rejections[0].Line != 2 {
					t.Fatalf("dry run %v: %+v %v", dry, rep, err)
				}
			}
			_, cur, _, err := s.be.Customer(ctx, "cust-i")
			if err != nil || len(cur) != 1 || cur[0].Status != KindWithdrawn {
				t.Fatalf("an old export granted the consent again: %+v %v", cur, err)
			}
			s.feedDown.Store(0)
			if e, _ := s.Enrich(ctx, enrich.Query{CustomerID: "cust-i", Purpose: purpose}); len(e.Consents) != 1 || e.Consents[0].Status != KindWithdrawn {
				t.Fatalf("view: %+v", e)
			}
		})
	}
}

// TestImportAppliesTheStoreRule: the import's own check (against the view) is the store's
// rule: a withdrawal row within clock skew before the current grant applies, one long
// before it is stale.
func TestImportAppliesTheStoreRule(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, testConfig(t, "sqlite"), Options{})
	const purpose = "marketing.communications.email"
	now := time.Now().UTC().Truncate(time.Second)
	for _, tc := range []struct {
		customer string
		before   time.Duration
		want     string
	}{
		{"cust-skew", time.Minute, KindWithdrawn},
		{"cust-late", time.Hour, KindGranted},
	} {
		g := grantInput(tc.customer, purpose)
		g.CapturedAt = &now
		if _, err := s.Grant(ctx, g, "crm"); err != nil {
			t.Fatal(err)
		}
		csv := "customer_id,purpose,status,captured_at\n" + tc.customer + "," + purpose + ",withdrawn," + now.Add(-tc.before).Format(time.RFC3339) + "\n"
		rep, err := s.Import(ctx, strings.NewReader(csv), ImportOptions{}, "crm")
		stale := tc.want == KindGranted
		if err != nil || (rep.Accepted == 1) == stale || (rep.Rejected == 1 && rep.Rejections[0].Code != "import.stale_row") {
			t.Fatalf("%s: %+v %v", tc.customer, rep, err)
		}
		if e, _ := s.Enrich(ctx, enrich.Query{CustomerID: tc.customer, Purpose: purpose}); len(e.Consents) != 1 || e.Consents[0].Status != tc.want {
			t.Fatalf("%s: %+v, want %s", tc.customer, e.Consents, tc.want)
		}
	}
}

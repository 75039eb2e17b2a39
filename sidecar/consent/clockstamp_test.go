package consent

import (
	"context"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/enrich"
)

// TestServerStampedWithdrawalNeverLoses: a withdrawal sent without captured_at is stamped
// by the server that takes it. When that server's clock is behind the one that stamped the
// stored grant (replica A 6 min fast grants, replica B withdraws; or one node whose clock
// stepped back), the stamp used to be more than the skew margin before the grant: the
// withdrawal was recorded without effect (consent.stale_event) and the consent stayed
// granted. A server-stamped withdrawal is now dated after the stored state's latest change,
// so it applies; an explicit captured_at keeps its meaning (a back-dated one is stale).
func TestServerStampedWithdrawalNeverLoses(t *testing.T) {
	const purpose = "marketing.communications.email"
	for _, backend := range testBackends {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			cfg := testConfig(t, backend)
			fast := &clock{t: time.Now().UTC().Add(6 * time.Minute)}
			slow := &clock{t: time.Now().UTC()}
			a := openStore(t, cfg, Options{Now: fast.now})
			b := openStore(t, sameDB(cfg), Options{Now: slow.now})

			if _, err := a.Grant(ctx, grantInput("cust-fast", purpose), "crm"); err != nil {
				t.Fatal(err)
			}
			res, err := b.Withdraw(ctx, ConsentInput{CustomerID: "cust-fast", Purpose: purpose, Channel: "email"}, "crm")
			if err != nil || res.NoEffect || res.Current.Status != KindWithdrawn {
				t.Fatalf("server-stamped withdrawal on the slow replica: %+v %v", res, err)
			}
			want := fast.t.Add(time.Microsecond)
			if !res.Event.CapturedAt.Equal(want) || res.Current.WithdrawnAt == nil || !res.Current.WithdrawnAt.Equal(want) {
				t.Fatalf("withdrawal dated %s (withdrawn_at %v), want just after the stored grant: %s", res.Event.CapturedAt, res.Current.WithdrawnAt, want)
			}
			h, err := b.History(ctx, "cust-fast")
			if err != nil || len(h) != 2 || !h[1].CapturedAt.Equal(want) {
				t.Fatalf("ledger %+v %v", h, err)
			}
			for name, s := range map[string]*Store{"a": a, "b": b} {
				_, cur, _, err := s.be.Customer(ctx, "cust-fast")
				if err != nil || len(cur) != 1 || cur[0].Status != KindWithdrawn {
					t.Fatalf("replica %s: stored %+v %v", name, cur, err)
				}
			}
			if e, _ := b.Enrich(ctx, enrich.Query{CustomerID: "cust-fast", Purpose: purpose}); len(e.Consents) != 1 || e.Consents[0].Status != KindWithdrawn {
				t.Fatalf("view of the withdrawing replica: %+v", e.Consents)
			}

			// One node whose clock steps back by 10 minutes between the grant and the withdrawal.
			clk := &clock{t: time.Now().UTC()}
			c := openStore(t, sameDB(cfg), Options{Now: clk.now})
			if _, err := c.Grant(ctx, grantInput("cust-step", purpose), "crm"); err != nil {
				t.Fatal(err)
			}
			clk.t = clk.t.Add(-10 * time.Minute)
			if res, err := c.Withdraw(ctx, ConsentInput{CustomerID: "cust-step", Purpose: purpose}, "crm"); err != nil || res.NoEffect || res.Current.Status != KindWithdrawn {
				t.Fatalf("server-stamped withdrawal after the clock stepped back: %+v %v", res, err)
			}

			// An explicit captured_at keeps its meaning: back-dated past the margin, it is stale.
			if _, err := c.Grant(ctx, grantInput("cust-explicit", purpose), "crm"); err != nil {
				t.Fatal(err)
			}
			old := clk.t.Add(-10 * time.Minute)
			res, err = c.Withdraw(ctx, ConsentInput{CustomerID: "cust-explicit", Purpose: purpose, CapturedAt: &old}, "crm")
			if err != nil || !res.NoEffect || !res.Event.CapturedAt.Equal(old) {
				t.Fatalf("back-dated withdrawal with an explicit captured_at: %+v %v", res, err)
			}

			// In one batch (the group committer's): a grant dated ahead, then a server-stamped
			// withdrawal of the same consent dated behind it.
			g, err := a.event(KindGranted, grantInput("cust-batch", purpose), "crm", fast.t)
			if err != nil {
				t.Fatal(err)
			}
			w, err := b.event(KindWithdrawn, ConsentInput{CustomerID: "cust-batch", Purpose: purpose}, "crm", slow.t)
			if err != nil {
				t.Fatal(err)
			}
			rs, err := b.be.Append(ctx, []Event{g, w})
			if err != nil || rs[0].Err != nil || rs[1].Err != nil || rs[1].NoEffect || rs[1].Current.Status != KindWithdrawn ||
				!rs[1].Event.CapturedAt.Equal(fast.t.Add(time.Microsecond)) {
				t.Fatalf("batch: %+v %v", rs, err)
			}
		})
	}
}

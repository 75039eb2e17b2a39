package consent

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestRetentionSweepErasesCustomersPastRetention(t *testing.T) {
	for _, backend := range testBackends {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			clk := &clock{t: time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)}
			cfg := testConfig(t, backend)
			cfg.RetentionErasure = RetentionErasureConfig{Enabled: true, Grace: 24 * time.Hour}
			er := &recordingEraser{}
			s := openStore(t, cfg, Options{Now: clk.now, Eraser: er})
			at := func(d time.Duration) *time.Time { x := clk.t.Add(d); return &x }
			for _, c := range []Customer{
				{ID: "c-past", RetentionUntil: at(-48 * time.Hour)},
				{ID: "c-future", RetentionUntil: at(48 * time.Hour)},
				{ID: "c-in-grace", RetentionUntil: at(-time.Hour)},
				{ID: "c-none"},
				{ID: "c-erased", RetentionUntil: at(-48 * time.Hour)},
			} {
				if _, err := s.PutCustomer(ctx, c); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := s.MarkErased(ctx, "c-erased", clk.t.Add(-time.Hour)); err != nil {
				t.Fatal(err)
			}

			er.fail = errors.New("vault sealed")
			res, err := s.SweepRetention(ctx)
			if err != nil || res.Due != 1 || res.Erased != 0 || res.Failed != 1 {
				t.Fatalf("failing eraser: %+v %v", res, err)
			}
			// Marked erased at once (served nowhere from now on); the key destruction stays
			// requested and the sweep retries it.
			if c, _ := s.Customer(ctx, "c-past"); !c.Customer.Erased {
				t.Fatal("a customer past retention must be marked erased when the erasure is requested")
			}
			q, _ := s.erasureQueue()
			if p, err := q.PendingErasures(ctx); err != nil || len(p) != 1 || p[0].CustomerID != "c-past" || p[0].Actor != RetentionActor {
				t.Fatalf("pending after a failed erasure: %+v %v", p, err)
			}
			if res, _ := s.SweepRetention(ctx); res.Due != 0 {
				t.Fatalf("an erased customer is due again: %+v", res)
			}

			er.fail, er.calls = nil, nil
			rr, err := s.RetryErasures(ctx)
			if err != nil || rr.Erased != 1 || len(er.calls) != 1 || !strings.HasPrefix(er.calls[0], "c-past|"+RetentionActor+"|retention period ended") {
				t.Fatalf("retry: %+v %v %v", rr, err, er.calls)
			}
			if p, _ := q.PendingErasures(ctx); len(p) != 0 {
				t.Fatalf("still pending: %+v", p)
			}

			clk.t = clk.t.Add(24 * time.Hour) // c-in-grace leaves its 24h grace period
			if res, _ := s.SweepRetention(ctx); res.Erased != 1 || len(er.calls) != 2 || !strings.HasPrefix(er.calls[1], "c-in-grace|") {
				t.Fatalf("after grace: %+v %v", res, er.calls)
			}
		})
	}
}

func TestRetentionSweepNeedsAnEraser(t *testing.T) {
	cfg := testConfig(t, "sqlite")
	cfg.RetentionErasure.Enabled = true
	s := openStore(t, cfg, Options{})
	if _, err := s.SweepRetention(context.Background()); err == nil {
		t.Fatal("without an eraser the sweep must fail loudly, not skip erasure")
	}
}

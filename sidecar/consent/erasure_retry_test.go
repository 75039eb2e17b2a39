package consent

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// TestErasureRetryRepeatsTheFirstAttemptsActorAndReason: the key ledger recognizes a retried
// erasure by its exact actor and reason, so the sweep must retry with the text the first
// attempt used, or the retry writes a second ledger record for the same erasure. A withdrawal's
// reason names a UUID event id and is longer than 64 bytes; text beyond MaxErasureText is cut
// the same way before the first attempt as for every retry.
func TestErasureRetryRepeatsTheFirstAttemptsActorAndReason(t *testing.T) {
	long := strings.Repeat("ticket DSR-4711 ünïcødé ", 100) // > MaxErasureText, multibyte
	cases := []struct {
		name string
		// request runs the first attempt (which fails) for customer c.
		request           func(t *testing.T, s *Store, c string) error
		wantActor, reason string // what every attempt must use (reason: prefix)
	}{
		{"withdrawal with a UUID event id", func(t *testing.T, s *Store, c string) error {
			in := ConsentInput{CustomerID: c, Purpose: "marketing.communications.email", EventID: "6f1c2a9e-3b7d-4c55-9a0e-2f8d7b1e4c3a"}
			_, err := s.Withdraw(context.Background(), in, "admin:dpo@example.org")
			return err
		}, "admin:dpo@example.org", "consent withdrawn for marketing.communications.email (event 6f1c2a9e-3b7d-4c55-9a0e-2f8d7b1e4c3a)"},
		{"admin erasure with a long reason", func(t *testing.T, s *Store, c string) error {
			return s.RunErasure(context.Background(), ErasureRequest{CustomerID: c, RequestedAt: time.Now(), Actor: "admin:" + strings.Repeat("a", 100),
				Reason: "erasure request " + strings.Repeat("x", 300)}, nil)
		}, "admin:" + strings.Repeat("a", 100), "erasure request " + strings.Repeat("x", 300)},
		{"text beyond the bound", func(t *testing.T, s *Store, c string) error {
			return s.RunErasure(context.Background(), ErasureRequest{CustomerID: c, RequestedAt: time.Now(), Actor: "admin:dpo", Reason: long}, nil)
		}, "admin:dpo", long[:MaxErasureText-8]},
	}
	for _, backend := range testBackends {
		for _, tc := range cases {
			t.Run(backend+"/"+tc.name, func(t *testing.T) {
				ctx := context.Background()
				cfg := testConfig(t, backend)
				cfg.EraseOnWithdrawal = true
				cfg.EraseOnWithdrawalPurposes = []string{"marketing"}
				er := &recordingEraser{fail: errors.New("vault sealed")}
				s := openStore(t, cfg, Options{Eraser: er})
				if _, err := s.Grant(ctx, grantInput("cust-r", "marketing.communications.email"), "alice"); err != nil {
					t.Fatal(err)
				}
				if err := tc.request(t, s, "cust-r"); err == nil {
					t.Fatal("the first attempt should fail")
				}
				er.fail = nil
				if rr, err := s.RetryErasures(ctx); err != nil || rr.Erased != 1 {
					t.Fatalf("retry: %+v %v", rr, err)
				}
				if len(er.calls) != 2 {
					t.Fatalf("eraser calls %q", er.calls)
				}
				if er.calls[0] != er.calls[1] {
					t.Errorf("the retry used other text than the first attempt:\nfirst %q\nretry %q", er.calls[0], er.calls[1])
				}
				for _, call := range er.calls {
					parts := strings.SplitN(call, "|", 3)
					if parts[1] != tc.wantActor || !strings.HasPrefix(parts[2], tc.reason) ||
						len(parts[2]) > MaxErasureText || !utf8.ValidString(parts[2]) {
						t.Errorf("attempt with actor %.80q, reason %.80q (%d bytes); want actor %q, reason %.80q...", parts[1], parts[2], len(parts[2]), tc.wantActor, tc.reason)
					}
				}
			})
		}
	}
}

// TestRunErasureRefusesTextItCannotKeep: with its own destroy (the admin API's), RunErasure
// cannot make the first attempt use cut text; it refuses before anything is recorded.
func TestRunErasureRefusesTextItCannotKeep(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, testConfig(t, "sqlite"), Options{Eraser: &recordingEraser{}})
	called := false
	for _, r := range []ErasureRequest{
		{CustomerID: "cust-x", RequestedAt: time.Now(), Actor: "admin:dpo", Reason: strings.Repeat("r", MaxErasureText+1)},
		{CustomerID: "cust-x", RequestedAt: time.Now(), Actor: strings.Repeat("a", MaxErasureText+1), Reason: "DSR-1"},
	} {
		err := s.RunErasure(ctx, r, func(context.Context) error { called = true; return nil })
		if CodeOf(err) != "erasure.invalid_request" || called {
			t.Fatalf("over-long request: err %v, destroy called %v", err, called)
		}
	}
	q, _ := s.erasureQueue()
	if p, err := q.PendingErasures(ctx); err != nil || len(p) != 0 {
		t.Fatalf("refused request recorded: %+v %v", p, err)
	}
	if err := s.RunErasure(ctx, ErasureRequest{CustomerID: "cust-x", RequestedAt: time.Now(), Actor: "admin:dpo", Reason: strings.Repeat("r", MaxErasureText)},
		func(context.Context) error { called = true; return nil }); err != nil || !called {
		t.Fatalf("request at the bound: err %v, destroy called %v", err, called)
	}
}

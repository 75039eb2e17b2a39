package consent

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// TestTextFieldsRefuseNULAndInvalidUTF8: PostgreSQL refuses a NUL character or invalid
// UTF-8 in a TEXT column, so such a reason (also an erasure's), captured_by or admin actor
// name failed the write
// with 500 state.error there (the withdrawal was not recorded) and was stored on SQLite. Both
// backends now refuse it with 400 invalid.text before anything is written.
func TestTextFieldsRefuseNULAndInvalidUTF8(t *testing.T) {
	const purpose = "marketing.communications.email"
	for _, backend := range testBackends {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			s := openStore(t, testConfig(t, backend), Options{})
			until := time.Now().Add(24 * time.Hour)
			cases := []struct {
				name  string
				write func() error
			}{
				{"withdrawal reason with NUL", func() error {
					_, err := s.Withdraw(ctx, ConsentInput{CustomerID: "c-1", Purpose: purpose, Reason: "asked\x00by phone"}, "crm")
					return err
				}},
				{"withdrawal reason with invalid UTF-8", func() error {
					_, err := s.Withdraw(ctx, ConsentInput{CustomerID: "c-1", Purpose: purpose, Reason: "caf\xe9"}, "crm")
					return err
				}},
				{"grant captured_by with NUL", func() error {
					in := grantInput("c-1", purpose)
					in.CapturedBy = "form\x00"
					_, err := s.Grant(ctx, in, "crm")
					return err
				}},
				{"withdrawal by an actor with invalid UTF-8", func() error {
					_, err := s.Withdraw(ctx, ConsentInput{CustomerID: "c-1", Purpose: purpose}, "adm\xffin")
					return err
				}},
				{"case updated_by with NUL", func() error {
					_, err := s.PutCase(ctx, Case{ID: "K-1", CustomerID: "c-1", UpdatedBy: "ad\x00min"})
					return err
				}},
				{"agreement updated_by with invalid UTF-8", func() error {
					_, err := s.PutAgreement(ctx, Agreement{ProcessorID: "P-1", Purposes: []string{purpose}, Categories: []string{"user.name"}, ValidUntil: &until, UpdatedBy: "\xc3"})
					return err
				}},
				{"customer updated_by with NUL", func() error {
					_, err := s.PutCustomer(ctx, Customer{ID: "c-1", RetentionUntil: &until, UpdatedBy: "\x00"})
					return err
				}},
				// An erasure request kept such text on SQLite, and on PostgreSQL failed as a
				// retryable 503 (erase.failed) that could never succeed.
				{"erasure reason with NUL", func() error {
					return s.RunErasure(ctx, ErasureRequest{CustomerID: "c-2", RequestedAt: time.Now(), Actor: "ops", Reason: "ticket\x00 42"},
						func(context.Context) error { return nil })
				}},
				{"erasure reason with invalid UTF-8", func() error {
					return s.RunErasure(ctx, ErasureRequest{CustomerID: "c-2", RequestedAt: time.Now(), Actor: "ops", Reason: "caf\xe9"}, nil)
				}},
				{"erasure by an actor with NUL", func() error {
					return s.RunErasure(ctx, ErasureRequest{CustomerID: "c-2", RequestedAt: time.Now(), Actor: "o\x00ps", Reason: "ticket 42"},
						func(context.Context) error { return nil })
				}},
			}
			for _, tc := range cases {
				err := tc.write()
				var e *Error
				if !errors.As(err, &e) || e.Status != http.StatusBadRequest || e.Code != "invalid.text" {
					t.Errorf("%s: %v, want 400 invalid.text", tc.name, err)
				}
			}
			if h, err := s.History(ctx, "c-1"); err != nil || len(h) != 0 {
				t.Fatalf("refused events in the ledger: %+v %v", h, err)
			}
			if c, _, err := s.be.Case(ctx, "K-1"); err != nil || c != nil {
				t.Fatalf("refused case stored: %+v %v", c, err)
			}
			if p, err := s.be.(ErasureQueue).PendingErasures(ctx); err != nil || len(p) != 0 {
				t.Fatalf("refused erasure requested: %+v %v", p, err)
			}
			if c, _, _, err := s.be.Customer(ctx, "c-2"); err != nil || (c != nil && c.Erased) {
				t.Fatalf("refused erasure marked the customer erased: %+v %v", c, err)
			}

			// Through the admin API: JSON can carry a NUL (\u0000).
			cl := serveAdmin(t, s)
			err := cl.Do("POST", "/consents/withdrawals", map[string]any{"customer_id": "c-1", "purpose": purpose, "reason": "a\u0000b"}, nil)
			if CodeOf(err) != "invalid.text" {
				t.Fatalf("API withdrawal with a NUL in the reason: %v", err)
			}

			// Long names are cut at a character boundary: the stored value stays valid UTF-8.
			long := "x" + strings.Repeat("é", 40) // 81 bytes: byte 64 is inside a character
			out, err := s.PutCase(ctx, Case{ID: "K-2", CustomerID: "c-1", UpdatedBy: long})
			if err != nil || !utf8.ValidString(out.UpdatedBy) {
				t.Fatalf("case with a long multi-byte actor: %+v %v", out, err)
			}
		})
	}
}

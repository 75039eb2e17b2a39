package consent

import (
	"context"
	"strings"
	"testing"
)

// TestEraseOnWithdrawalPurposesMatchEitherWay: erase_on_withdrawal_purposes erases on a
// withdrawal of the purpose, of a narrower one, or of a broader one (withdrawing all
// "marketing" takes back an email grant, so its erasure runs); a withdrawal of an unrelated
// purpose erases nothing.
func TestEraseOnWithdrawalPurposesMatchEitherWay(t *testing.T) {
	tests := []struct {
		configured, withdrawn string
		erased                bool
	}{
		{"marketing.communications.email", "marketing.communications.email", true},
		{"marketing.communications.email", "marketing", true}, // broader: was missed
		{"marketing", "marketing.communications.email", true},
		{"marketing.communications.email", "analytics.reporting", false},
	}
	for _, tt := range tests {
		t.Run(tt.configured+" withdrawn "+tt.withdrawn, func(t *testing.T) {
			ctx := context.Background()
			cfg := testConfig(t, "sqlite")
			cfg.Purposes = []string{"marketing", "marketing.communications.email", "analytics.reporting"}
			cfg.EraseOnWithdrawal = true
			cfg.EraseOnWithdrawalPurposes = []string{tt.configured}
			er := &recordingEraser{}
			s := openStore(t, cfg, Options{Eraser: er})
			if _, err := s.Grant(ctx, grantInput("cust-b", "marketing.communications.email"), "alice"); err != nil {
				t.Fatal(err)
			}
			r, err := s.Withdraw(ctx, ConsentInput{CustomerID: "cust-b", Purpose: tt.withdrawn}, "alice")
			if err != nil {
				t.Fatal(err)
			}
			if got := r.Erasure == "done" && len(er.calls) == 1; got != tt.erased {
				t.Fatalf("erasure %q, eraser calls %d, want erased=%v", r.Erasure, len(er.calls), tt.erased)
			}
		})
	}
}

// TestEraseOnWithdrawalPurposesMustBeKnown: an entry that is neither a known purpose nor a
// parent of one (a typo is still a valid fideslang key) is refused by Open and CheckConfig:
// no withdrawal would ever match it, and the erasure it asks for would silently never run.
func TestEraseOnWithdrawalPurposesMustBeKnown(t *testing.T) {
	for entry, ok := range map[string]bool{
		"marketing.communication.email":  false, // typo
		"marketing.communications.email": true,
		"marketing":                      true, // a parent of known purposes
		"marketing.communications":       true,
	} {
		cfg := testConfig(t, "sqlite")
		cfg.Purposes = []string{"marketing.communications.email", "analytics.reporting"}
		cfg.EraseOnWithdrawal = true
		cfg.EraseOnWithdrawalPurposes = []string{entry}
		err := CheckConfig(cfg)
		if (err == nil) != ok || (!ok && !strings.Contains(err.Error(), "state.erase_on_withdrawal_purposes")) {
			t.Errorf("%s: CheckConfig %v, want ok=%v", entry, err, ok)
		}
		s, err := Open(context.Background(), cfg, Options{Eraser: &recordingEraser{}, NoBackground: true, Logger: quietLogger()})
		if err == nil {
			s.Close()
		}
		if (err == nil) != ok {
			t.Errorf("%s: Open %v, want ok=%v", entry, err, ok)
		}
	}
}

package demo

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Purposes used by the demo (fideslang data-use keys from the policy catalogue).
const (
	PurposeSupport   = "essential.service.operations.support"
	PurposeService   = "essential.service"
	PurposeMarketing = "marketing.communications.email"
	PurposeSharing   = "third_party_sharing"
)

// CustomerID is the CRM's id of the i-th seeded customer (1-based).
func CustomerID(i int) string { return fmt.Sprintf("c-%06d", i) }

// OptedIn reports whether seeded customer i granted marketing e-mail consent: every third
// customer did, and of those every fifth withdrew it later (so a marketing list shows both
// kinds of filtering).
func OptedIn(i int) bool { return i%3 == 1 && i%5 != 0 }

func hadMarketing(i int) bool { return i%3 == 1 }

// seedState records what an existing CRM's consent export and case system would hand over:
// every customer's service consent (with the retention deadline), the marketing opt-ins and
// opt-outs, two support cases and one processor agreement. It goes through the admin API, as
// an integrator's sync job would.
func (s *Stack) seedState(ctx context.Context) error {
	var csv strings.Builder
	csv.WriteString("customer_id,purpose,status,captured_at,notice_version,notice_hash,channel,retention_until\n")
	signup := time.Date(2026, 1, 15, 9, 0, 0, 0, time.UTC)
	retention := time.Now().UTC().AddDate(5, 0, 0).Format(time.RFC3339)
	for i := 1; i <= s.Opts.Customers; i++ {
		id := CustomerID(i)
		fmt.Fprintf(&csv, "%s,%s,granted,%s,2026-01,%s,signup,%s\n", id, PurposeService, signup.Format(time.RFC3339), noticeHash("2026-01"), retention)
		if i%2 == 1 {
			fmt.Fprintf(&csv, "%s,%s,granted,%s,2026-01,%s,signup,\n", id, PurposeSharing, signup.Format(time.RFC3339), noticeHash("2026-01"))
		}
		if hadMarketing(i) {
			fmt.Fprintf(&csv, "%s,%s,granted,%s,2026-03,%s,web,\n", id, PurposeMarketing, signup.AddDate(0, 2, 0).Format(time.RFC3339), noticeHash("2026-03"))
			if !OptedIn(i) {
				fmt.Fprintf(&csv, "%s,%s,withdrawn,%s,2026-03,%s,email-footer,\n", id, PurposeMarketing, signup.AddDate(0, 6, 0).Format(time.RFC3339), noticeHash("2026-03"))
			}
		}
	}
	code, body, err := s.Admin(ctx, "POST", "/v1/consents/import", "text/csv", []byte(csv.String()))
	if err != nil {
		return err
	}
	var rep struct {
		Accepted, Rejected int
	}
	if code != 200 || json.Unmarshal(body, &rep) != nil || rep.Rejected != 0 {
		return fmt.Errorf("consent import: %d %.300s", code, body)
	}
	for _, c := range []struct{ id, customer, assignee string }{
		{"case-1", CustomerID(1), "emp-17"},
		{"case-2", CustomerID(2), "emp-23"},
	} {
		b, _ := json.Marshal(map[string]any{"customer_id": c.customer, "assignees": []string{c.assignee}, "status": "open", "purpose": PurposeSupport})
		if err := s.adminOK(ctx, "PUT", "/v1/cases/"+c.id, "application/json", b); err != nil {
			return err
		}
	}
	b, _ := json.Marshal(map[string]any{
		"purposes":    []string{PurposeSharing},
		"categories":  []string{"user.unique_id", "user.name", "user.contact.email"},
		"valid_from":  time.Now().UTC().AddDate(0, -1, 0).Format(time.RFC3339),
		"valid_until": time.Now().UTC().AddDate(1, 0, 0).Format(time.RFC3339),
	})
	return s.adminOK(ctx, "PUT", "/v1/agreements/acme-mail", "application/json", b)
}

// noticeHash is the proof of which privacy notice text the customer saw (its SHA-256).
func noticeHash(version string) string {
	sum := sha256.Sum256([]byte("Demo CRM privacy notice, version " + version))
	return "sha256:" + hex.EncodeToString(sum[:])
}

func bytesReader(b []byte) *bytes.Reader {
	if b == nil {
		return bytes.NewReader(nil)
	}
	return bytes.NewReader(b)
}

package static

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/consentry/consentry/sidecar/enrich"
)

const sample = `
customers:
  - {id: c-1, retention_until: 2030-01-01T00:00:00Z, erased: false}
  - {id: c-2, erased: true, erased_at: "2026-05-01T00:00:00Z"}
consents:
  - {customer_id: c-1, purpose: marketing.communications.email, status: granted, notice_version: "2026-03", granted_at: 2026-03-02T10:00:00Z}
  - {customer_id: c-1, purpose: analytics.reporting, status: withdrawn}
cases:
  - {id: case-7, customer_id: c-1, assignees: [emp-17], status: open}
agreements:
  - {processor_id: acme, purposes: [third_party_sharing], categories: [user.contact.email], valid_until: 2027-01-01T00:00:00Z}
`

func TestEnrich(t *testing.T) {
	p, err := Parse([]byte(sample))
	if err != nil {
		t.Fatal(err)
	}
	e, err := p.Enrich(context.Background(), enrich.Query{CustomerID: "c-1", CaseID: "case-7", ProcessorID: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	if len(e.Consents) != 2 || e.Customer == nil || e.Customer.RetentionUntil == nil || e.Case == nil || e.Case.Assignees[0] != "emp-17" || e.Agreement == nil {
		t.Fatalf("enrichment %+v", e)
	}
	if e.Consents[0].GrantedAt == nil || e.Consents[0].GrantedAt.Year() != 2026 {
		t.Fatalf("granted_at not parsed: %+v", e.Consents[0])
	}
	// Copies: mutating the result must not change the provider's data.
	e.Customer.Erased = true
	e.Consents[0].Status = "expired"
	again, _ := p.Enrich(context.Background(), enrich.Query{CustomerID: "c-1"})
	if again.Customer.Erased || again.Consents[0].Status != "granted" {
		t.Fatal("provider data was mutated through a result")
	}
	unknown, _ := p.Enrich(context.Background(), enrich.Query{CustomerID: "nobody", CaseID: "nope"})
	if unknown.Customer != nil || unknown.Case != nil || unknown.Consents == nil || len(unknown.Consents) != 0 {
		t.Fatalf("unknown customer: %+v", unknown)
	}
	batch, err := p.EnrichBatch(context.Background(), enrich.Query{ProcessorID: "acme"}, []string{"c-1", "c-2", "c-3"})
	if err != nil {
		t.Fatal(err)
	}
	if len(batch) != 3 || !batch["c-2"].Customer.Erased || batch["c-3"].Customer != nil || batch["c-1"].Agreement == nil {
		t.Fatalf("batch %+v", batch)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.Enrich(ctx, enrich.Query{CustomerID: "c-1"}); err == nil {
		t.Fatal("cancelled context accepted")
	}
}

func TestInvalidFiles(t *testing.T) {
	for name, doc := range map[string]string{
		"unknown key":  `customer: []`,
		"bad status":   `consents: [{customer_id: c, purpose: p, status: maybe}]`,
		"no id":        `customers: [{erased: false}]`,
		"dup customer": `customers: [{id: a}, {id: a}]`,
		"bad time":     `customers: [{id: a, retention_until: tomorrow}]`,
	} {
		if _, err := Parse([]byte(doc)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestDuplicateIDsRefused: a case or agreement id listed twice silently took the last entry
// (a case's assignees decide need-to-know, an agreement's purposes what a processor may
// get): the file is refused at load, naming both entries.
func TestDuplicateIDsRefused(t *testing.T) {
	for name, tc := range map[string]struct{ doc, want string }{
		"case": {`cases: [{id: k-1, customer_id: c, assignees: [alice]}, {id: k-2, customer_id: c}, {id: k-1, customer_id: c, assignees: [mallory]}]`,
			`cases[2].id: "k-1" is listed twice (also cases[0])`},
		"agreement": {`agreements: [{processor_id: acme, purposes: [a]}, {processor_id: acme, purposes: [b]}]`,
			`agreements[1].processor_id: "acme" is listed twice (also agreements[0])`},
	} {
		_, err := Parse([]byte(tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
}

func TestReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.yaml")
	if err := os.WriteFile(path, []byte(sample), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	withdrawn := strings.Replace(sample, "purpose: marketing.communications.email, status: granted", "purpose: marketing.communications.email, status: withdrawn", 1)
	if err := os.WriteFile(path, []byte(withdrawn), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.Reload(); err != nil {
		t.Fatal(err)
	}
	e, _ := p.Enrich(context.Background(), enrich.Query{CustomerID: "c-1"})
	if e.Consents[0].Status != "withdrawn" {
		t.Fatalf("reload not applied: %+v", e.Consents[0])
	}
	if err := os.WriteFile(path, []byte("consents: [{}]"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.Reload(); err == nil {
		t.Fatal("invalid reload accepted")
	}
	if e, _ := p.Enrich(context.Background(), enrich.Query{CustomerID: "c-1"}); len(e.Consents) != 2 {
		t.Fatal("failed reload dropped data")
	}
}

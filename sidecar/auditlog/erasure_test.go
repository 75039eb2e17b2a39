package auditlog

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestErasureRecordIsChainedAndVerified: an erasure sits in the hash chain between decisions,
// names the customer only by pseudonym, and changing it is detected.
func TestErasureRecordIsChainedAndVerified(t *testing.T) {
	f := newFixture(t)
	l := f.open(t)
	appendN(t, l, 0, 3)
	p := l.Pseudonymizer().Customer("c-000003")
	err := l.AppendErasure(context.Background(), time.Now(), Erasure{Customer: p, Classes: []string{"contact", "health"},
		Actor: "dpo@example", Reason: "consent withdrawn", LedgerSeq: 1, LedgerHash: "ab12"})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.AppendErasure(context.Background(), time.Now(), Erasure{}); err == nil {
		t.Error("an erasure without a customer pseudonym must be refused")
	}
	appendN(t, l, 3, 2)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	rep := f.verify(t)
	if rep.ProblemCount != 0 || rep.Erasures != 1 || rep.Decisions != 5 {
		t.Fatalf("report: %+v", rep)
	}
	segs, _ := filepath.Glob(filepath.Join(f.dir, segmentPrefix+"*"+segmentSuffix))
	if len(segs) == 0 {
		t.Fatal("no segment")
	}
	raw, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), `"c-000003"`) || !strings.Contains(string(raw), `"type":"erasure"`) {
		t.Fatal("erasure record missing or carrying the raw customer id")
	}
	if err := os.WriteFile(segs[0], []byte(strings.Replace(string(raw), `"consent withdrawn"`, `"routine cleanup"`, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if rep, _ := Verify(f.dir, VerifyOptions{PublicKeys: f.pub}); rep == nil || rep.ProblemCount == 0 {
		t.Fatal("a modified erasure record must be detected")
	}
}

// TestErasureActorAndReasonPseudonymized: the reason (and actor) of an erasure often name the
// customer ("Art. 17 request from c-1001"); logged raw, the id would sit beside its pseudonym
// in a log that is never rewritten. AppendErasure finds the id by the pseudonym it has (the
// log's, or the one Erasure.Pseudonymize made) and replaces it, leaving other ids alone.
func TestErasureActorAndReasonPseudonymized(t *testing.T) {
	ps, _ := NewPseudonymizer(testKey)
	vaultOwn := func(id string) string { return "hmac-sha256:" + id + "!" } // a key manager with a key of its own
	long := strings.Repeat("x ", maxIDScan) + "c-1001"
	cases := []struct {
		name, customer, actor, reason string
		pseudo                        func(string) string
		wantActor, wantReason         string
	}{
		{name: "reason", customer: "c-1001", actor: "admin:dpo", reason: "Art. 17 request from c-1001 (ticket 4711)",
			wantActor: "admin:dpo", wantReason: "Art. 17 request from " + ps.Customer("c-1001") + " (ticket 4711)"},
		{name: "id as a whole word only", customer: "c-1", actor: "c-1", reason: "c-1, not c-10 or c-1x; c-1.",
			wantActor: ps.Customer("c-1"), wantReason: ps.Customer("c-1") + ", not c-10 or c-1x; " + ps.Customer("c-1") + "."},
		{name: "an email id", customer: "ada@example.com", actor: "self-service", reason: "withdrawn by ada@example.com.",
			wantActor: "self-service", wantReason: "withdrawn by " + ps.Customer("ada@example.com") + "."},
		{name: "another customer named", customer: "c-1001", actor: "dpo", reason: "duplicate of c-2002",
			wantActor: "dpo", wantReason: "duplicate of c-2002"},
		{name: "the key manager's pseudonym", customer: "c-1001", pseudo: vaultOwn, actor: "dpo", reason: "for c-1001",
			wantActor: "dpo", wantReason: "for " + vaultOwn("c-1001")},
		{name: "text past the bound is cut", customer: "c-1001", actor: "dpo", reason: long,
			wantActor: "dpo", wantReason: long[:maxIDScan] + " [cut: the key ledger holds the full text]"},
	}
	f := newFixture(t)
	l := f.open(t)
	at := time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)
	for _, tc := range cases {
		p := ps.Customer(tc.customer)
		if tc.pseudo != nil {
			p = tc.pseudo(tc.customer)
		}
		if err := l.AppendErasure(context.Background(), at, Erasure{Customer: p, Classes: []string{"contact"}, Actor: tc.actor, Reason: tc.reason,
			LedgerSeq: 1, LedgerHash: "ab12", Pseudonymize: tc.pseudo}); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	var got []*Erasure
	if err := ScanEvents(f.dir, func(ev *Event, _ []byte) error {
		if ev.Type == TypeErasure {
			got = append(got, ev.Erasure)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(cases) {
		t.Fatalf("%d erasure records, want %d", len(got), len(cases))
	}
	for i, tc := range cases {
		if got[i].Actor != tc.wantActor || got[i].Reason != tc.wantReason {
			t.Errorf("%s: actor %q reason %.120q, want %q %.120q", tc.name, got[i].Actor, got[i].Reason, tc.wantActor, tc.wantReason)
		}
	}
	if rep := f.verify(t); !rep.OK() {
		t.Fatalf("verify: %+v", rep.Problems)
	}
}

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

package auditlog

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAppendVerifyRoundTrip(t *testing.T) {
	f := newFixture(t)
	l := f.open(t)
	appendN(t, l, 0, 25)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	rep := f.verify(t)
	if !rep.OK() {
		t.Fatalf("verify: %+v", rep.Problems)
	}
	if rep.Decisions != 25 || rep.Checkpoints < 4 {
		t.Fatalf("decisions %d checkpoints %d", rep.Decisions, rep.Checkpoints)
	}
	// Reopen continues the chain.
	l = f.open(t)
	appendN(t, l, 25, 5)
	l.Close()
	if rep := f.verify(t); !rep.OK() || rep.Decisions != 30 {
		t.Fatalf("after reopen: %+v", rep)
	}
}

func TestEventContentMasked(t *testing.T) {
	f := newFixture(t)
	f.cfg.Mask = []MaskRule{{Op: MaskOpRemove, Path: "/input/enrichment/consents/0/captured_by"}, {Op: MaskOpUpsert, Path: "/input/subject/claims", Value: "**"}}
	l := f.open(t)
	appendN(t, l, 0, 1)
	l.Close()
	var got *Event
	var raw []byte
	err := ScanEvents(f.dir, func(ev *Event, line []byte) error {
		if ev.Type == TypeDecision {
			got, raw = ev, append([]byte(nil), line...)
		}
		return nil
	})
	if err != nil || got == nil {
		t.Fatal(err, got)
	}
	for _, secret := range []string{"secret-token", "session=abc", "c-1001", "signup-form"} {
		if bytes.Contains(raw, []byte(secret)) {
			t.Errorf("log line contains %q: %s", secret, raw)
		}
	}
	ps, _ := NewPseudonymizer(testKey)
	if got.Customer != ps.Customer("c-1001") || !strings.Contains(string(got.Input), ps.Customer("c-1001")) {
		t.Errorf("customer pseudonym missing: %s", got.Customer)
	}
	if got.Outcome != "allow" || got.Purpose != "essential.service.operations.support" || got.CaseID != "case-7" || got.Subject.ID != "emp-17" {
		t.Errorf("event fields: %+v", got)
	}
	if got.Fields == nil || len(got.Fields.Released) != 2 || got.Fields.Dropped[0] != "health.notes" {
		t.Errorf("fields: %+v", got.Fields)
	}
	wantErased := []string{"/input/enrichment/consents/0/captured_by", "/input/request/headers/authorization", "/input/request/headers/cookie"}
	if strings.Join(got.Erased, ",") != strings.Join(wantErased, ",") || len(got.Masked) != 1 {
		t.Errorf("erased %v masked %v", got.Erased, got.Masked)
	}
	if got.Bundles["consentry"].Revision != "rev-1" || got.DecisionID != "dec-000000" || got.Path != "consentry/decision" {
		t.Errorf("opa fields: %+v", got)
	}
	// The stored line is canonical JSON plus the hash member.
	body := append(append([]byte(nil), raw[:len(raw)-hashSuffixLen]...), '}')
	c, err := Canonicalize(body)
	if err != nil || !bytes.Equal(c, body) {
		t.Errorf("line is not canonical:\n%s\n%s", body, c)
	}
}

func TestCorruptMiddleRefused(t *testing.T) {
	f := newFixture(t)
	l := f.open(t)
	appendN(t, l, 0, 5)
	l.Close()
	segs, _ := listSegments(f.dir)
	last := filepath.Join(f.dir, segs[len(segs)-1].name)
	b, _ := os.ReadFile(last)
	b = bytes.Replace(b, []byte("dec-000002"), []byte("dec-00000X"), 1)
	os.WriteFile(last, b, 0o600)
	if _, err := Open(f.cfg, Options{}); err == nil {
		t.Fatal("opened a log with a modified record in the middle")
	}
}

func TestAppendAfterCloseIsUnavailable(t *testing.T) {
	f := newFixture(t)
	l := f.open(t)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	err := l.Append(t.Context(), entry(t, 1))
	if !errors.Is(err, ErrClosed) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Append after Close: %v, want ErrClosed wrapping ErrUnavailable", err)
	}
}

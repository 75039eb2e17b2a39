package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/consentry/consentry/sidecar/audit"
	"github.com/consentry/consentry/sidecar/auditlog"
	"github.com/consentry/consentry/sidecar/decision"
	"github.com/consentry/consentry/sidecar/engine"
	"github.com/consentry/consentry/sidecar/input"
)

// keygenLog opens a new decision log with keys made by `audit keygen`.
func keygenLog(t *testing.T) (l *auditlog.Log, logDir, keys string) {
	t.Helper()
	keys = t.TempDir()
	if code, out, errs := run(t, "", "audit", "keygen", "--out", keys); code != 0 {
		t.Fatalf("keygen: %d %s %s", code, out, errs)
	}
	logDir = t.TempDir()
	l, err := auditlog.Open(auditlog.Config{Dir: logDir, SigningKeyFile: filepath.Join(keys, "signing.pem"), PseudonymKeyFile: filepath.Join(keys, "pseudonym.key")},
		auditlog.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return l, logDir, keys
}

// auditFixture logs 12 real decisions (default policies) with keys made by `audit keygen`.
func auditFixture(t *testing.T) (logDir, keys string) {
	t.Helper()
	l, logDir, keys := keygenLog(t)
	ps, err := engine.LoadDir(policies, engine.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	eng := engine.New(engine.Config{Timeout: time.Second}, nil)
	if err := eng.Load(context.Background(), ps); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(policies + "/examples/support-read.json")
	for i := 0; i < 12; i++ {
		var in input.Input
		json.Unmarshal(raw, &in)
		if i%3 == 2 {
			in.Purpose = "marketing.communications.email"
		}
		res, _ := eng.Decide(context.Background(), &in)
		if err := l.Append(context.Background(), &audit.Entry{DecisionID: fmt.Sprintf("d-%d", i), Timestamp: in.Time.Now, Input: &in, Decision: res.Decision, Revision: res.Revision}); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	return logDir, keys
}

func TestAuditCommands(t *testing.T) {
	logDir, keys := auditFixture(t)
	pub := filepath.Join(keys, "signing.pub")
	key := filepath.Join(keys, "pseudonym.key")

	code, out, errs := run(t, "", "audit", "verify", logDir, "--public-key", pub)
	if code != ExitOK || !strings.Contains(out, "OK") {
		t.Fatalf("verify: %d %s %s", code, out, errs)
	}
	if code, _, _ := run(t, "", "audit", "verify", logDir); code != ExitVerifyFailed {
		t.Fatalf("verify without the public key: %d", code)
	}
	code, out, _ = run(t, "", "audit", "query", "--log", logDir, "--customer", "c-1001", "--pseudonym-key", key, "--outcome", "deny", "--format", "json")
	if code != 0 || strings.Count(out, "\n") != 4 || strings.Contains(out, "c-1001") {
		t.Fatalf("query json: %d\n%s", code, out)
	}
	code, out, _ = run(t, "", "audit", "query", logDir, "--purpose", "essential.service.operations.support")
	if code != 0 || strings.Count(out, "\n") != 9 || !strings.HasPrefix(out, "TIME") {
		t.Fatalf("query table: %d\n%s", code, out)
	}
	if code, _, errs := run(t, "", "audit", "query", logDir, "--customer", "c-1001"); code != ExitUsage || !strings.Contains(errs, "pseudonym-key") {
		t.Fatalf("customer without key: %d %s", code, errs)
	}
	report := filepath.Join(t.TempDir(), "r.html")
	code, _, errs = run(t, "", "audit", "report", "--log", logDir, "--customer", "c-1001", "--pseudonym-key", key, "--out", report)
	page, _ := os.ReadFile(report)
	if code != 0 || !bytes.Contains(page, []byte("Who accessed my data")) || bytes.Contains(page, []byte("emp-17")) {
		t.Fatalf("report: %d %s", code, errs)
	}
	code, out, _ = run(t, "", "audit", "report", "--log", logDir, "--customer", "c-1001", "--pseudonym-key", key, "--format", "csv", "--name-employees")
	if code != 0 || strings.Count(out, "emp-17") != 12 {
		t.Fatalf("csv report: %d\n%s", code, out)
	}

	// Replay: same policy -> no change; a policy that denies marketing differently -> exit 7.
	code, out, _ = run(t, "", "replay", "--log", logDir, "--policies", policies, "--fail-on-change")
	if code != ExitOK || !strings.Contains(out, "0 would change") {
		t.Fatalf("replay same policy: %d %s", code, out)
	}
	cand := t.TempDir()
	os.WriteFile(filepath.Join(cand, "p.rego"), []byte("package consentry\n\ndecision := {\"allow\": false, \"status\": 403, \"reasons\": [{\"code\": \"closed\", \"message\": \"closed\"}], \"fields\": {}, \"key_scopes\": [], \"obligations\": [], \"headers\": {}, \"flags\": []}\n"), 0o644)
	code, out, _ = run(t, "", "replay", "--log", logDir, "--policies", cand, "--fail-on-change")
	if code != ExitChanged || !strings.Contains(out, "8 allow->deny") || !strings.Contains(out, "+closed") {
		t.Fatalf("replay candidate: %d %s", code, out)
	}

	// Tampering makes verify exit 6.
	segs, _ := filepath.Glob(filepath.Join(logDir, "segment-*.jsonl"))
	b, _ := os.ReadFile(segs[0])
	os.WriteFile(segs[0], bytes.Replace(b, []byte(`"outcome":"deny"`), []byte(`"outcome":"allow"`), 1), 0o600)
	code, out, _ = run(t, "", "audit", "verify", logDir, "--public-key", pub)
	if code != ExitVerifyFailed || !strings.Contains(out, "modified") {
		t.Fatalf("tampered verify: %d %s", code, out)
	}
	// Every segment deleted, the checkpoint copies left: a finding (6), not an error (1).
	for _, s := range segs {
		os.Remove(s)
	}
	code, out, _ = run(t, "", "audit", "verify", logDir, "--public-key", pub)
	if code != ExitVerifyFailed || !strings.Contains(out, "deleted") {
		t.Fatalf("verify of a deleted log: %d %s", code, out)
	}
	// bundle keygen never replaces a key.
	base := filepath.Join(t.TempDir(), "bundle")
	if code, _, errs := run(t, "", "bundle", "keygen", "-o", base); code != ExitOK {
		t.Fatalf("bundle keygen: %d %s", code, errs)
	}
	keyPEM, _ := os.ReadFile(base + ".key")
	if code, _, _ := run(t, "", "bundle", "keygen", "-o", base); code == ExitOK {
		t.Fatal("bundle keygen replaced an existing key")
	}
	if again, _ := os.ReadFile(base + ".key"); !bytes.Equal(keyPEM, again) {
		t.Fatal("the existing key changed")
	}
}

// TestAuditSearchRefusesWrongData: query and report never say "nothing recorded" about the
// wrong data. Another pseudonym key than the log's exits 9 (the checkpoints name the key by
// its fingerprint); a directory with no segment exits 10; a log too old to name its key gets
// a warning on stderr with the number of records searched.
func TestAuditSearchRefusesWrongData(t *testing.T) {
	logDir, keys := auditFixture(t)
	key := filepath.Join(keys, "pseudonym.key")
	otherKeys := t.TempDir()
	if code, _, errs := run(t, "", "audit", "keygen", "--out", otherKeys); code != 0 {
		t.Fatalf("keygen: %s", errs)
	}
	other := filepath.Join(otherKeys, "pseudonym.key")
	empty := t.TempDir()
	cases := []struct {
		name string
		args []string
		code int
		want string // in stderr
	}{
		{"query, the log's key", []string{"audit", "query", "--log", logDir, "--customer", "c-1001", "--pseudonym-key", key}, ExitOK, ""},
		{"query, another key", []string{"audit", "query", "--log", logDir, "--customer", "c-1001", "--pseudonym-key", other}, ExitWrongKey, "another key"},
		// Only records of customer subjects depend on the key (TestAuditSubjectAcrossKeyRotation).
		{"query --subject, another key, no customer subject logged", []string{"audit", "query", "--log", logDir, "--subject", "c-1001", "--pseudonym-key", other}, ExitOK, ""},
		{"report, another key", []string{"audit", "report", "--log", logDir, "--customer", "c-1001", "--pseudonym-key", other}, ExitWrongKey, "not the log's"},
		{"query, empty directory", []string{"audit", "query", "--log", empty}, ExitNoLog, "no segment"},
		{"query, the keys directory", []string{"audit", "query", "--log", keys, "--customer", "c-1001", "--pseudonym-key", key}, ExitNoLog, "no segment"},
		{"report, missing directory", []string{"audit", "report", "--log", filepath.Join(empty, "nope"), "--customer", "c-1001", "--pseudonym-key", key}, ExitNoLog, "does not exist"},
		{"query, nothing in range", []string{"audit", "query", "--log", logDir, "--since", "2027-01-01"}, ExitOK, "no decision record in the time range"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := run(t, "", tc.args...)
			if code != tc.code || !strings.Contains(errs, tc.want) {
				t.Fatalf("exit %d, want %d; stderr %q (want %q); stdout %s", code, tc.code, errs, tc.want, out)
			}
		})
	}

	// A log written before checkpoints named the key: nothing to refuse on, so a search that
	// finds nothing says how much it searched and that the key could not be checked.
	segs, _ := filepath.Glob(filepath.Join(logDir, "segment-*.jsonl"))
	for _, s := range segs {
		b, _ := os.ReadFile(s)
		b = regexp.MustCompile(`,"pseudonym_key":"kf_[0-9a-f]+"`).ReplaceAll(b, nil)
		if err := os.WriteFile(s, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	code, out, errs := run(t, "", "audit", "report", "--log", logDir, "--customer", "c-1001", "--pseudonym-key", other, "--format", "json")
	if code != ExitOK || !strings.Contains(errs, "nothing matched in 12 decision records") || !strings.Contains(errs, "make sure it is") ||
		!strings.Contains(out, `"records_searched": 12`) {
		t.Fatalf("old log, another key: %d\nstderr %s\nstdout %s", code, errs, out)
	}
}

// TestAuditSearchFlags: a date-only --until includes that day (the fixture's decisions are at
// 2026-11-22T09:00Z); --subject with the key finds a customer subject, which the log holds by
// its pseudonym only.
func TestAuditSearchFlags(t *testing.T) {
	logDir, keys := auditFixture(t)
	key := filepath.Join(keys, "pseudonym.key")
	lines := func(args ...string) int {
		t.Helper()
		code, out, errs := run(t, "", append([]string{"audit", "query", "--log", logDir, "--format", "json"}, args...)...)
		if code != ExitOK {
			t.Fatalf("%v: exit %d %s", args, code, errs)
		}
		return strings.Count(out, "\n")
	}
	cases := []struct {
		name string
		args []string
		want int
	}{
		{"until the day, inclusive", []string{"--until", "2026-11-22"}, 12},
		{"until the day before", []string{"--until", "2026-11-21"}, 0},
		{"until an instant, exclusive", []string{"--until", "2026-11-22T09:00:00Z"}, 0},
		{"since the day", []string{"--since", "2026-11-22"}, 12},
		{"subject employee, no key", []string{"--subject", "emp-17"}, 12},
		{"subject employee, key", []string{"--subject", "emp-17", "--pseudonym-key", key}, 12},
	}
	for _, tc := range cases {
		if got := lines(tc.args...); got != tc.want {
			t.Errorf("%s: %d records, want %d", tc.name, got, tc.want)
		}
	}
	code, _, errs := run(t, "", "audit", "report", "--log", logDir, "--customer", "c-1001", "--pseudonym-key", key, "--until", "2026-11-22", "--format", "json")
	if code != ExitOK || strings.Contains(errs, "warning") {
		t.Fatalf("report until the day: %d %s", code, errs)
	}

	// A customer subject (a self-service request): logged by its customer's pseudonym.
	dir := t.TempDir()
	l, err := auditlog.Open(auditlog.Config{Dir: dir, SigningKeyFile: filepath.Join(keys, "signing.pem"), PseudonymKeyFile: key},
		auditlog.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	in := input.Input{Subject: input.Subject{ID: "alice@example.com", Type: input.SubjectCustomer, CustomerID: "c-3003"}, Purpose: "self_service",
		Resource: input.Resource{Type: "customer", CustomerID: "c-3003"}}
	if err := l.Append(context.Background(), &audit.Entry{DecisionID: "d-self", Input: &in, Decision: &decision.Decision{Allow: true, Status: 200}}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	logDir = dir
	if got := lines("--subject", "c-3003"); got != 0 {
		t.Errorf("--subject without the key matched %d customer subjects", got)
	}
	if got := lines("--subject", "c-3003", "--pseudonym-key", key); got != 1 {
		t.Errorf("--subject with the key: %d records, want 1", got)
	}
}

// TestAuditSubjectAcrossKeyRotation: after the pseudonym key changed, --subject for an
// employee (logged by its id) is answered with either key: only records whose subject is a
// customer (logged by pseudonym) depend on the key, and only for those does the wrong key
// exit 9. --customer is refused only over the range the other key wrote.
func TestAuditSubjectAcrossKeyRotation(t *testing.T) {
	logDir, keys := auditFixture(t) // 12 decisions of emp-17 on 2026-11-22, key A
	keyA := filepath.Join(keys, "pseudonym.key")
	newKeys := t.TempDir()
	if code, _, errs := run(t, "", "audit", "keygen", "--out", newKeys); code != 0 {
		t.Fatal(errs)
	}
	keyB := filepath.Join(newKeys, "pseudonym.key")
	l, err := auditlog.Open(auditlog.Config{Dir: logDir, SigningKeyFile: filepath.Join(keys, "signing.pem"), PseudonymKeyFile: keyB},
		auditlog.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(policies + "/examples/support-read.json")
	at := time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)
	for i, subj := range []input.Subject{{}, {ID: "c-1001", Type: input.SubjectCustomer, CustomerID: "c-1001"}} {
		var in input.Input
		if err := json.Unmarshal(raw, &in); err != nil {
			t.Fatal(err)
		}
		if subj.ID != "" {
			in.Subject = subj
		}
		in.Time = input.NewTime(at)
		if err := l.Append(context.Background(), &audit.Entry{DecisionID: fmt.Sprintf("d-b%d", i), Timestamp: at, Input: &in,
			Decision: &decision.Decision{Allow: true, Status: 200}}); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	cases := []struct {
		name  string
		args  []string
		code  int
		lines int
	}{
		{"employee, the new key", []string{"--subject", "emp-17", "--pseudonym-key", keyB}, ExitOK, 13},
		{"employee, the old key", []string{"--subject", "emp-17", "--pseudonym-key", keyA}, ExitOK, 13},
		{"customer subject, the new key", []string{"--subject", "c-1001", "--pseudonym-key", keyB}, ExitOK, 1},
		{"customer subject, the old key", []string{"--subject", "c-1001", "--pseudonym-key", keyA}, ExitWrongKey, 0},
		{"customer, the new key, its range", []string{"--customer", "c-1001", "--pseudonym-key", keyB, "--since", "2026-11-24"}, ExitOK, 2},
		{"customer, the old key, its range", []string{"--customer", "c-1001", "--pseudonym-key", keyA, "--until", "2026-11-23"}, ExitOK, 12},
		{"customer, the old key, the new range", []string{"--customer", "c-1001", "--pseudonym-key", keyA}, ExitWrongKey, 0},
	}
	for _, tc := range cases {
		code, out, errs := run(t, "", append([]string{"audit", "query", "--log", logDir, "--format", "json"}, tc.args...)...)
		if code != tc.code || (code == ExitOK && strings.Count(out, "\n") != tc.lines) {
			t.Errorf("%s: exit %d (want %d), %d records (want %d); stderr %s", tc.name, code, tc.code, strings.Count(out, "\n"), tc.lines, errs)
		}
	}
}

// TestAuditWarningWhenOnlyErasuresMatch: a range holding no decision but the customer's
// erasure returns the erasure; stderr says so instead of "none could match".
func TestAuditWarningWhenOnlyErasuresMatch(t *testing.T) {
	logDir, keys := auditFixture(t) // decisions on 2026-11-22
	key := filepath.Join(keys, "pseudonym.key")
	l, err := auditlog.Open(auditlog.Config{Dir: logDir, SigningKeyFile: filepath.Join(keys, "signing.pem"), PseudonymKeyFile: key},
		auditlog.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.AppendErasure(context.Background(), time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC), auditlog.Erasure{
		Customer: l.Pseudonymizer().Customer("c-1001"), Classes: []string{"contact"}, Actor: "dpo", Reason: "art. 17", LedgerSeq: 1, LedgerHash: "ab"}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	cases := []struct {
		name           string
		args           []string
		lines          int
		want, unwanted string
	}{
		{"query, only the erasure in range", []string{"audit", "query", "--log", logDir, "--customer", "c-1001", "--pseudonym-key", key, "--since", "2026-11-29", "--format", "json"},
			1, "only erasures (1 shown)", "none could match"},
		{"report, only the erasure in range", []string{"audit", "report", "--log", logDir, "--customer", "c-1001", "--pseudonym-key", key, "--since", "2026-11-29", "--format", "json"},
			-1, "only erasures (1 shown)", "none could match"},
		{"query, nothing in range", []string{"audit", "query", "--log", logDir, "--customer", "c-1001", "--pseudonym-key", key, "--since", "2026-12-01", "--format", "json"},
			0, "none could match", "erasures"},
	}
	for _, tc := range cases {
		code, out, errs := run(t, "", tc.args...)
		if code != ExitOK || (tc.lines >= 0 && strings.Count(out, "\n") != tc.lines) || !strings.Contains(errs, tc.want) || strings.Contains(errs, tc.unwanted) {
			t.Errorf("%s: exit %d, %d lines; stderr %q (want %q, not %q)", tc.name, code, strings.Count(out, "\n"), errs, tc.want, tc.unwanted)
		}
	}
}

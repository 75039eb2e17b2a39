package cli

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/consentry/consentry/sidecar/audit"
	"github.com/consentry/consentry/sidecar/auditlog"
	"github.com/consentry/consentry/sidecar/decision"
	"github.com/consentry/consentry/sidecar/input"
)

// intentAuditLog logs a resolved write (intent d-0, then its decision), an unresolved one
// (intent d-1 alone: the sidecar stopped before the CRM's answer was logged) and a read (d-2),
// with keys made by `audit keygen`.
func intentAuditLog(t *testing.T) (logDir, keys string) {
	t.Helper()
	l, logDir, keys := keygenLog(t)
	raw, err := os.ReadFile(policies + "/examples/support-read.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []struct {
		id     string
		intent bool
	}{{"d-0", true}, {"d-0", false}, {"d-1", true}, {"d-2", false}} {
		var in input.Input
		if err := json.Unmarshal(raw, &in); err != nil {
			t.Fatal(err)
		}
		e := &audit.Entry{DecisionID: s.id, Timestamp: in.Time.Now, Input: &in, Intent: s.intent, Revision: "r1",
			Decision: &decision.Decision{Allow: true, Status: 200, Reasons: []decision.Reason{}, Fields: map[string]decision.Field{}, KeyScopes: []string{}}}
		if !s.intent {
			e.Enforcement = audit.Enforcement{Status: 200}
		}
		if err := l.Append(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return logDir, keys
}

// TestAuditUnresolvedIntents: verify passes and warns of the unresolved intent, query lists
// it last with its own outcome, the report shows it as unrecorded.
func TestAuditUnresolvedIntents(t *testing.T) {
	logDir, keys := intentAuditLog(t)
	pub, key := filepath.Join(keys, "signing.pub"), filepath.Join(keys, "pseudonym.key")
	warning := "a state-changing request was forwarded to the CRM but its outcome was never recorded (the sidecar stopped before the CRM's answer was logged)"
	cases := []struct {
		name string
		args []string
		// check looks at stdout and stderr; the command must exit 0.
		check func(t *testing.T, out, errs string)
	}{
		{"verify", []string{"audit", "verify", logDir, "--public-key", pub}, func(t *testing.T, out, _ string) {
			if !strings.Contains(out, "(2 decisions, 2 intents, 0 erasures") || !strings.Contains(out, "warning: decision d-1 (seq ") ||
				!strings.Contains(out, warning) || strings.Contains(out, "decision d-0 (") ||
				!strings.Contains(out, "warning: 1 unresolved intent: check the CRM for this change") || !strings.HasSuffix(out, "OK\n") {
				t.Errorf("stdout:\n%s", out)
			}
		}},
		{"verify --json", []string{"audit", "verify", logDir, "--public-key", pub, "--json"}, func(t *testing.T, out, _ string) {
			var rep auditlog.VerifyReport
			if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.Intents != 2 || len(rep.UnresolvedIntents) != 1 ||
				rep.UnresolvedIntents[0].DecisionID != "d-1" || rep.UnresolvedIntents[0].Pending {
				t.Errorf("%v:\n%s", err, out)
			}
		}},
		{"query table", []string{"audit", "query", logDir}, func(t *testing.T, out, errs string) {
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != 4 || !strings.Contains(lines[3], "d-1") || !strings.Contains(lines[3], auditlog.OutcomeForwarded) ||
				strings.Contains(lines[1]+lines[2], auditlog.OutcomeForwarded) {
				t.Errorf("table:\n%s", out)
			}
			if !strings.Contains(errs, "warning: 1 state-changing request was forwarded to the CRM but no outcome was recorded") {
				t.Errorf("stderr: %s", errs)
			}
		}},
		{"query json", []string{"audit", "query", logDir, "--format", "json"}, func(t *testing.T, out, _ string) {
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != 3 || !strings.Contains(lines[2], `"decision_id":"d-1"`) || !strings.Contains(lines[2], `"type":"intent"`) {
				t.Errorf("json lines:\n%s", out)
			}
		}},
		{"report csv", []string{"audit", "report", "--log", logDir, "--customer", "c-1001", "--pseudonym-key", key, "--format", "csv"}, func(t *testing.T, out, errs string) {
			if strings.Count(out, ",unrecorded,") != 1 || strings.Count(out, ",allow,") != 2 || !strings.Contains(errs, "1 state-changing request") {
				t.Errorf("csv:\n%s\nstderr: %s", out, errs)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := run(t, "", tc.args...)
			if code != ExitOK {
				t.Fatalf("exit %d\n%s\n%s", code, out, errs)
			}
			tc.check(t, out, errs)
		})
	}
}

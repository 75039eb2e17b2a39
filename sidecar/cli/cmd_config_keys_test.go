package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/consentry/consentry/sidecar/app"
	"github.com/consentry/consentry/sidecar/audit"
	"github.com/consentry/consentry/sidecar/auditlog"
	"github.com/consentry/consentry/sidecar/config"
	"github.com/consentry/consentry/sidecar/input"
	"github.com/consentry/consentry/sidecar/pipeline/pipelinetest"
	"github.com/consentry/consentry/vaultkeys"
	"github.com/consentry/consentry/vaultkeys/vaulttest"
)

// startedLog writes consentry.yaml in dir with the given sections (the decision log's keys
// left to `consentry run`), assembles the sidecar from it as run does - which generates the
// decision log's keys where run keeps them - logs n decisions for customer c-1001 and stops.
// It returns the config file and the log's pseudonymizer.
func startedLog(t *testing.T, dir, sections string, n int) (string, *auditlog.Pseudonymizer) {
	t.Helper()
	root := pipelinetest.RepoRoot()
	y := fmt.Sprintf("policy: {dir: %[1]s/policies, require_signatures: false}\nroutes: {file: %[1]s/deploy/routes/democrm.yaml}\n"+
		"state: {data_dir: %[2]s/state, purposes_file: %[1]s/policies/data/consentry/catalog/data.json}\n"+
		// Not a timing test: a first evaluation on a busy CI machine may take longer than the
		// default evaluation deadline.
		"engine: {timeout: 10s}\n%[3]s", root, dir, sections)
	cfgPath := filepath.Join(dir, "consentry.yaml")
	if err := os.WriteFile(cfgPath, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	a, err := app.New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	raw, err := os.ReadFile(filepath.Join(root, "policies", "examples", "support-read.json"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		var in input.Input
		if err := json.Unmarshal(raw, &in); err != nil {
			t.Fatal(err)
		}
		res, err := a.Engine.Decide(context.Background(), &in)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Decisions.Append(context.Background(), &audit.Entry{DecisionID: fmt.Sprintf("d-%d", i), Timestamp: in.Time.Now,
			Input: &in, Decision: res.Decision, Revision: res.Revision}); err != nil {
			t.Fatal(err)
		}
	}
	return cfgPath, a.Decisions.Pseudonymizer()
}

// TestAuditConfigUsesRunsGeneratedKeys: `consentry run` without key files generates them under
// <dir>.keys/ (and without decision_log.dir writes to var/decisions); every audit command given
// --config reads that log with those keys. An intact log was reported checkpoint_forged (exit
// 6) and a --customer lookup refused (exit 2) because the CLI only knew configured key files.
func TestAuditConfigUsesRunsGeneratedKeys(t *testing.T) {
	cases := []struct {
		name        string
		decisionLog string // the config's decision_log section; %s is the test directory
		chdir       bool   // run from the test directory (relative default paths)
	}{
		{"no decision_log section", "", true},
		{"decision_log.dir only", "decision_log: {dir: %s/decisions}\n", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.chdir {
				t.Chdir(dir)
			}
			section := tc.decisionLog
			if section != "" {
				section = fmt.Sprintf(section, dir)
			}
			cfgPath, _ := startedLog(t, dir, section, 5)
			logDir := filepath.Join(dir, "decisions")
			if tc.chdir {
				logDir = filepath.FromSlash(app.DefaultDecisionLogDir)
			}
			if _, err := os.Stat(logDir + ".keys"); err != nil {
				t.Fatalf("run did not generate its keys where the test expects them: %v", err)
			}
			checks := []struct {
				name string
				args []string
				want string
			}{
				{"verify", []string{"audit", "verify", logDir, "--config", cfgPath}, "OK"},
				{"verify --sealed --json", []string{"audit", "verify", logDir, "--config", cfgPath, "--sealed", "--json"}, `"problem_count": 0`},
				{"verify, the directory from --config", []string{"audit", "verify", "--config", cfgPath}, "OK"},
				{"query --customer", []string{"audit", "query", "--config", cfgPath, "--customer", "c-1001", "--format", "json"}, `"d-4"`},
				{"report --customer", []string{"audit", "report", "--config", cfgPath, "--customer", "c-1001", "--format", "csv"}, "essential.service.operations.support"},
			}
			for _, c := range checks {
				code, out, errs := run(t, "", c.args...)
				if code != ExitOK || !strings.Contains(out, c.want) {
					t.Errorf("%s: exit %d, want 0 and %q\nstdout: %.600s\nstderr: %s", c.name, code, c.want, out, errs)
				}
				// A key generated beside the log is no proof against whoever rewrote both.
				if c.args[1] == "verify" && !strings.Contains(errs, "--public-key") {
					t.Errorf("%s: no note that the generated key is not pinned: %q", c.name, errs)
				}
			}
		})
	}
}

// TestKeysConfigUsesRunsGeneratedPseudonymKey: without vault.pseudonym_key_file, `consentry
// run` names customers in destruction records with the decision log's pseudonym key, generated
// under <dir>.keys/ when none is configured. erase, keys encrypt and keys replay-erasures with
// --config use that key too (they refused with exit 5 "pseudonym_key_file is required"), so an
// erasure made by the CLI names the customer as the sidecar's decision log does.
func TestKeysConfigUsesRunsGeneratedPseudonymKey(t *testing.T) {
	srv := vaulttest.Start(t)
	dir := t.TempDir()
	cfgPath, ps := startedLog(t, dir, fmt.Sprintf("decision_log: {dir: %[1]s/decisions}\nvault:\n  address: %[2]s\n  auth: {method: token, token: %[3]s}\n  ledger_path: %[1]s/ledger.jsonl\n",
		dir, srv.Addr, srv.Token), 1)

	in := filepath.Join(dir, "export.jsonl")
	if err := os.WriteFile(in, []byte(`{"id":"c-1001","contact":{"email":"ada@example.org"}}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errs := run(t, "", "keys", "encrypt", "--config", cfgPath, "--in", in, "--out", filepath.Join(dir, "enc.jsonl"), "--fields", "contact.email=contact"); code != ExitOK {
		t.Fatalf("keys encrypt --config: exit %d %s", code, errs)
	}
	code, out, errs := run(t, "", "erase", "--config", cfgPath, "--customer", "c-1001", "--reason", "DSR-1", "--actor", "dpo")
	if code != ExitOK {
		t.Fatalf("erase --config: exit %d %s", code, errs)
	}
	var rec vaultkeys.DestructionRecord
	if err := json.Unmarshal([]byte(out), &rec); err != nil {
		t.Fatalf("erase record: %v %s", err, out)
	}
	if want := ps.Customer("c-1001"); rec.CustomerPseudonym != want {
		t.Errorf("erase named the customer %q, the decision log names them %q", rec.CustomerPseudonym, want)
	}
	if code, _, errs := run(t, "", "keys", "replay-erasures", "--config", cfgPath); code != ExitOK {
		t.Fatalf("keys replay-erasures --config: exit %d %s", code, errs)
	}
}

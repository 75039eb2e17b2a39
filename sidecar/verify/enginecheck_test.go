package verify

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/consentry/consentry/sidecar/engine"
)

// A policy the sidecar refuses does not pass `consentry test` either, scenarios or not: the
// Rego tests compile with a bare compiler, which does not know the engine's own checks (here:
// a custom deny rule of a shape the library never consults).
func TestRunRefusesWhatTheEngineRefuses(t *testing.T) {
	files := map[string]string{
		"consentry/decision.rego":      "package consentry\n\ndecision := {\"allow\": false}\n",
		"consentry/custom/x.rego":      "package consentry.custom.x\n\ndeny := \"not a set\"\n",
		"consentry/decision_test.rego": "package consentry_test\n\nimport data.consentry\n\ntest_denies if not consentry.decision.allow\n",
	}
	for _, emptyScenarioFile := range []bool{false, true} {
		dir := t.TempDir()
		for name, body := range files {
			if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if emptyScenarioFile {
			if err := os.MkdirAll(filepath.Join(dir, engine.ScenarioDir), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, engine.ScenarioDir, "s.yaml"), []byte("scenarios: []\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		var ce *engine.CompileError
		if rep, err := Run(t.Context(), dir, Options{}); !errors.As(err, &ce) {
			t.Fatalf("empty scenario file %v: got %v (report %+v), want a compile error", emptyScenarioFile, err, rep)
		}
	}
}

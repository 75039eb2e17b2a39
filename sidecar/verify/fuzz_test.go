package verify

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/consentry/consentry/sidecar/engine"
)

// FuzzDecodeInput: arbitrary bytes either fail to decode or give an input that converts to an
// OPA value without panicking.
func FuzzDecodeInput(f *testing.F) {
	if raw, err := os.ReadFile("../../policies/examples/support-read.json"); err == nil {
		f.Add(raw)
	}
	f.Add([]byte(`{"subject": {"type": "customer"}, "enrichment": {"consents": [{"purpose": "p", "status": "granted", "expires_at": "2026-01-01T00:00:00Z"}]}}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		in, err := DecodeInput(raw)
		if err != nil {
			return
		}
		_ = in.ToValue()
	})
}

func TestDecodeInputRejectsUnknownFields(t *testing.T) {
	if _, err := DecodeInput([]byte(`{"purpse": "x"}`)); err == nil {
		t.Fatal("a typo in an input document must be an error")
	}
}

func TestMergePatch(t *testing.T) {
	got := MergePatch(map[string]any{"a": map[string]any{"b": 1, "c": 2}, "d": 3}, map[string]any{"a": map[string]any{"b": nil, "e": 4}, "d": []any{1}})
	m := got.(map[string]any)
	a := m["a"].(map[string]any)
	if _, ok := a["b"]; ok || a["c"] != 2 || a["e"] != 4 {
		t.Errorf("nested merge wrong: %v", a)
	}
	if _, ok := m["d"].([]any); !ok {
		t.Errorf("arrays replace: %v", m["d"])
	}
}

func TestLibraryScenariosPass(t *testing.T) {
	rep, err := Run(t.Context(), "../../policies", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Rego) < 90 || len(rep.Scenarios) < 27 {
		t.Errorf("expected the full library: %d rego tests, %d scenarios", len(rep.Rego), len(rep.Scenarios))
	}
	if rep.Failed() > 0 {
		var b []byte
		w := &bufWriter{&b}
		rep.Print(w, false)
		t.Fatalf("failures:\n%s", b)
	}
}

func TestFailingScenarioIsReported(t *testing.T) {
	dir := t.TempDir()
	copyTree(t, "../../policies", dir)
	bad := "principle: test\nscenarios:\n  - name: wrong expectation\n    base: support\n    expect: {allow: false, fields: {contact.email: deny}}\n"
	if err := os.WriteFile(dir+"/scenarios/zz-bad.yaml", []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	rep, err := Run(t.Context(), dir, Options{Filter: "zz-bad"})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Failed() != 1 {
		t.Fatalf("want exactly 1 failure, got %d", rep.Failed())
	}
	f := rep.Scenarios[0].Failure
	for _, want := range []string{"allow: expected false, got true", "fields.contact.email: expected deny, got allow"} {
		if !contains(f, want) {
			t.Errorf("diff %q lacks %q", f, want)
		}
	}
}

// TestScenarioUnknownKeysRejected: a mistyped key in a scenario (here in its expectation) is
// an error, not a dropped check that lets the scenario pass whatever the policy decides.
func TestScenarioUnknownKeysRejected(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, engine.ScenarioDir), 0o755); err != nil {
		t.Fatal(err)
	}
	body := "scenarios:\n  - name: typo\n    input: {}\n    expect: {allwo: true}\n"
	if err := os.WriteFile(filepath.Join(dir, engine.ScenarioDir, "s.yaml"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadScenarios(dir); err == nil || !strings.Contains(err.Error(), "allwo") {
		t.Fatalf("scenario with an unknown expectation key: %v", err)
	}
	// An empty (or comments-only) file is no scenarios, not an error.
	if err := os.WriteFile(filepath.Join(dir, engine.ScenarioDir, "s.yaml"), []byte("# nothing yet\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if sf, err := LoadScenarios(dir); err != nil || len(sf) != 1 || len(sf[0].Scenarios) != 0 {
		t.Fatalf("empty scenario file: %v", err)
	}
}

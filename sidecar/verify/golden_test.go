package verify

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/consentry/consentry/sidecar/engine"
	"github.com/consentry/consentry/sidecar/input"
)

// goldenFile holds the full decision document for every scenario and example input, made with
// the default library. The scenario files check only what each scenario is about; this file
// pins everything else (messages, every field outcome, key scopes, headers), so a rewrite of the
// library for speed must give byte-identical decisions.
//
// Regenerate (only when a decision is meant to change):
//
//	CONSENTRY_UPDATE_GOLDEN=1 go test -run TestGoldenDecisions ./sidecar/verify/
//
// CONSENTRY_GOLDEN_POLICIES=DIR makes the file from another policy directory (e.g. the
// library before a rewrite).
const goldenFile = "testdata/decisions.golden.json"

func TestGoldenDecisions(t *testing.T) {
	dir := "../../policies"
	if d := os.Getenv("CONSENTRY_GOLDEN_POLICIES"); d != "" {
		dir = d
	}
	ctx := context.Background()
	ps, err := engine.LoadDir(dir, engine.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	eng := engine.New(engine.Config{Timeout: OfflineTimeout}, slog.New(slog.DiscardHandler))
	if err := eng.Load(ctx, ps); err != nil {
		t.Fatal(err)
	}
	files, err := LoadScenarios("../../policies")
	if err != nil {
		t.Fatal(err)
	}
	inputs := map[string]*input.Input{}
	bases := map[string]map[string]any{}
	for _, f := range files {
		for _, sc := range f.Scenarios {
			in, err := scenarioInput("../../policies", bases, sc)
			if err != nil {
				t.Fatal(err)
			}
			inputs[strings.TrimSuffix(filepath.Base(f.path), ".yaml")+"/"+sc.Name] = in
		}
	}
	examples, _ := filepath.Glob("../../policies/examples/*.json")
	for _, p := range examples {
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		in, err := DecodeInput(raw)
		if err != nil {
			t.Fatal(err)
		}
		inputs["examples/"+filepath.Base(p)] = in
	}
	got := map[string]json.RawMessage{}
	for name, in := range inputs {
		res, err := eng.Decide(ctx, in)
		if err != nil && !strings.Contains(err.Error(), "evaluation") {
			t.Logf("%s: %v", name, err)
		}
		raw, err := json.Marshal(res.Decision)
		if err != nil {
			t.Fatal(err)
		}
		got[name] = raw
	}
	out, err := json.MarshalIndent(got, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	out = append(out, '\n')
	if os.Getenv("CONSENTRY_UPDATE_GOLDEN") != "" {
		if err := os.WriteFile(goldenFile, out, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s (%d decisions)", goldenFile, len(got))
		return
	}
	want, err := os.ReadFile(goldenFile)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(want, out) {
		return
	}
	var wantM map[string]json.RawMessage
	if err := json.Unmarshal(want, &wantM); err != nil {
		t.Fatal(err)
	}
	for name, g := range got {
		var a, b bytes.Buffer
		_ = json.Compact(&a, wantM[name])
		_ = json.Compact(&b, g)
		if !bytes.Equal(a.Bytes(), b.Bytes()) {
			t.Errorf("%s:\n want %s\n got  %s", name, a.String(), b.String())
		}
	}
	if len(wantM) != len(got) {
		t.Errorf("golden file has %d decisions, run made %d", len(wantM), len(got))
	}
}

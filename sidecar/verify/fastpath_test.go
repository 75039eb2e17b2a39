package verify

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"

	"github.com/consentry/consentry/sidecar/engine"
)

// The library decides the common allowed request (and its denial for want of consent or of a
// case alone) from precomputed sections (consentry.fastpath); data.consentry.decision must be
// exactly data.consentry.full_decision,
// the document every rule gives, for every input. Checked on every scenario and example input,
// and on variants of each: MFA toggled, and each catalogue role as the caller's only role.
func TestFastPathGivesFullDecision(t *testing.T) {
	const dir = "../../policies"
	ctx := context.Background()
	ps, err := engine.LoadDir(dir, engine.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	modules, err := ps.ParseModules()
	if err != nil {
		t.Fatal(err)
	}
	prepare := func(query string, data map[string]any) rego.PreparedEvalQuery {
		opts := []func(*rego.Rego){rego.Query(query), rego.Store(inmem.NewFromObject(data)), rego.Schemas(ps.SchemaSet()), rego.StrictBuiltinErrors(true)}
		for _, m := range modules {
			opts = append(opts, rego.ParsedModule(m))
		}
		pq, err := rego.New(opts...).PrepareForEval(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return pq
	}
	// The tables as the engine materializes them (computed once here, served from data).
	generated := map[string]any{}
	for _, rule := range []string{"minimization", "fastpath"} {
		rs, err := prepare("data.consentry."+rule+".tables", ps.Data).Eval(ctx)
		if err != nil || len(rs) == 0 {
			t.Fatal(rule, err)
		}
		generated[rule+"_tables"] = rs[0].Expressions[0].Value
	}
	catalog := ps.Data["consentry"].(map[string]any)["catalog"].(map[string]any)
	pq := prepare("d := data.consentry.decision; f := data.consentry.full_decision; fast := count([1 | data.consentry.fastpath.decision])",
		map[string]any{"consentry": map[string]any{"catalog": catalog, "generated": generated}})

	inputs := fastPathInputs(t, dir)
	roles := make([]string, 0, len(catalog["roles"].(map[string]any)))
	for r := range catalog["roles"].(map[string]any) {
		roles = append(roles, r)
	}
	sort.Strings(roles)
	fast, total := 0, 0
	check := func(name string, in map[string]any) {
		rs, err := pq.Eval(ctx, rego.EvalInput(in))
		if err != nil {
			// Inputs that fail evaluation (malformed on purpose) fail the same way on both paths
			// in the engine; only defined decisions are compared here.
			return
		}
		if len(rs) != 1 {
			t.Fatalf("%s: %d results", name, len(rs))
		}
		total++
		b := rs[0].Bindings
		if !reflect.DeepEqual(b["d"], b["f"]) {
			t.Errorf("%s: fast path differs from the full decision\n decision %v\n full     %v", name, b["d"], b["f"])
		}
		if n, _ := b["fast"].(json.Number).Int64(); n > 0 {
			fast++
		}
	}
	names := make([]string, 0, len(inputs))
	for n := range inputs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		in := inputs[name]
		check(name, in)
		subject, _ := in["subject"].(map[string]any)
		for _, mfa := range []bool{false, true} {
			for _, role := range append([]string{""}, roles...) {
				v := clone(t, in)
				s, _ := v["subject"].(map[string]any)
				if s == nil {
					s = map[string]any{}
					v["subject"] = s
				}
				s["mfa"] = mfa
				if role != "" {
					s["roles"] = []any{role}
				} else if subject == nil {
					continue
				}
				check(name+"/mfa="+map[bool]string{false: "no", true: "yes"}[mfa]+"/role="+role, v)
			}
		}
	}
	t.Logf("%d decisions compared, %d by the fast path", total, fast)
	if fast < 50 || fast == total {
		t.Errorf("fast path used for %d of %d decisions: the comparison does not exercise both paths", fast, total)
	}
}

// fastPathInputs are the scenario and example inputs as JSON documents.
func fastPathInputs(t *testing.T, dir string) map[string]map[string]any {
	files, err := LoadScenarios(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]any{}
	bases := map[string]map[string]any{}
	add := func(name string, v any) {
		raw, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		if err := json.Unmarshal(raw, &doc); err != nil {
			t.Fatal(err)
		}
		out[name] = doc
	}
	for _, f := range files {
		for _, sc := range f.Scenarios {
			in, err := scenarioInput(dir, bases, sc)
			if err != nil {
				t.Fatal(err)
			}
			add(strings.TrimSuffix(filepath.Base(f.path), ".yaml")+"/"+sc.Name, in)
		}
	}
	examples, _ := filepath.Glob(filepath.Join(dir, "examples", "*.json"))
	for _, p := range examples {
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		in, err := DecodeInput(raw)
		if err != nil {
			t.Fatal(err)
		}
		add("examples/"+filepath.Base(p), in)
	}
	return out
}

func clone(t *testing.T, v map[string]any) map[string]any {
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestScenarioRunCatchesShortcutDrift: a policy author changes the rules and the fast path no
// longer agrees (here: the fast path loses the assignee test of its case check). `consentry test` - and so `bundle
// build` - fails on every scenario where the two disagree, instead of shipping a policy whose
// common requests skip the changed rule.
func TestScenarioRunCatchesShortcutDrift(t *testing.T) {
	dir := t.TempDir()
	copyTree(t, "../../policies", dir)
	path := filepath.Join(dir, "consentry", "fastpath.rego")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	broken := strings.Replace(string(raw), "\n\tinput.subject.id in cs.assignees\n", "\n", 1)
	if broken == string(raw) {
		t.Fatal("fixture: the fast path no longer has an `input.subject.id in cs.assignees` line to remove")
	}
	if err := os.WriteFile(path, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	rep, err := Run(t.Context(), dir, Options{Filter: "03-case"})
	if err != nil {
		t.Fatal(err)
	}
	drift := 0
	for _, s := range rep.Scenarios {
		if strings.Contains(s.Failure, "differs from data.consentry.full_decision") {
			drift++
		}
	}
	if drift == 0 {
		t.Fatalf("a fast path without its case check must fail the case scenarios; report: %+v", rep.Scenarios)
	}
}

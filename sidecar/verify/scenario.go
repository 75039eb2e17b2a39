package verify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/consentry/consentry/sidecar/decision"
	"github.com/consentry/consentry/sidecar/engine"
	"github.com/consentry/consentry/sidecar/input"
	"github.com/open-policy-agent/opa/v1/ast"
)

// ScenarioFile is one scenarios/*.yaml file.
type ScenarioFile struct {
	// Principle names the ethical principle the scenarios exercise.
	Principle string     `yaml:"principle"`
	Scenarios []Scenario `yaml:"scenarios"`
	path      string
}

// Scenario is a request and state with the expected decision.
type Scenario struct {
	Name string `yaml:"name"`
	// Base names an input document in scenarios/bases/<base>.json.
	Base string `yaml:"base"`
	// Patch is a JSON merge patch (RFC 7386) applied to the base: objects merge, null deletes.
	Patch  map[string]any `yaml:"patch"`
	Expect Expect         `yaml:"expect"`
	line   int
}

// Expect is what the decision must contain. Unset parts are not checked.
type Expect struct {
	Allow  *bool `yaml:"allow"`
	Status int   `yaml:"status"`
	// Reasons must all be present (by code).
	Reasons []string `yaml:"reasons"`
	// NoReasons must all be absent.
	NoReasons []string `yaml:"no_reasons"`
	// Fields maps field -> "allow", "deny" or "mask:<kind>".
	Fields map[string]string `yaml:"fields"`
	// KeyScopes must equal the decision's key scopes (order ignored).
	KeyScopes *[]string `yaml:"key_scopes"`
	Flags     *[]string `yaml:"flags"`
	// Obligations lists obligation types that must be present.
	Obligations []string `yaml:"obligations"`
	// Records maps customer id -> expected allow (response phase).
	Records map[string]bool `yaml:"records"`
}

// LoadScenarios reads dir/scenarios/*.yaml.
func LoadScenarios(dir string) ([]*ScenarioFile, error) {
	paths, err := filepath.Glob(filepath.Join(dir, engine.ScenarioDir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	sort.Strings(paths)
	var out []*ScenarioFile
	for _, p := range paths {
		raw, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		var node yaml.Node
		if err := yaml.Unmarshal(raw, &node); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		sf := &ScenarioFile{path: p}
		// Unknown keys are errors: a mistyped expectation ("allwo: true") would otherwise be
		// dropped, and the scenario would pass whatever the policy decides.
		dec := yaml.NewDecoder(bytes.NewReader(raw))
		dec.KnownFields(true)
		if err := dec.Decode(sf); err != nil && !errors.Is(err, io.EOF) { // EOF: an empty file, no scenarios
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		lines := scenarioLines(&node)
		for i := range sf.Scenarios {
			if i < len(lines) {
				sf.Scenarios[i].line = lines[i]
			}
			if sf.Scenarios[i].Name == "" {
				return nil, fmt.Errorf("%s:%d: scenario without a name", p, sf.Scenarios[i].line)
			}
		}
		out = append(out, sf)
	}
	return out, nil
}

// scenarioLines returns the line of each item of the top-level "scenarios" list.
func scenarioLines(doc *yaml.Node) []int {
	if len(doc.Content) == 0 {
		return nil
	}
	m := doc.Content[0]
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == "scenarios" {
			var lines []int
			for _, item := range m.Content[i+1].Content {
				lines = append(lines, item.Line)
			}
			return lines
		}
	}
	return nil
}

// RunScenarios evaluates scenarios with the policies in dir (tests excluded).
func RunScenarios(ctx context.Context, dir string, files []*ScenarioFile, opts Options) ([]TestResult, error) {
	ps, err := engine.LoadDir(dir, engine.LoadOptions{})
	if err != nil {
		return nil, err
	}
	eng := engine.New(scenarioConfig(opts), slog.New(slog.DiscardHandler))
	if err := eng.Load(ctx, ps); err != nil {
		return nil, err
	}
	return runScenarios(ctx, dir, ps, eng, files, opts)
}

// scenarioConfig is the engine configuration scenarios are decided with.
func scenarioConfig(opts Options) engine.Config {
	ec := opts.Engine
	if ec.Timeout == 0 {
		// Offline runs are not on a request path; a loaded CI machine must not turn a slow
		// evaluation into a failed scenario.
		ec.Timeout = OfflineTimeout
	}
	return ec
}

// runScenarios decides the scenarios with eng, which has ps (dir's policies, tests excluded)
// loaded.
func runScenarios(ctx context.Context, dir string, ps *engine.PolicySet, eng *engine.Engine, files []*ScenarioFile, opts Options) ([]TestResult, error) {
	ec := scenarioConfig(opts)
	// A policy that decides some requests through a shortcut (the library's fast path) also
	// defines full_decision, the document every rule gives: each scenario is decided both ways
	// and must agree, so a rule change the shortcut does not know about fails here instead of
	// being skipped silently in production.
	var full *engine.Engine
	if definesFullDecision(ps) {
		fc := ec
		fc.Query = FullDecisionQuery
		full = engine.New(fc, slog.New(slog.DiscardHandler))
		if err := full.Load(ctx, ps); err != nil {
			return nil, err
		}
	}
	bases := map[string]map[string]any{}
	var out []TestResult
	for _, f := range files {
		for _, sc := range f.Scenarios {
			name := strings.TrimSuffix(filepath.Base(f.path), ".yaml") + "/" + sc.Name
			if opts.Filter != "" && !strings.Contains(name, opts.Filter) {
				continue
			}
			tr := TestResult{Name: name, Location: fmt.Sprintf("%s:%d", f.path, sc.line)}
			in, err := scenarioInput(dir, bases, sc)
			if err != nil {
				tr.Failure = "bad scenario: " + err.Error()
				out = append(out, tr)
				continue
			}
			res, derr := eng.Decide(ctx, in)
			diffs := sc.Expect.check(res.Decision)
			if derr != nil {
				diffs = append([]string{"engine error: " + derr.Error()}, diffs...)
			}
			if full != nil && derr == nil {
				if d := shortcutDiff(ctx, full, in, res.Decision); d != "" {
					diffs = append(diffs, d)
				}
			}
			tr.Pass = len(diffs) == 0
			tr.Failure = strings.Join(diffs, "\n")
			out = append(out, tr)
		}
	}
	return out, nil
}

// FullDecisionQuery is the document every rule of the library gives, without shortcuts.
const FullDecisionQuery = "data.consentry.full_decision"

func definesFullDecision(ps *engine.PolicySet) bool {
	mods, err := ps.ParseModules()
	if err != nil {
		return false
	}
	want := ast.MustParseRef(FullDecisionQuery)
	for _, m := range mods {
		for _, r := range m.Rules {
			if m.Package.Path.Extend(r.Head.Ref()).Equal(want) {
				return true
			}
		}
	}
	return false
}

// shortcutDiff decides in with the full rules and describes how the decision differs ("" when
// it does not).
func shortcutDiff(ctx context.Context, full *engine.Engine, in *input.Input, got *decision.Decision) string {
	fres, err := full.Decide(ctx, in)
	if err != nil {
		return "full_decision: " + err.Error()
	}
	a, _ := json.Marshal(got)
	b, _ := json.Marshal(fres.Decision)
	if bytes.Equal(a, b) {
		return ""
	}
	return fmt.Sprintf("data.consentry.decision differs from data.consentry.full_decision (a shortcut such as consentry.fastpath disagrees with the full rules; see docs/policy-library.md):\n  decision:      %s\n  full_decision: %s", a, b)
}

func scenarioInput(dir string, bases map[string]map[string]any, sc Scenario) (*input.Input, error) {
	doc := map[string]any{}
	if sc.Base != "" {
		base, ok := bases[sc.Base]
		if !ok {
			raw, err := os.ReadFile(filepath.Join(dir, engine.ScenarioDir, "bases", sc.Base+".json"))
			if err != nil {
				return nil, fmt.Errorf("base %q: %w", sc.Base, err)
			}
			if err := json.Unmarshal(raw, &base); err != nil {
				return nil, fmt.Errorf("base %q: %w", sc.Base, err)
			}
			bases[sc.Base] = base
		}
		doc = deepCopy(base).(map[string]any)
	}
	merged := MergePatch(doc, normalizeYAML(sc.Patch))
	raw, err := json.Marshal(merged)
	if err != nil {
		return nil, err
	}
	return DecodeInput(raw)
}

// DecodeInput decodes an input document strictly: unknown fields are an error (a typo in a
// scenario or an input file must not silently become an absent value).
func DecodeInput(raw []byte) (*input.Input, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var in input.Input
	if err := dec.Decode(&in); err != nil {
		return nil, err
	}
	return &in, nil
}

// MergePatch applies an RFC 7386 JSON merge patch.
func MergePatch(target any, patch any) any {
	pm, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	tm, ok := target.(map[string]any)
	if !ok {
		tm = map[string]any{}
	}
	for k, v := range pm {
		if v == nil {
			delete(tm, k)
			continue
		}
		tm[k] = MergePatch(tm[k], v)
	}
	return tm
}

func normalizeYAML(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			out[k] = normalizeYAML(e)
		}
		return out
	case map[any]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			out[fmt.Sprint(k)] = normalizeYAML(e)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = normalizeYAML(e)
		}
		return out
	}
	return v
}

func deepCopy(v any) any {
	raw, _ := json.Marshal(v)
	var out any
	_ = json.Unmarshal(raw, &out)
	return out
}

// check compares a decision with the expectation and returns one line per difference.
func (e Expect) check(d *decision.Decision) []string {
	var diffs []string
	add := func(format string, args ...any) { diffs = append(diffs, fmt.Sprintf(format, args...)) }
	codes := map[string]bool{}
	for _, r := range d.Reasons {
		codes[r.Code] = true
	}
	got := strings.Join(d.ReasonCodes(), ", ")
	if e.Allow != nil && d.Allow != *e.Allow {
		add("allow: expected %v, got %v (reasons: %s)", *e.Allow, d.Allow, got)
	}
	if e.Status != 0 && d.Status != e.Status {
		add("status: expected %d, got %d (reasons: %s)", e.Status, d.Status, got)
	}
	for _, c := range e.Reasons {
		if !codes[c] {
			add("reasons: expected %s, got [%s]", c, got)
		}
	}
	for _, c := range e.NoReasons {
		if codes[c] {
			add("reasons: did not expect %s, got [%s]", c, got)
		}
	}
	names := make([]string, 0, len(e.Fields))
	for n := range e.Fields {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		want := e.Fields[n]
		f, ok := d.Fields[n]
		have := "absent"
		if ok {
			have = f.Outcome
			if f.Outcome == decision.OutcomeMask {
				have += ":" + f.Mask
			}
		}
		if have != want {
			add("fields.%s: expected %s, got %s", n, want, have)
		}
	}
	if e.KeyScopes != nil && !sameSet(*e.KeyScopes, d.KeyScopes) {
		add("key_scopes: expected %v, got %v", *e.KeyScopes, d.KeyScopes)
	}
	if e.Flags != nil && !sameSet(*e.Flags, d.Flags) {
		add("flags: expected %v, got %v", *e.Flags, d.Flags)
	}
	for _, o := range e.Obligations {
		found := false
		for _, have := range d.Obligations {
			found = found || have.Type == o
		}
		if !found {
			add("obligations: expected %s, got %v", o, d.Obligations)
		}
	}
	for id, want := range e.Records {
		r, ok := d.Records[id]
		switch {
		case !ok:
			add("records.%s: expected allow=%v, got no record", id, want)
		case r.Allow != want:
			codes := make([]string, len(r.Reasons))
			for i, x := range r.Reasons {
				codes[i] = x.Code
			}
			add("records.%s: expected allow=%v, got %v (reasons: %s)", id, want, r.Allow, strings.Join(codes, ", "))
		}
	}
	return diffs
}

func sameSet(a, b []string) bool {
	x := append([]string(nil), a...)
	y := append([]string(nil), b...)
	sort.Strings(x)
	sort.Strings(y)
	if len(x) == 0 && len(y) == 0 {
		return true
	}
	return reflect.DeepEqual(x, y)
}

// Package verify runs a policy directory's tests: the Rego unit tests (*_test.rego, the same
// tests `opa test` runs) and the scenario files (scenarios/*.yaml: request + state -> expected
// allow, status, reasons, fields), and reports failures with a readable diff. It backs
// `consentry test` and `consentry bundle build`.
package verify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"

	"github.com/consentry/consentry/sidecar/engine"
)

// Options tune Run.
type Options struct {
	// Filter runs only Rego tests and scenarios whose name matches this substring.
	Filter string
	// SkipScenarios runs only the Rego tests.
	SkipScenarios bool
	// Engine is the engine configuration scenarios are evaluated with (capabilities, timeout).
	Engine engine.Config
}

// Report is the outcome of a run.
type Report struct {
	Rego      []TestResult
	Scenarios []TestResult
}

// TestResult is one test or scenario.
type TestResult struct {
	Name     string
	Location string
	Pass     bool
	// Failure explains a failure: for scenarios, a diff of expected vs actual.
	Failure  string
	Duration time.Duration
}

// Failed returns the number of failed tests and scenarios.
func (r *Report) Failed() int {
	n := 0
	for _, t := range append(append([]TestResult(nil), r.Rego...), r.Scenarios...) {
		if !t.Pass {
			n++
		}
	}
	return n
}

// Print writes a human-readable report: failures in full, then a summary line.
func (r *Report) Print(w io.Writer, verbose bool) {
	print := func(kind string, ts []TestResult) {
		for _, t := range ts {
			if t.Pass && !verbose {
				continue
			}
			status := "PASS"
			if !t.Pass {
				status = "FAIL"
			}
			fmt.Fprintf(w, "%s %s %s (%s)\n", status, kind, t.Name, t.Location)
			if t.Failure != "" {
				fmt.Fprintf(w, "    %s\n", strings.ReplaceAll(strings.TrimRight(t.Failure, "\n"), "\n", "\n    "))
			}
		}
	}
	print("rego", r.Rego)
	print("scenario", r.Scenarios)
	total := len(r.Rego) + len(r.Scenarios)
	fmt.Fprintf(w, "rego tests: %d, scenarios: %d\n%d passed, %d failed\n", len(r.Rego), len(r.Scenarios), total-r.Failed(), r.Failed())
}

// Run runs the tests of the policy directory dir. A compile error is returned as
// *engine.CompileError (the CLI's "does not compile" exit code); failures are in the Report.
// ErrScenarioFile wraps a scenario file that cannot be read as written (YAML syntax, an
// unknown key): the tests cannot run, which the CLI reports like failed tests.
var ErrScenarioFile = errors.New("scenario file invalid")

func Run(ctx context.Context, dir string, opts Options) (*Report, error) {
	// The policy the sidecar would run (tests excluded) first passes the engine's own checks,
	// scenarios or not: the Rego tests compile with a bare compiler, which knows nothing of
	// the custom-rule shapes, the decision query or the materialized tables, so a policy the
	// sidecar refuses would otherwise pass. The engine loaded here decides the scenarios.
	policy, err := engine.LoadDir(dir, engine.LoadOptions{})
	if err != nil {
		return nil, err
	}
	eng := engine.New(scenarioConfig(opts), slog.New(slog.DiscardHandler))
	if err := eng.Load(ctx, policy); err != nil {
		return nil, err
	}
	ps, err := engine.LoadDir(dir, engine.LoadOptions{Tests: true})
	if err != nil {
		return nil, err
	}
	rep := &Report{}
	if rep.Rego, err = runRego(ctx, ps, opts); err != nil {
		return nil, err
	}
	if opts.SkipScenarios {
		return rep, nil
	}
	scenarios, err := LoadScenarios(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrScenarioFile, err)
	}
	if len(scenarios) > 0 {
		if rep.Scenarios, err = runScenarios(ctx, dir, policy, eng, scenarios, opts); err != nil {
			return nil, err
		}
	}
	return rep, nil
}

func runRego(ctx context.Context, ps *engine.PolicySet, opts Options) ([]TestResult, error) {
	modules, err := ps.ParseModules()
	if err != nil {
		return nil, err
	}
	compiler := ast.NewCompiler().
		WithSchemas(ps.SchemaSet()).
		WithCapabilities(engine.RestrictedCapabilities(opts.Engine)).
		WithEnablePrintStatements(true).
		WithStrict(true)
	store := inmem.NewFromObject(ps.Data)
	runner := tester.NewRunner().
		SetCompiler(compiler).
		SetStore(store).
		SetModules(modules).
		CapturePrintOutput(true).
		RaiseBuiltinErrors(true).
		SetDefaultRegoVersion(ast.RegoV1).
		SetTimeout(30 * time.Second)
	if opts.Filter != "" {
		runner = runner.Filter(opts.Filter)
	}
	ch, err := runner.RunTests(ctx, nil)
	if err != nil {
		var ae ast.Errors
		if errors.As(err, &ae) {
			return nil, compileErr(ae)
		}
		return nil, fmt.Errorf("run rego tests: %w", err)
	}
	var out []TestResult
	for r := range ch {
		tr := TestResult{Name: strings.TrimPrefix(r.Package, "data.") + "." + r.Name, Pass: r.Pass(), Duration: r.Duration}
		if r.Location != nil {
			tr.Location = fmt.Sprintf("%s:%d", r.Location.File, r.Location.Row)
		}
		switch {
		case r.Error != nil:
			tr.Failure = "error: " + r.Error.Error()
		case r.Fail && r.FailedAt != nil:
			tr.Failure = fmt.Sprintf("failed at %s:%d: %s", r.FailedAt.Location.File, r.FailedAt.Location.Row, r.FailedAt.String())
		case r.Fail:
			tr.Failure = "failed"
		}
		if len(r.Output) > 0 && !tr.Pass {
			tr.Failure += "\nprint output:\n" + string(r.Output)
		}
		out = append(out, tr)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Location < out[j].Location })
	return out, nil
}

func compileErr(ae ast.Errors) error {
	ce := &engine.CompileError{}
	for _, e := range ae {
		loc := "?"
		if e.Location != nil {
			loc = fmt.Sprintf("%s:%d:%d", e.Location.File, e.Location.Row, e.Location.Col)
		}
		ce.Errs = append(ce.Errs, fmt.Sprintf("%s: %s: %s", loc, e.Code, e.Message))
	}
	return ce
}

// OfflineTimeout bounds one evaluation in offline tools (scenario runs, eval, replay) when the
// caller set none. They are not on a request path, so the 50ms production default would only
// make results depend on how loaded the machine is.
const OfflineTimeout = 10 * time.Second

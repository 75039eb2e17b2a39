package build

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/consentry/consentry/sidecar/engine"
	"github.com/consentry/consentry/sidecar/verify"
)

// TestReport summarizes a policy test run (Rego unit tests and scenarios).
type TestReport struct {
	Total, Passed, Failed int
	// Failures are "name (file:line): what failed" lines.
	Failures []string
}

// RunTests runs a policy directory's tests with the shared runner behind `consentry test`
// (package verify): the *_test.rego tests, as `opa test DIR -s schema` would, and the
// scenarios/ files. A compile error in a test is an *engine.CompileError.
func RunTests(ctx context.Context, dir string, cfg engine.Config) (*TestReport, error) {
	// Tests check what policies decide, not how fast: a loaded CI machine must not turn the
	// 50ms evaluation deadline into a failed build.
	cfg.Timeout = max(cfg.Timeout, 10*time.Second)
	rep, err := verify.Run(ctx, dir, verify.Options{Engine: cfg})
	if err != nil {
		return nil, err
	}
	out := &TestReport{}
	for _, list := range [][]verify.TestResult{rep.Rego, rep.Scenarios} {
		for _, r := range list {
			out.Total++
			if r.Pass {
				out.Passed++
				continue
			}
			out.Failed++
			out.Failures = append(out.Failures, fmt.Sprintf("%s (%s): %s", r.Name, r.Location, strings.ReplaceAll(strings.TrimSpace(r.Failure), "\n", "; ")))
		}
	}
	return out, nil
}

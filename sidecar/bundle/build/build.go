// Package build is the policy author's side of bundles: `consentry bundle build` turns a
// policy directory into an OPA bundle after proving it compiles strictly (schema
// type-check, restricted capabilities) and passes its tests; Sign, Verify and Inspect work
// on bundle tarballs with OPA's bundle package, so bundles interoperate with `opa build`,
// `opa sign`, `opa run` and `opa eval -b`.
package build

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/consentry/consentry/sidecar/bundle"
	"github.com/consentry/consentry/sidecar/engine"
	"github.com/consentry/consentry/sidecar/routes"
)

// Options tune Build.
type Options struct {
	// Revision is the manifest revision. Default: an RFC 3339 timestamp (UTC, now) plus a
	// content hash, which orders correctly under anti-rollback.
	Revision string
	// SkipTests builds without running the policy tests (*_test.rego).
	SkipTests bool
	// Engine is the engine configuration the policies must compile under (capabilities).
	Engine engine.Config
	// Sign, when set, signs the bundle.
	Sign *SignOptions
	// MaxSizeBytes is the sidecar's policy.max_size_bytes the bundle must fit (see maxSize):
	// Build refuses (too_large) a bundle such a sidecar would refuse.
	MaxSizeBytes int64
	// Now is the clock for the default revision (tests).
	Now func() time.Time
}

// Result is a built bundle.
type Result struct {
	Tarball  []byte
	Revision string
	Roots    []string
	Modules  int
	Tests    *TestReport // nil when tests were skipped
}

// ErrTestsFailed is wrapped by Build's error when policy tests fail.
var ErrTestsFailed = errors.New("policy tests failed")

// Build compiles, tests and packages the policy directory dir. A compile or type-check
// failure returns an *engine.CompileError (one that does not finish within
// engine.activation_timeout, an error wrapping engine.ErrActivationTimeout); a policy without
// data.consentry.decision, a no_decision *bundle.RejectError; a bundle a sidecar with
// policy.max_size_bytes opts.MaxSizeBytes would refuse, a too_large one; failing tests return an error
// wrapping ErrTestsFailed (with the report in the Result), a scenario file that cannot be
// read one wrapping verify.ErrScenarioFile.
func Build(ctx context.Context, dir string, opts Options) (*Result, error) {
	ps, err := engine.LoadDir(dir, engine.LoadOptions{})
	if err != nil {
		return nil, err
	}
	quiet := slog.New(slog.DiscardHandler)
	if err := engine.New(opts.Engine, quiet).Check(ctx, ps); err != nil {
		return nil, err
	}
	if _, _, err := routes.FromData(ps.Data); err != nil {
		// A sidecar with routes.from_bundle refuses the bundle whole (compile), so does build.
		return nil, &engine.CompileError{Errs: []string{err.Error()}}
	}
	rev := opts.Revision
	if rev == "" {
		now := time.Now
		if opts.Now != nil {
			now = opts.Now
		}
		rev = bundle.NewRevision(now(), bundle.ContentHash(ps))
	}
	b, err := bundle.FromPolicySet(dir, ps, rev)
	if err != nil {
		return nil, err
	}
	// The sidecar and `bundle verify` refuse a bundle without the one rule it evaluates
	// (no_decision); --skip-tests must not be how such a bundle gets built and signed.
	if err := (&bundle.Verified{Bundle: *b, Revision: rev}).RequireDecision(); err != nil {
		return nil, err
	}
	res := &Result{Modules: len(ps.Modules)}
	if !opts.SkipTests {
		rep, err := RunTests(ctx, dir, opts.Engine)
		if err != nil {
			return nil, err
		}
		res.Tests = rep
		if rep.Failed > 0 {
			return res, fmt.Errorf("%w: %d of %d failed", ErrTestsFailed, rep.Failed, rep.Total)
		}
	}
	if opts.Sign != nil {
		if err := signBundle(b, *opts.Sign); err != nil {
			return nil, err
		}
	}
	if res.Tarball, err = bundle.WriteTarball(b); err != nil {
		return nil, err
	}
	// What `bundle sign` and the sidecar check (the tarball as the sidecar reads it): a bundle
	// every sidecar under this limit refuses is neither written nor left signed.
	if err := checkSize(res.Tarball, maxSize(opts.MaxSizeBytes)); err != nil {
		return nil, err
	}
	res.Revision = rev
	res.Roots = *b.Manifest.Roots
	return res, nil
}

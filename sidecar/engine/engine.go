// Package engine evaluates consentry's single policy query (data.consentry.decision) with the
// OPA v1 rego package. It compiles a PolicySet strictly (schema type-checked, restricted
// capabilities), keeps one prepared query and swaps it atomically when policies change, bounds
// every evaluation by a deadline, and turns every failure into a coded deny: an evaluation
// error, an undefined decision or a malformed one is never an allow and never a panic.
package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/topdown/print"

	"github.com/consentry/consentry/sidecar/decision"
	"github.com/consentry/consentry/sidecar/input"
	"github.com/consentry/consentry/sidecar/routes"
)

// Engine evaluates decisions. It is safe for concurrent use.
type Engine struct {
	cfg    Config
	log    *slog.Logger
	active atomic.Pointer[Prepared]
	// pool runs evaluations on long-lived goroutines (nil: on the caller's).
	pool *evaluators
	// noMaterialize skips materialize (tests compare decisions with and without it).
	noMaterialize bool
	// noFrozenBase evaluates without the shared base-document cache (tests and benchmarks
	// compare).
	noFrozenBase bool
}

// prepared is one compiled policy revision. In-flight evaluations keep the pointer they
// started with, so a swap never changes the policy under a running evaluation (and a caller
// that took the policy from Active keeps it across its evaluations).
type prepared struct {
	query rego.PreparedEvalQuery
	// base serves data.* to every evaluation (see frozenBase); nil evaluates without it.
	base     *frozenBase
	revision string
	bundles  map[string]string
	loadedAt time.Time
}

// Result is one decision with the policy revision that made it.
type Result struct {
	Decision *decision.Decision
	// Revision and Bundles identify the policy that decided.
	Revision string
	Bundles  map[string]string
	// EvalNS is the evaluation time in nanoseconds.
	EvalNS int64
}

// New returns an engine with no policy loaded: until Load succeeds every decision is a deny
// with engine.not_ready (503).
func New(cfg Config, log *slog.Logger) *Engine {
	if log == nil {
		log = slog.Default()
	}
	cfg = cfg.WithDefaults()
	return &Engine{cfg: cfg, log: log, pool: newEvaluators(cfg.evaluators())}
}

// EvaluatorStats is a snapshot of the evaluator pool.
type EvaluatorStats struct {
	// Bound is engine.evaluators in effect (0: evaluations run on the callers' goroutines).
	Bound int
	// Busy is how many evaluations are running now.
	Busy int
	// Waiting is how many callers wait for a free evaluator now.
	Waiting int
}

// EvaluatorStats reports the evaluator pool's current load.
func (e *Engine) EvaluatorStats() EvaluatorStats {
	if e.pool == nil {
		return EvaluatorStats{}
	}
	return EvaluatorStats{Bound: int(e.pool.max), Busy: int(e.pool.busy.Load()), Waiting: int(e.pool.waiting.Load())}
}

// Ready reports whether a policy is active.
func (e *Engine) Ready() bool { return e.active.Load() != nil }

// Revision returns the active revision and bundles ("" when none is active).
func (e *Engine) Revision() (string, map[string]string) {
	return e.active.Load().Revision()
}

// Active returns the active policy (nil when none is). A caller that must decide with one
// policy across several steps (route a request with the route map published with the policy,
// then evaluate it; evaluate a list's response phase as its request phase was) takes it once
// and passes it to DecideWith: a Load in between changes nothing for it.
func (e *Engine) Active() *Prepared { return e.active.Load() }

// Load compiles ps and, only if it compiles, makes it the active policy. A failed Load leaves
// the previous policy active.
func (e *Engine) Load(ctx context.Context, ps *PolicySet) error {
	p, err := e.Prepare(ctx, ps)
	if err != nil {
		return err
	}
	e.Activate(p)
	return nil
}

// Prepared is a policy set compiled by Prepare: not active yet, or (from Active) the active
// one. It never changes once made.
type Prepared struct {
	p       *prepared
	modules int
	// by is the engine that prepared it (see Owns).
	by *Engine
	// routes is the route map published with the policy (WithRoutes), nil for none.
	routes *routes.Map
	// gen tells this compile from every other one of the process (see CacheID).
	gen uint64
}

// preparedGen numbers compiles (Prepare), process-wide.
var preparedGen atomic.Uint64

// WithRoutes returns p carrying m, the route map whose routes (names, actions, customer
// binding) the policy decides: Activate publishes both in one atomic swap, so a request
// routed with m (Routes of the policy it took from Active) is decided by this policy.
func (p *Prepared) WithRoutes(m *routes.Map) *Prepared {
	c := *p
	c.routes = m
	return &c
}

// Routes returns the route map published with p (nil when p is nil or carries none).
func (p *Prepared) Routes() *routes.Map {
	if p == nil {
		return nil
	}
	return p.routes
}

// Revision returns p's revision and bundles ("" when p is nil).
func (p *Prepared) Revision() (string, map[string]string) {
	if p == nil {
		return "", nil
	}
	return p.p.revision, p.p.bundles
}

// CacheID names p for a cache of its decisions: its revision and which compile it is. The
// revision alone is not enough: a bundle republished with other policies under the same
// revision (a hot fix without a new .manifest revision) is accepted, and its decisions must
// not be served from the previous policy's ("" when p is nil).
func (p *Prepared) CacheID() string {
	if p == nil || p.p.revision == "" {
		return ""
	}
	return p.p.revision + "#" + strconv.FormatUint(p.gen, 10)
}

// Prepare compiles ps (within engine.activation_timeout) without activating it, for a caller
// that must swap something else in step with the policy (the route map of a bundle) between
// the compile, which may fail, and the swap, which cannot.
func (e *Engine) Prepare(ctx context.Context, ps *PolicySet) (*Prepared, error) {
	p, err := e.compile(ctx, ps)
	if err != nil {
		return nil, err
	}
	return &Prepared{p: p, modules: len(ps.Modules), by: e, gen: preparedGen.Add(1)}, nil
}

// Owns reports whether p was prepared by e (and so is, or was, a policy of e's): a caller
// holding a policy taken elsewhere (another engine's) decides with e's own instead.
func (e *Engine) Owns(p *Prepared) bool { return p != nil && p.by == e }

// Activate makes p, prepared by this engine, the active policy (with its route map, if it
// carries one): one atomic swap.
func (e *Engine) Activate(p *Prepared) {
	e.active.Store(p)
	e.log.Debug("policy activated", "revision", p.p.revision, "bundles", p.p.bundles, "modules", p.modules)
}

// Check compiles ps without activating it (used by `bundle build` and tests).
func (e *Engine) Check(ctx context.Context, ps *PolicySet) error {
	_, err := e.compile(ctx, ps)
	return err
}

// ErrActivationTimeout is wrapped by the error of a Load or Check that did not compile the
// policy and compute its tables within engine.activation_timeout.
var ErrActivationTimeout = errors.New("policy activation timed out")

func (e *Engine) compile(ctx context.Context, ps *PolicySet) (*prepared, error) {
	// OPA's evaluator stops at the deadline (a materialized rule is evaluated under ctx), so a
	// rule that loops for hours costs at most activation_timeout of the activating goroutine.
	limit := e.cfg.ActivationTimeout
	ctx, cancel := context.WithTimeoutCause(ctx, limit, ErrActivationTimeout)
	defer cancel()
	p, err := e.compileWithin(ctx, ps)
	if err != nil {
		switch cause := context.Cause(ctx); {
		case cause == nil:
		case errors.Is(cause, ErrActivationTimeout):
			return nil, fmt.Errorf("%w: the policy did not compile and compute its tables within engine.activation_timeout (%s): %v", ErrActivationTimeout, limit, err)
		default: // the caller gave up (shutdown): nothing is wrong with the policy
			return nil, fmt.Errorf("policy activation interrupted: %w", cause)
		}
	}
	return p, err
}

func (e *Engine) compileWithin(ctx context.Context, ps *PolicySet) (*prepared, error) {
	modules, err := ps.ParseModules()
	if err != nil {
		return nil, err
	}
	if err := checkCustomRules(modules); err != nil {
		return nil, err
	}
	if err := checkCustomData(ps.Data); err != nil {
		return nil, err
	}
	store := newStore(ps.Data)
	var compiler *ast.Compiler
	opts := append(e.regoOptions(ps, modules, store), rego.CompilerHook(func(c *ast.Compiler) { compiler = c }))
	pq, err := rego.New(opts...).PrepareForEval(ctx)
	if err != nil {
		return nil, &CompileError{Errs: astErrors(err)}
	}
	if !e.noMaterialize && compiler != nil {
		if err := materialize(ctx, compiler, store); err != nil {
			return nil, err
		}
	}
	base, err := newFrozenBase(ctx, store)
	if err != nil {
		return nil, &CompileError{Errs: []string{fmt.Sprintf("read policy data: %v", err)}}
	}
	internCatalog(ps.Data)
	rev := ps.Revision
	if rev == "" {
		rev = noRevisionID
	}
	return &prepared{query: pq, base: base, revision: rev, bundles: ps.Bundles, loadedAt: time.Now()}, nil
}

func (e *Engine) regoOptions(ps *PolicySet, modules map[string]*ast.Module, store storage.Store) []func(*rego.Rego) {
	opts := []func(*rego.Rego){
		rego.Query(cmp.Or(e.cfg.Query, decision.Query)),
		rego.SetRegoVersion(ast.RegoV1),
		rego.Store(store),
		rego.Capabilities(e.capabilities()),
		rego.Strict(true),
		rego.StrictBuiltinErrors(!e.cfg.NonStrictBuiltinErrors),
		rego.EnablePrintStatements(true),
		rego.PrintHook(printHook{log: e.log}),
	}
	if len(ps.Schemas) > 0 {
		opts = append(opts, rego.Schemas(ps.SchemaSet()))
	}
	for _, m := range modules {
		opts = append(opts, rego.ParsedModule(m))
	}
	return opts
}

// newStore builds the base-document store. Values are kept as AST values (no conversion of
// the catalogue from Go maps on every read) and are not JSON round-tripped on write: the data
// comes from our own loader or bundle reader, already JSON-shaped.
func newStore(data map[string]any) storage.Store {
	if data == nil {
		data = map[string]any{}
	}
	return inmem.NewFromObjectWithOpts(data, inmem.OptRoundTripOnWrite(false), inmem.OptReturnASTValuesOnRead(true))
}

// capabilities removes the built-ins that must not run on the hot path unless configured.
func (e *Engine) capabilities() *ast.Capabilities {
	return RestrictedCapabilities(e.cfg)
}

// RestrictedCapabilities returns OPA's capabilities less http.send, net.* and opa.runtime
// (each unless allowed by cfg). Exported so `bundle build` checks against the same set.
func RestrictedCapabilities(cfg Config) *ast.Capabilities {
	caps := ast.CapabilitiesForThisVersion()
	kept := caps.Builtins[:0:0]
	for _, b := range caps.Builtins {
		switch {
		case b.Name == "http.send" && !cfg.AllowHTTPSend:
			continue
		case strings.HasPrefix(b.Name, "net.") && !cfg.AllowNet:
			continue
		case b.Name == "opa.runtime" && !cfg.AllowRuntime:
			continue
		}
		kept = append(kept, b)
	}
	caps.Builtins = kept
	return caps
}

// Decide evaluates the decision for in. It always returns a Result with a usable Decision:
// on any failure the Decision is a deny carrying the failure's reason code, and the error
// (an *Error) says what went wrong.
func (e *Engine) Decide(ctx context.Context, in *input.Input) (*Result, error) {
	return e.DecideWith(ctx, e.active.Load(), in)
}

// DecideWith is Decide with pol (from Active or Prepare of this engine) instead of the active
// policy; a nil pol decides as when no policy is active (engine.not_ready).
func (e *Engine) DecideWith(ctx context.Context, pol *Prepared, in *input.Input) (*Result, error) {
	res, err := e.decide(ctx, pol, in, nil)
	if err != nil {
		var ce *Error
		if !errors.As(err, &ce) {
			ce = codedError(decision.ReasonEngineError, http.StatusServiceUnavailable, err)
		}
		res.Decision = denyFor(ce)
		return res, ce
	}
	return res, nil
}

func (e *Engine) decide(ctx context.Context, pol *Prepared, in *input.Input, tracer topdown.QueryTracer) (*Result, error) {
	res := &Result{}
	if pol == nil {
		return res, codedError(decision.ReasonEngineNotReady, http.StatusServiceUnavailable, errors.New("no policy is active"))
	}
	p := pol.p
	res.Revision, res.Bundles = p.revision, p.bundles
	if in == nil {
		return res, codedError(decision.ReasonEngineError, http.StatusBadRequest, errors.New("no input"))
	}
	ctx, cancel := e.bound(ctx)
	defer cancel()
	// A panic inside evaluation (a bug in a built-in, say) must not take the sidecar down: the
	// pool recovers it and returns it as an error.
	var evalErr error
	if perr := e.pool.run(ctx, func() { evalErr = e.evaluate(ctx, p, in, tracer, res) }); perr != nil {
		if ctx.Err() != nil {
			return res, codedError(decision.ReasonEngineTimeout, http.StatusServiceUnavailable, perr)
		}
		return res, codedError(decision.ReasonEngineError, http.StatusServiceUnavailable, perr)
	}
	return res, evalErr
}

// evaluate runs the prepared query of p on in and decodes the decision into res. It runs on
// an evaluator (see evaluators), so it recovers nothing itself.
func (e *Engine) evaluate(ctx context.Context, p *prepared, in *input.Input, tracer topdown.QueryTracer, res *Result) error {
	// No per-evaluation metrics (the engine times evaluations itself): OPA would allocate a
	// metrics registry for every decision.
	evalOpts := []rego.EvalOption{rego.EvalParsedInput(in.ToValue()), rego.EvalGenerateJSON(keepTerm), rego.EvalMetrics(metrics.NoOp())}
	if p.base != nil && !e.noFrozenBase {
		evalOpts = append(evalOpts, rego.EvalBaseCache(p.base))
	}
	if tracer != nil {
		evalOpts = append(evalOpts, rego.EvalQueryTracer(tracer))
	}
	if e.cfg.ClockFromInput && !in.Time.Now.IsZero() {
		evalOpts = append(evalOpts, rego.EvalTime(in.Time.Now))
	}
	start := time.Now()
	rs, err := p.query.Eval(ctx, evalOpts...)
	res.EvalNS = time.Since(start).Nanoseconds()
	if err == nil && ctx.Err() != nil {
		// OPA notices cancellation asynchronously; an evaluation quicker than that must not
		// turn a request that was already cancelled or past its deadline into an allow.
		err = ctx.Err()
	}
	if err != nil {
		if ctx.Err() != nil || topdown.IsCancel(err) {
			return codedError(decision.ReasonEngineTimeout, http.StatusServiceUnavailable, fmt.Errorf("evaluation did not finish in time: %w", err))
		}
		return codedError(decision.ReasonEngineError, http.StatusServiceUnavailable, fmt.Errorf("evaluation failed: %w", err))
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return codedError(decision.ReasonEngineUndefined, http.StatusServiceUnavailable, fmt.Errorf("%s is undefined", decision.Query))
	}
	t, ok := rs[0].Expressions[0].Value.(*ast.Term)
	if !ok {
		return codedError(decision.ReasonEngineInvalid, http.StatusServiceUnavailable, fmt.Errorf("%s: result is %T, not a value", decision.Query, rs[0].Expressions[0].Value))
	}
	d, err := decision.FromValue(t.Value)
	if err != nil {
		return codedError(decision.ReasonEngineInvalid, http.StatusServiceUnavailable, err)
	}
	res.Decision = d
	return nil
}

// keepTerm leaves the query result as OPA's value: the decision is decoded from it directly
// (decision.FromValue), without converting it to Go maps and slices first.
func keepTerm(t *ast.Term, _ *rego.EvalContext) (any, error) { return t, nil }

// bound applies the configured timeout unless the caller's deadline is earlier.
func (e *Engine) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= e.cfg.Timeout {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, e.cfg.Timeout)
}

// printHook sends print() output to the structured log with its source location.
type printHook struct{ log *slog.Logger }

var _ print.Hook = printHook{}

func (h printHook) Print(pc print.Context, msg string) error {
	loc := ""
	if pc.Location != nil {
		loc = fmt.Sprintf("%s:%d", pc.Location.File, pc.Location.Row)
	}
	h.log.Info("policy print", "location", loc, "message", msg)
	return nil
}

// Package app assembles a running sidecar from its configuration: the engine and its policy
// source, the state store, Vault key release, the decision log, the front doors (ext_authz,
// ext_proc, HTTP proxy) and the admin listener. It owns their lifecycles: everything starts in
// dependency order and stops in reverse on shutdown.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/consentry/consentry/sidecar/admin"
	"github.com/consentry/consentry/sidecar/audit"
	"github.com/consentry/consentry/sidecar/auditlog"
	"github.com/consentry/consentry/sidecar/bundle"
	"github.com/consentry/consentry/sidecar/config"
	"github.com/consentry/consentry/sidecar/consent"
	"github.com/consentry/consentry/sidecar/engine"
	"github.com/consentry/consentry/sidecar/enrich"
	"github.com/consentry/consentry/sidecar/envoy"
	"github.com/consentry/consentry/sidecar/pipeline"
	"github.com/consentry/consentry/sidecar/proxy"
	"github.com/consentry/consentry/sidecar/routes"
	"github.com/consentry/consentry/sidecar/transform"
	"github.com/consentry/consentry/vaultkeys"
)

// Component is a long-running part of the sidecar (a listener, a poller, a log writer).
type Component interface {
	// Name is used in logs and in readiness output.
	Name() string
	// Run blocks until ctx is done or the component fails.
	Run(ctx context.Context) error
}

// Closer is implemented by components that must flush or release resources after Run returns.
type Closer interface{ Close() error }

// App is an assembled sidecar.
type App struct {
	Config   *config.Config
	Log      *slog.Logger
	Registry *prometheus.Registry
	Engine   *engine.Engine
	Admin    *admin.Server

	// Assembled capabilities (nil when not configured).
	Bundles   *bundle.Manager
	Keys      *vaultkeys.Manager
	Decisions *auditlog.Log
	State     *consent.Store
	Pipeline  *pipeline.Pipeline
	Envoy     *envoy.Server
	Proxy     *proxy.Server
	Transform *transform.Transformer

	routes    routes.Holder
	routesCfg routes.Config
	hasRoutes bool
	enrich    enrich.Provider

	components []Component
	closers    []Closer

	// check: assemble to validate only (run --check): the decision log and the state store
	// are checked, not opened - nothing is written, no lock is taken, so a config can be
	// checked next to the sidecar that runs it.
	check     bool
	checkSink audit.Sink
	// hasVault: the configuration has a vault section (run --check validates it without
	// logging in, so Keys stays nil there).
	hasVault bool
}

// sink is the pipeline's decision log: the log, or run --check's stand-in.
func (a *App) sink() audit.Sink {
	if a.checkSink != nil {
		return a.checkSink
	}
	return a.Decisions
}

// Option adjusts New.
type Option func(*App)

// CheckOnly makes New validate without opening the decision log or the state store, and
// without logging in to Vault (`consentry run --check`): the App can be inspected and closed,
// not run.
func CheckOnly() Option { return func(a *App) { a.check = true } }

// New assembles the sidecar described by cfg. Nothing listens until Run.
func New(ctx context.Context, cfg *config.Config, log *slog.Logger, opts ...Option) (*App, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a := &App{Config: cfg, Log: log, Registry: reg}
	for _, o := range opts {
		o(a)
	}
	log.Info("garbage collector", "policy", cfg.Engine.ApplyGC())
	a.Engine = engine.New(cfg.Engine, log)
	log.Info("policy evaluation", "evaluators", a.Engine.EvaluatorStats().Bound, "timeout", cfg.Engine.WithDefaults().Timeout)
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "consentry_engine_evaluations_running", Help: "Policy evaluations running now (at most engine.evaluators)."},
			func() float64 { return float64(a.Engine.EvaluatorStats().Busy) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "consentry_engine_evaluations_waiting", Help: "Requests waiting for a free evaluator now; persistently above zero means the sidecar needs more cores."},
			func() float64 { return float64(a.Engine.EvaluatorStats().Waiting) }),
	)
	a.Admin = admin.New(cfg.Admin, reg)
	if err := a.assemble(ctx); err != nil {
		a.close()
		return nil, err
	}
	return a, nil
}

// Add registers a component to run (used by assemble and by tests).
func (a *App) Add(c Component) { a.components = append(a.components, c) }

// AddCloser registers a resource to release on shutdown (reverse order).
func (a *App) AddCloser(c Closer) { a.closers = append(a.closers, c) }

// Run runs every component and the admin server until ctx is done or one fails; then it stops
// them all and releases resources. When ctx ends (the first SIGTERM/SIGINT) shutdown goes:
//  1. /ready answers 503 "shutting down" and the gRPC health service NOT_SERVING, while every
//     listener keeps serving for admin.shutdown_delay (load balancers move traffic away);
//  2. the components stop: each listener stops accepting and drains its in-flight requests
//     (proxy.shutdown_timeout, envoy.shutdown_grace), then waits for the handlers still
//     running so their decisions are recorded;
//  3. the decision log (and every other resource) is closed.
//
// A component failing ends the shutdown delay early.
func (a *App) Run(ctx context.Context) error {
	defer func() {
		a.close()
		a.Log.Info("consentry stopped")
	}()
	// The components run on their own context: the signal must not stop them before the
	// shutdown delay has passed.
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	errc := make(chan error, len(a.components)+2) // one per goroutine run starts: admin, grpc-health, components
	var wg sync.WaitGroup
	run := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(cctx); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, http.ErrServerClosed) {
				err = fmt.Errorf("%s: %w", name, err)
				// Logged now, not when Run returns: stopping the others can take a while (or,
				// if one of them hangs, forever), and the cause must be visible meanwhile.
				a.Log.Error("component failed; stopping consentry", "component", name, "error", err)
				errc <- err
				return
			}
			if cctx.Err() == nil {
				a.Log.Warn("component ended; stopping consentry", "component", name)
			}
			errc <- nil
		}()
	}
	run("admin", a.Admin.Serve)
	if a.Envoy != nil {
		run("grpc-health", a.followReadiness)
	}
	for _, c := range a.components {
		run(c.Name(), c.Run)
	}
	a.Log.Info("consentry running", "admin", a.Config.Admin.Listen)
	var first error
	select {
	case <-ctx.Done():
		first = a.drainWindow(ctx, errc)
	case first = <-errc:
	}
	a.Log.Info("stopping: listeners drain their in-flight requests")
	cancel()
	wg.Wait()
	a.Log.Info("components stopped; closing the decision log")
	return first
}

// drainWindow is the first step of a requested shutdown: the sidecar reports itself not ready
// (/ready 503, gRPC health NOT_SERVING) and keeps serving for admin.shutdown_delay, so that
// load balancers stop sending new connections before the listeners close. A component failing
// ends it early (its error is returned).
func (a *App) drainWindow(ctx context.Context, errc <-chan error) error {
	delay := a.Config.Admin.ShutdownDelay
	a.Log.Info("shutdown requested; /ready now answers 503", "cause", context.Cause(ctx).Error(), "shutdown_delay", delay)
	a.Admin.SetDraining()
	if a.Envoy != nil {
		a.Envoy.Drain()
	}
	if delay <= 0 {
		return nil
	}
	a.Log.Info("still serving until shutdown_delay has passed; a second signal exits at once", "shutdown_delay", delay)
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case err := <-errc:
		return err
	}
}

// readinessPoll is how often the gRPC health service re-reads readiness.
const readinessPoll = time.Second

// followReadiness keeps the gRPC health service of the envoy listener (overall and
// envoy.service.auth.v3.Authorization) at NOT_SERVING while /ready fails - no policy active,
// the decision log unable to write, no JWKS - so that Envoy's or Kubernetes' gRPC health
// checks take the replica out of rotation as an HTTP readiness probe would.
func (a *App) followReadiness(ctx context.Context) error {
	a.Envoy.SetServing(false)
	t := time.NewTicker(readinessPoll)
	defer t.Stop()
	serving := false
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*readinessPoll)
		failed := a.Admin.Unready(cctx)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if ok := len(failed) == 0; ok != serving {
			serving = ok
			a.Envoy.SetServing(ok)
			a.Log.Info("grpc health", "serving", ok, "failed", failed)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (a *App) close() {
	for i := len(a.closers) - 1; i >= 0; i-- {
		if err := a.closers[i].Close(); err != nil {
			a.Log.Warn("close", "error", err)
		}
	}
	a.closers = nil
}

// Close releases what New opened, for an App that is not Run (`run --check`, tests). Run
// releases everything itself when it returns.
func (a *App) Close() error {
	a.close()
	return nil
}

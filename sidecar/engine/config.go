package engine

import (
	"fmt"
	"os"
	"runtime"
	"time"
)

// Config is the `engine:` section of the sidecar configuration.
type Config struct {
	// Timeout bounds one evaluation when the request carries no earlier deadline. A decision
	// that does not finish in time is a deny (engine.timeout). Default 50ms.
	Timeout time.Duration `yaml:"timeout" json:"timeout"`
	// ActivationTimeout bounds activating a policy in the sidecar: compiling it and computing
	// its data-only tables (materialized rules such as consentry.minimization.tables). A policy
	// that does not activate in time is refused (bundle rejection activation_timeout) and the
	// active policy stays: a rule that loops for hours must not hold the bundle manager, and
	// later bundles, with it. `bundle build`, `bundle verify` and `consentry test` read no
	// configuration: give them the same bound with --activation-timeout (default 30s there too).
	// Default 30s.
	ActivationTimeout time.Duration `yaml:"activation_timeout" json:"activation_timeout"`
	// Query replaces the evaluated query (default data.consentry.decision). Not configurable
	// in YAML: tools use it, e.g. `consentry test` evaluates data.consentry.full_decision to
	// check that the library's fast path agrees with its full rules.
	Query string `yaml:"-" json:"-"`
	// ClockFromInput sets the clock built-ins (time.now_ns) to input.time.now instead of the
	// wall clock. Not configurable in YAML: `consentry replay` uses it, so that a candidate
	// policy calling time.now_ns() sees the time of the decision it replays.
	ClockFromInput bool `yaml:"-" json:"-"`
	// AllowHTTPSend lets policies call http.send. Off by default: a network call on the hot path
	// makes decisions slow and non-replayable.
	AllowHTTPSend bool `yaml:"allow_http_send" json:"allow_http_send"`
	// AllowNet lets policies use net.* built-ins (DNS lookups). Off by default, for the same reason.
	AllowNet bool `yaml:"allow_net" json:"allow_net"`
	// AllowRuntime lets policies read opa.runtime() (environment, config). Off by default: it
	// would let a policy read secrets from the environment.
	AllowRuntime bool `yaml:"allow_runtime" json:"allow_runtime"`
	// NonStrictBuiltinErrors turns built-in errors (e.g. a malformed timestamp) back into
	// undefined values instead of evaluation errors. Off by default: a built-in error denies.
	NonStrictBuiltinErrors bool `yaml:"non_strict_builtin_errors" json:"non_strict_builtin_errors"`
	// GCPercent fixes the Go garbage collector target (GOGC) the sidecar runs with; -1 turns
	// the collector off (only with GOMEMLIMIT set). Unset (0, the default), the target adapts
	// to the live heap: see gc_headroom_mib. A GOGC environment variable, when set, wins over
	// both keys; GOMEMLIMIT, when set, still caps the heap.
	GCPercent int `yaml:"gc_percent" json:"gc_percent"`
	// GCHeadroomMiB is how far the heap may grow between two collections when gc_percent is
	// unset: after each collection the target is set so that the heap grows by this much, or
	// by the live heap if that is larger (Go's default, GOGC=100). A decision allocates about
	// 40 KB against a live heap of a few MiB, so at Go's default the collector runs every few
	// dozen decisions and takes about a quarter of the CPU; 64 MiB of headroom buys 20-30%
	// more decisions per core (BENCHMARKS.md, round 4), while a sidecar with a large consent
	// view (hundreds of MiB live) collects as Go would by default instead of holding five
	// times its live heap. Default 64.
	GCHeadroomMiB int `yaml:"gc_headroom_mib" json:"gc_headroom_mib"`
	// Evaluators is how many goroutines evaluate policies; a request beyond them waits for one
	// (within its deadline: engine.timeout otherwise). They live for the process, so each keeps
	// the stack OPA's recursive evaluator grew on it instead of growing a fresh goroutine's
	// stack by copying on every request (2-2.5x the cost of a decision; BENCHMARKS.md,
	// round 5). Default 0: four per core (4 x GOMAXPROCS), or 64 per core when allow_http_send
	// or allow_net is on (a worker waiting on the network holds its slot); -1 evaluates on the
	// caller's goroutine.
	Evaluators int `yaml:"evaluators" json:"evaluators"`
}

// evaluators is the pool size newEvaluators gets: the configured one, or for the default (0)
// four per core, or 64 per core when policies may wait on the network.
func (c Config) evaluators() int {
	switch {
	case c.Evaluators != 0:
		return c.Evaluators
	case c.AllowHTTPSend || c.AllowNet:
		return 64 * runtime.GOMAXPROCS(0)
	default:
		return 4 * runtime.GOMAXPROCS(0)
	}
}

// DefaultTimeout is used when Config.Timeout is zero.
const DefaultTimeout = 50 * time.Millisecond

// DefaultActivationTimeout is used when Config.ActivationTimeout is zero.
const DefaultActivationTimeout = 30 * time.Second

// DefaultGCHeadroomMiB is used when Config.GCHeadroomMiB is zero.
const DefaultGCHeadroomMiB = 64

// WithDefaults returns c with zero values replaced by defaults.
func (c Config) WithDefaults() Config {
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.GCHeadroomMiB == 0 {
		c.GCHeadroomMiB = DefaultGCHeadroomMiB
	}
	if c.ActivationTimeout == 0 {
		c.ActivationTimeout = DefaultActivationTimeout
	}
	return c
}

// Validate reports a configuration error, naming the key.
func (c Config) Validate() error {
	if c.Timeout < 0 {
		return fmt.Errorf("engine.timeout: must not be negative, got %s", c.Timeout)
	}
	if c.ActivationTimeout < 0 {
		return fmt.Errorf("engine.activation_timeout: must not be negative, got %s", c.ActivationTimeout)
	}
	if c.GCPercent < -1 {
		return fmt.Errorf("engine.gc_percent: must be -1 (off) or positive, got %d", c.GCPercent)
	}
	if c.GCPercent == -1 && os.Getenv("GOMEMLIMIT") == "" {
		return fmt.Errorf("engine.gc_percent: -1 turns the collector off and needs a GOMEMLIMIT to bound the heap")
	}
	if c.Evaluators < -1 {
		return fmt.Errorf("engine.evaluators: must be -1 (on the caller's goroutine), 0 (four per core) or positive, got %d", c.Evaluators)
	}
	if c.GCHeadroomMiB < 0 {
		return fmt.Errorf("engine.gc_headroom_mib: must not be negative, got %d", c.GCHeadroomMiB)
	}
	return nil
}

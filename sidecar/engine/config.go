package engine

import (
	"fmt"
	"os"
	"runtime/debug"
	"time"
)

// Config is the `engine:` section of the sidecar configuration.
type Config struct {
	// Timeout bounds one evaluation when the request carries no earlier deadline. A decision
	// that does not finish in time is a deny (engine.timeout). Default 50ms.
	Timeout time.Duration `yaml:"timeout" json:"timeout"`
	// Query replaces the evaluated query (default data.consentry.decision). Not configurable
	// in YAML: tools use it, e.g. `consentry test` evaluates data.consentry.full_decision to
	// check that the library's fast path agrees with its full rules.
	Query string `yaml:"-" json:"-"`
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
	// GCPercent is the Go garbage collector target (GOGC) the sidecar runs with. A decision
	// allocates about 40 KB against a live heap of a few MiB (policy, tables, caches), so at
	// Go's default of 100 the collector runs every few dozen decisions and takes about a
	// quarter of the CPU; 400 lets the heap grow to five times the live heap between
	// collections and buys 20-30% more decisions per core (BENCHMARKS.md, round 4). Default
	// 400; -1 turns the collector off (only with GOMEMLIMIT set). A GOGC environment variable,
	// when set, wins over this key; GOMEMLIMIT, when set, still caps the heap.
	GCPercent int `yaml:"gc_percent" json:"gc_percent"`
}

// DefaultTimeout is used when Config.Timeout is zero.
const DefaultTimeout = 50 * time.Millisecond

// DefaultGCPercent is used when Config.GCPercent is zero.
const DefaultGCPercent = 400

// WithDefaults returns c with zero values replaced by defaults.
func (c Config) WithDefaults() Config {
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.GCPercent == 0 {
		c.GCPercent = DefaultGCPercent
	}
	return c
}

// Validate reports a configuration error, naming the key.
func (c Config) Validate() error {
	if c.Timeout < 0 {
		return fmt.Errorf("engine.timeout: must not be negative, got %s", c.Timeout)
	}
	if c.GCPercent < -1 {
		return fmt.Errorf("engine.gc_percent: must be -1 (off) or positive, got %d", c.GCPercent)
	}
	if c.GCPercent == -1 && os.Getenv("GOMEMLIMIT") == "" {
		return fmt.Errorf("engine.gc_percent: -1 turns the collector off and needs a GOMEMLIMIT to bound the heap")
	}
	return nil
}

// ApplyGC sets the process's garbage collector target to c.GCPercent, unless the operator set
// GOGC in the environment (which the Go runtime has already applied). It returns the target
// in force.
func (c Config) ApplyGC() int {
	if v, ok := os.LookupEnv("GOGC"); ok && v != "" {
		old := debug.SetGCPercent(100)
		debug.SetGCPercent(old)
		return old
	}
	p := c.WithDefaults().GCPercent
	debug.SetGCPercent(p)
	return p
}

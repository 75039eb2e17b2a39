package engine

import (
	"fmt"
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
}

// DefaultTimeout is used when Config.Timeout is zero.
const DefaultTimeout = 50 * time.Millisecond

// WithDefaults returns c with zero values replaced by defaults.
func (c Config) WithDefaults() Config {
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	return c
}

// Validate reports a configuration error, naming the key.
func (c Config) Validate() error {
	if c.Timeout < 0 {
		return fmt.Errorf("engine.timeout: must not be negative, got %s", c.Timeout)
	}
	return nil
}

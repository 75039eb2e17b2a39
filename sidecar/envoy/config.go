package envoy

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/consentry/consentry/sidecar/tlsserver"
)

// Config is the `envoy:` section: the gRPC listener Envoy's ext_authz (and ext_proc) filters
// call.
type Config struct {
	// Listen is the gRPC address, e.g. "127.0.0.1:9191" (default) or "0.0.0.0:9191".
	Listen string `yaml:"listen" json:"listen"`
	// TLS enables TLS, and mTLS with ClientCAFile. Plaintext when CertFile is empty (only for a
	// loopback listener next to Envoy in the same pod).
	TLS TLSConfig `yaml:"tls" json:"tls"`
	// Reflection registers the gRPC reflection service (grpcurl). Off by default.
	Reflection bool `yaml:"reflection" json:"reflection"`
	// ResponsePhase says responses pass through a response-side enforcer (consentry's ext_proc
	// on the same Envoy): ext_authz then leaves list filtering (filter_records) and field
	// minimization (minimize_fields) to it instead of denying requests that need them.
	ResponsePhase bool `yaml:"response_phase" json:"response_phase"`
	// MaxRecvMsgBytes bounds one CheckRequest (headers plus the buffered body). Default 8 MiB.
	MaxRecvMsgBytes int `yaml:"max_recv_msg_bytes" json:"max_recv_msg_bytes"`
	// MaxConcurrentStreams per connection (0: gRPC default).
	MaxConcurrentStreams uint32 `yaml:"max_concurrent_streams" json:"max_concurrent_streams"`
	// ShutdownGrace is how long a stop waits for in-flight checks. Default 5s.
	ShutdownGrace time.Duration `yaml:"shutdown_grace" json:"shutdown_grace"`
}

// TLSConfig configures the listener's TLS (shared with the proxy door: tlsserver.Config).
type TLSConfig = tlsserver.Config

// WithDefaults fills defaults.
func (c Config) WithDefaults() Config {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:9191"
	}
	if c.MaxRecvMsgBytes == 0 {
		c.MaxRecvMsgBytes = 8 << 20
	}
	if c.ShutdownGrace == 0 {
		c.ShutdownGrace = 5 * time.Second
	}
	c.TLS = c.TLS.WithDefaults()
	return c
}

// Validate reports the first invalid key.
func (c Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("envoy.listen: %q is not host:port: %w", c.Listen, err)
	}
	if err := c.TLS.Validate("envoy.tls"); err != nil {
		return err
	}
	if c.MaxRecvMsgBytes < 0 {
		return errors.New("envoy.max_recv_msg_bytes: must not be negative")
	}
	return nil
}

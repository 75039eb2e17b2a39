package envoy

import (
	"errors"
	"fmt"
	"net"
	"time"
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

// TLSConfig configures the listener's TLS.
type TLSConfig struct {
	// CertFile and KeyFile are the server certificate chain and key (PEM).
	CertFile string `yaml:"cert_file" json:"cert_file"`
	KeyFile  string `yaml:"key_file" json:"key_file"`
	// ClientCAFile (PEM) turns on mTLS: every client must present a certificate signed by one
	// of these CAs (Envoy's upstream TLS context for the ext_authz cluster).
	ClientCAFile string `yaml:"client_ca_file" json:"client_ca_file"`
	// MinVersion is "1.2" (default) or "1.3".
	MinVersion string `yaml:"min_version" json:"min_version"`
	// ReloadInterval is how often, at most, the certificate files are checked for a rotated
	// certificate (on a handshake). Default 30s.
	ReloadInterval time.Duration `yaml:"reload_interval" json:"reload_interval"`
}

// Enabled reports whether TLS is configured.
func (t TLSConfig) Enabled() bool { return t.CertFile != "" }

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
	if c.TLS.MinVersion == "" {
		c.TLS.MinVersion = "1.2"
	}
	if c.TLS.ReloadInterval == 0 {
		c.TLS.ReloadInterval = 30 * time.Second
	}
	return c
}

// Validate reports the first invalid key.
func (c Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("envoy.listen: %q is not host:port: %w", c.Listen, err)
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		return errors.New("envoy.tls: cert_file and key_file go together")
	}
	if c.TLS.ClientCAFile != "" && !c.TLS.Enabled() {
		return errors.New("envoy.tls.client_ca_file: mTLS needs cert_file and key_file")
	}
	if c.TLS.MinVersion != "1.2" && c.TLS.MinVersion != "1.3" {
		return fmt.Errorf("envoy.tls.min_version: %q is not 1.2 or 1.3", c.TLS.MinVersion)
	}
	if c.MaxRecvMsgBytes < 0 {
		return errors.New("envoy.max_recv_msg_bytes: must not be negative")
	}
	return nil
}

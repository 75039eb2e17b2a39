package envoy

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/consentry/consentry/sidecar/tlsserver"
)

// Config is the `envoy:` section: the gRPC listener Envoy's ext_authz (and ext_proc) filters
// call.
type Config struct {
	// Listen is the gRPC address, e.g. "127.0.0.1:9191" (default) or "0.0.0.0:9191". Its
	// client is trusted to be Envoy: it supplies the caller's connection facts (SPIFFE id) and,
	// to ext_proc, the CRM's responses, which consentry decrypts. A listener that is not
	// loopback therefore needs mutual TLS (tls with client_ca_file: only Envoy's certificate
	// connects), or insecure_unauthenticated_clients.
	Listen string `yaml:"listen" json:"listen"`
	// TLS enables TLS, and mTLS with ClientCAFile. Plaintext when CertFile is empty (only for a
	// loopback listener next to Envoy in the same pod).
	TLS TLSConfig `yaml:"tls" json:"tls"`
	// InsecureUnauthenticatedClients lets a listener that is not loopback run without mutual
	// TLS: whoever reaches the port can claim any mTLS identity and have ext_proc decrypt
	// records it supplies as the CRM's response. Only where something else (a mesh sidecar's
	// mTLS with an authorization policy admitting Envoy alone) keeps every other client out.
	// Off by default.
	InsecureUnauthenticatedClients bool `yaml:"insecure_unauthenticated_clients" json:"insecure_unauthenticated_clients"`
	// Reflection registers the gRPC reflection service (grpcurl). Off by default.
	Reflection bool `yaml:"reflection" json:"reflection"`
	// ResponsePhase says responses pass through a response-side enforcer (consentry's ext_proc
	// on the same Envoy): ext_authz then leaves list filtering (filter_records) and field
	// minimization (minimize_fields) to it instead of denying requests that need them.
	ResponsePhase bool `yaml:"response_phase" json:"response_phase"`
	// MaxRecvMsgBytes bounds one gRPC message: a CheckRequest (headers plus the buffered
	// body) or an ext_proc body message. Default 8 MiB + 64 KiB: a body of Envoy's 8 MiB
	// buffer limit (per_connection_buffer_limit_bytes in deploy/envoy) plus its framing. Keep
	// it above the buffer limit.
	MaxRecvMsgBytes int `yaml:"max_recv_msg_bytes" json:"max_recv_msg_bytes"`
	// MaxConcurrentStreams per connection (0: gRPC default).
	MaxConcurrentStreams uint32 `yaml:"max_concurrent_streams" json:"max_concurrent_streams"`
	// ShutdownGrace is how long a stop waits for in-flight checks and ext_proc streams (after
	// admin.shutdown_delay) before cancelling them. Cancelled calls are then waited for, at
	// most pipeline.timeout + pipeline.audit_timeout + 2 x vault.timeout + 1s, so that what
	// they record is written before the decision log closes. Default 5s.
	ShutdownGrace time.Duration `yaml:"shutdown_grace" json:"shutdown_grace"`
}

// DefaultMaxRecvMsgBytes is envoy.max_recv_msg_bytes' default: an 8 MiB body (Envoy's buffer
// limit in deploy/envoy) and 64 KiB for the message around it (field tags, headers,
// attributes), so a body at the limit is not refused as ResourceExhausted.
const DefaultMaxRecvMsgBytes = 8<<20 + 64<<10

// TLSConfig configures the listener's TLS (shared with the proxy door: tlsserver.Config).
type TLSConfig = tlsserver.Config

// WithDefaults fills defaults.
func (c Config) WithDefaults() Config {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:9191"
	}
	if c.MaxRecvMsgBytes == 0 {
		c.MaxRecvMsgBytes = DefaultMaxRecvMsgBytes
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
	if err := c.validateClients(); err != nil {
		return err
	}
	if c.MaxRecvMsgBytes < 0 {
		return errors.New("envoy.max_recv_msg_bytes: must not be negative")
	}
	return nil
}

// validateClients refuses a listener other clients than Envoy could reach: the gRPC doors take
// the caller's identity from attributes their client supplies (connection.mtls,
// connection.uri_san_peer_certificate, source.principal), and ext_proc decrypts whatever
// "CRM response" its client sends. Loopback (Envoy in the same pod), mutual TLS, or the
// explicit opt-out.
func (c Config) validateClients() error {
	host, _, _ := net.SplitHostPort(c.Listen)
	if isLoopback(host) || c.InsecureUnauthenticatedClients || (c.TLS.Enabled() && c.TLS.ClientCAFile != "") {
		return nil
	}
	return fmt.Errorf("envoy.listen: %q is not loopback: its clients are trusted to be Envoy (identity attributes, response bodies to decrypt), so it needs mutual TLS (envoy.tls.cert_file, key_file and client_ca_file), or envoy.insecure_unauthenticated_clients: true where the network admits Envoy alone (docs/front-doors.md)", c.Listen)
}

// isLoopback reports whether a listen host binds loopback only ("" and 0.0.0.0 bind every
// interface; a name other than localhost may resolve to anything).
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

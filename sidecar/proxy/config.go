package proxy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/consentry/consentry/sidecar/tlsserver"
)

// Config is the `proxy:` section: consentry as an HTTP reverse proxy in front of the CRM.
type Config struct {
	// Listen is the address the proxy serves on, e.g. ":8080" or "127.0.0.1:8080". Required.
	Listen string `yaml:"listen" json:"listen"`
	// Upstream is the CRM's base URL, http:// or https:// with host and optional port, no
	// path. Required. Requests are forwarded with their normalized path.
	Upstream string `yaml:"upstream" json:"upstream"`
	// UpstreamTimeout bounds one exchange with the CRM (connect, send, full response). When it
	// passes the caller gets 504 upstream.timeout. Default 10s.
	UpstreamTimeout time.Duration `yaml:"upstream_timeout" json:"upstream_timeout"`
	// ReadTimeout bounds reading a caller's whole request (slow-loris protection). Default 30s.
	ReadTimeout time.Duration `yaml:"read_timeout" json:"read_timeout"`
	// WriteTimeout bounds writing the response to the caller. Default 30s.
	WriteTimeout time.Duration `yaml:"write_timeout" json:"write_timeout"`
	// IdleTimeout closes idle keep-alive connections. Default 120s.
	IdleTimeout time.Duration `yaml:"idle_timeout" json:"idle_timeout"`
	// MaxBodyBytes bounds a request body; larger requests get 413 request.body_too_large and
	// never reach the CRM. Default 1 MiB (the demo CRM's own limit).
	MaxBodyBytes int `yaml:"max_body_bytes" json:"max_body_bytes"`
	// MaxHeaderBytes bounds the request line and headers the proxy reads from a caller, and the
	// status line and headers it reads from the CRM; a larger request gets 431 (a token with
	// many group claims plus a session cookie easily passes 4 KiB). Default 65536, as
	// normalize.max_header_bytes.
	MaxHeaderBytes int `yaml:"max_header_bytes" json:"max_header_bytes"`
	// MaxResponseBytes bounds a CRM response; a larger one is not passed (it could not be
	// enforced) and the caller gets 502 upstream.response_too_large. Default 8 MiB.
	MaxResponseBytes int `yaml:"max_response_bytes" json:"max_response_bytes"`
	// MaxUpstreamConns bounds concurrent connections to the CRM. Default 512.
	MaxUpstreamConns int `yaml:"max_upstream_conns" json:"max_upstream_conns"`
	// TrustedProxies are the IPs or CIDRs of load balancers in front of consentry whose
	// X-Forwarded-For entries are believed. The client address is the right-most entry not
	// in this list; everything left of it (which the client could have written) is dropped.
	// Empty (default): X-Forwarded-For from callers is ignored and replaced by the peer.
	TrustedProxies []string `yaml:"trusted_proxies" json:"trusted_proxies"`
	// PreserveHost forwards the caller's Host header instead of the upstream's host.
	PreserveHost bool `yaml:"preserve_host" json:"preserve_host"`
	// ShutdownTimeout bounds the graceful drain of in-flight requests on shutdown (after
	// admin.shutdown_delay); connections still open then are closed. Requests still waiting for
	// the CRM are then waited for, at most upstream_timeout + pipeline.timeout +
	// pipeline.audit_timeout + 2 x vault.timeout + 1s, so that what reached the CRM is recorded
	// before the decision log closes. Default 10s.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout" json:"shutdown_timeout"`
	// TLS serves HTTPS; with client_ca_file, mTLS: the verified client certificate's SPIFFE id
	// is the request's source principal, which identity.services maps to a service subject
	// (callers without a bearer token). Plaintext when cert_file is empty.
	TLS tlsserver.Config `yaml:"tls" json:"tls"`
}

// WithDefaults fills defaults.
func (c Config) WithDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.UpstreamTimeout, 10*time.Second)
	def(&c.ReadTimeout, 30*time.Second)
	def(&c.WriteTimeout, 30*time.Second)
	def(&c.IdleTimeout, 120*time.Second)
	def(&c.ShutdownTimeout, 10*time.Second)
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 1 << 20
	}
	if c.MaxResponseBytes == 0 {
		c.MaxResponseBytes = 8 << 20
	}
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = 64 << 10
	}
	if c.MaxUpstreamConns == 0 {
		c.MaxUpstreamConns = 512
	}
	c.TLS = c.TLS.WithDefaults()
	return c
}

// Validate reports the first invalid key, prefixed "proxy.<key>: ".
func (c Config) Validate() error {
	if c.Listen == "" {
		return errors.New("proxy.listen: required")
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("proxy.listen: %w", err)
	}
	if _, err := c.upstream(); err != nil {
		return err
	}
	for k, d := range map[string]time.Duration{"upstream_timeout": c.UpstreamTimeout, "read_timeout": c.ReadTimeout,
		"write_timeout": c.WriteTimeout, "idle_timeout": c.IdleTimeout, "shutdown_timeout": c.ShutdownTimeout} {
		if d < 0 {
			return fmt.Errorf("proxy.%s: must not be negative", k)
		}
	}
	if c.MaxBodyBytes < 0 {
		return errors.New("proxy.max_body_bytes: must not be negative")
	}
	if c.MaxHeaderBytes < 0 {
		return errors.New("proxy.max_header_bytes: must not be negative")
	}
	if c.MaxResponseBytes < 0 {
		return errors.New("proxy.max_response_bytes: must not be negative")
	}
	if c.MaxUpstreamConns < 0 {
		return errors.New("proxy.max_upstream_conns: must not be negative")
	}
	if _, err := parseTrusted(c.TrustedProxies); err != nil {
		return err
	}
	if err := c.TLS.Validate("proxy.tls"); err != nil {
		return err
	}
	return nil
}

// upstream parses Upstream.
func (c Config) upstream() (*url.URL, error) {
	if c.Upstream == "" {
		return nil, errors.New("proxy.upstream: required")
	}
	u, err := url.Parse(c.Upstream)
	if err != nil {
		return nil, fmt.Errorf("proxy.upstream: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("proxy.upstream: scheme %q is not http or https", u.Scheme)
	}
	if u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || strings.Trim(u.Path, "/") != "" {
		return nil, fmt.Errorf("proxy.upstream: %q must be scheme://host[:port] only", c.Upstream)
	}
	return u, nil
}

// parseTrusted parses TrustedProxies into prefixes.
func parseTrusted(list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for i, s := range list {
		s = strings.TrimSpace(s)
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("proxy.trusted_proxies[%d]: %q is not an IP or CIDR", i, s)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}

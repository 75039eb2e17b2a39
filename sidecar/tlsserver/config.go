// Package tlsserver is the TLS (and mTLS) configuration every consentry listener shares: the
// gRPC door Envoy calls and the HTTP proxy door. Certificates are re-read when their files
// change (cert-manager and SPIRE rotate them in place); a client CA file turns on mTLS, and
// the verified client certificate's SPIFFE id becomes the request's source principal.
package tlsserver

import (
	"errors"
	"fmt"
	"time"
)

// Config is a listener's `tls:` block.
type Config struct {
	// CertFile and KeyFile are the server certificate chain and key (PEM). Plaintext when
	// CertFile is empty.
	CertFile string `yaml:"cert_file" json:"cert_file"`
	KeyFile  string `yaml:"key_file" json:"key_file"`
	// ClientCAFile (PEM) turns on mTLS: every client must present a certificate signed by one
	// of these CAs.
	ClientCAFile string `yaml:"client_ca_file" json:"client_ca_file"`
	// MinVersion is "1.2" (default) or "1.3".
	MinVersion string `yaml:"min_version" json:"min_version"`
	// ReloadInterval is how often, at most, the certificate files and the client CA file are
	// re-read (on a handshake). They are loaded again when their content changed, whatever
	// their modification time (a file moved in by mv, cp -p or rsync -t keeps an older one);
	// a file that fails to load keeps the previous one until a later check loads it.
	// Default 30s.
	ReloadInterval time.Duration `yaml:"reload_interval" json:"reload_interval"`
}

// Enabled reports whether TLS is configured.
func (c Config) Enabled() bool { return c.CertFile != "" }

// WithDefaults fills defaults.
func (c Config) WithDefaults() Config {
	if c.MinVersion == "" {
		c.MinVersion = "1.2"
	}
	if c.ReloadInterval == 0 {
		c.ReloadInterval = 30 * time.Second
	}
	return c
}

// Validate reports the first invalid key; prefix names the block ("envoy.tls").
func (c Config) Validate(prefix string) error {
	if (c.CertFile == "") != (c.KeyFile == "") {
		return fmt.Errorf("%s: cert_file and key_file go together", prefix)
	}
	if c.ClientCAFile != "" && !c.Enabled() {
		return fmt.Errorf("%s.client_ca_file: mTLS needs cert_file and key_file", prefix)
	}
	if c.MinVersion != "" && c.MinVersion != "1.2" && c.MinVersion != "1.3" {
		return fmt.Errorf("%s.min_version: %q is not 1.2 or 1.3", prefix, c.MinVersion)
	}
	if c.ReloadInterval < 0 {
		return errors.New(prefix + ".reload_interval: must not be negative")
	}
	return nil
}

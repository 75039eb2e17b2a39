package tlsserver

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"sync"
	"time"
)

// New builds a listener's tls.Config: TLS 1.2+ (or 1.3), the certificate re-read when its
// files change, and with a client CA file, client certificates required and verified (mTLS).
// prefix names the config block in errors; protos is the ALPN list (h2 for gRPC, http/1.1
// for the proxy).
func New(c Config, prefix string, protos ...string) (*tls.Config, error) {
	c = c.WithDefaults()
	reloader, err := newCertReloader(c.CertFile, c.KeyFile, c.ReloadInterval, prefix)
	if err != nil {
		return nil, err
	}
	tc := &tls.Config{GetCertificate: reloader.get, MinVersion: tls.VersionTLS12, NextProtos: protos}
	if c.MinVersion == "1.3" {
		tc.MinVersion = tls.VersionTLS13
	}
	if c.ClientCAFile != "" {
		cas := &caReloader{file: c.ClientCAFile, interval: c.ReloadInterval, prefix: prefix}
		if err := cas.load(); err != nil {
			return nil, err
		}
		tc.ClientCAs = cas.pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
		// Each handshake verifies against the CA bundle as it is now: SPIRE or cert-manager
		// rotate trust bundles in place, and clients with certificates from a new CA must
		// not be refused until a restart.
		base := tc.Clone()
		tc.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
			pool := cas.get()
			if pool == base.ClientCAs {
				return nil, nil // unchanged: the listener's own config
			}
			cfg := base.Clone()
			cfg.ClientCAs = pool
			return cfg, nil
		}
	}
	return tc, nil
}

// caReloader serves the client CA pool and re-reads the file when it changes, checking at
// most once per interval. A failed reload (a file being replaced, no PEM in it) keeps the
// previous pool.
type caReloader struct {
	file, prefix string
	interval     time.Duration

	mu      sync.Mutex
	pool    *x509.CertPool
	modTime time.Time
	checked time.Time
}

func (r *caReloader) load() error {
	pem, err := os.ReadFile(r.file)
	if err != nil {
		return fmt.Errorf("%s.client_ca_file: %w", r.prefix, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("%s.client_ca_file: %s holds no PEM certificate", r.prefix, r.file)
	}
	r.pool, r.modTime = pool, latestModTime(r.file)
	return nil
}

func (r *caReloader) get() *x509.CertPool {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if now.Sub(r.checked) >= r.interval {
		r.checked = now
		if m := latestModTime(r.file); m.After(r.modTime) {
			_ = r.load() // on failure r.pool stays the previous one
		}
	}
	return r.pool
}

// certReloader serves the listener's certificate and re-reads the files when they change,
// checking at most once per interval. A failed reload keeps the previous certificate:
// rotation must never take the door down.
type certReloader struct {
	certFile, keyFile, prefix string
	interval                  time.Duration

	mu      sync.Mutex
	cert    *tls.Certificate
	modTime time.Time
	checked time.Time
}

func newCertReloader(certFile, keyFile string, interval time.Duration, prefix string) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, interval: interval, prefix: prefix}
	if err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *certReloader) load() error {
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("%s.cert_file/key_file: %w", r.prefix, err)
	}
	r.cert = &cert
	r.modTime = latestModTime(r.certFile, r.keyFile)
	return nil
}

func latestModTime(paths ...string) time.Time {
	var t time.Time
	for _, p := range paths {
		if st, err := os.Stat(p); err == nil && st.ModTime().After(t) {
			t = st.ModTime()
		}
	}
	return t
}

// get is tls.Config.GetCertificate.
func (r *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if now.Sub(r.checked) >= r.interval {
		r.checked = now
		if m := latestModTime(r.certFile, r.keyFile); m.After(r.modTime) {
			old := r.cert
			if err := r.load(); err != nil {
				r.cert = old
			}
		}
	}
	return r.cert, nil
}

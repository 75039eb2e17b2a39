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
		pem, err := os.ReadFile(c.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("%s.client_ca_file: %w", prefix, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s.client_ca_file: %s holds no PEM certificate", prefix, c.ClientCAFile)
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tc, nil
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
